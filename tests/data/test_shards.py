"""Media shards: a live modality decoded once, read back exactly, rebuilt when damaged."""

import pickle
import shutil
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from mmrec.data.schema import load_native
from mmrec.data.shards import ShardedFeaturizer, sharded
from mmrec.modalities.audio import AudioFeaturizer
from mmrec.modalities.image import ImageFeaturizer
from tests.data.test_datamodule import make_dm


@pytest.fixture
def own_data(tiny_dataset, tmp_path):
    """A private copy of the tiny dataset with one broken keyframe."""
    root = tmp_path / "data" / "synthetic"
    shutil.copytree(tiny_dataset, root)
    items = pd.read_csv(root / "items.csv", keep_default_na=False)
    broken = items.loc[items["image"] != "", "image"].iloc[0].split("|")[0]
    (root / broken).write_bytes(b"not a png")
    return root, broken


FEATURIZERS = {
    "image": partial(ImageFeaturizer, model_name="mmrec-tiny-vit", num_frames=2),
    "audio": partial(AudioFeaturizer, seconds=0.25),
}


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_shards_read_back_exactly_what_decoding_gives(own_data, tmp_path, modality):
    root, broken = own_data
    dataset = load_native(root)
    featurizer = FEATURIZERS[modality](dataset)
    reader = sharded(featurizer, dataset.num_items, tmp_path / "shards", "x", modality=modality)
    assert isinstance(reader, ShardedFeaturizer)
    for i in range(dataset.num_items):
        expected_problems, problems = [], []
        expected = featurizer(i, expected_problems)
        got = reader(i, problems)
        assert got.value.dtype == expected.value.dtype == (torch.uint8 if modality == "image" else torch.int16)
        assert torch.equal(got.value, expected.value) and torch.equal(got.mask, expected.mask)
        assert got.present == expected.present and problems == expected_problems
    stored = [p for item_problems in reader.problems.values() for p in item_problems]
    assert any(broken in p for p in stored) == (modality == "image")  # kept with the shards, re-reported on reads


def test_shards_are_read_not_redecoded_and_rebuilt_when_damaged(own_data, tmp_path):
    root, _ = own_data
    dataset = load_native(root)
    featurizer = FEATURIZERS["image"](dataset)
    first = sharded(featurizer, dataset.num_items, tmp_path / "shards", "x")
    reference = first(3, [])

    class NoDecoding:
        settings, media_files, encoder_kwargs = featurizer.settings, featurizer.media_files, featurizer.encoder_kwargs

        def __call__(self, index, problems):
            raise AssertionError("decoded again")

    second = sharded(NoDecoding(), dataset.num_items, tmp_path / "shards", "x")
    assert torch.equal(second(3, []).value, reference.value)
    # a reader sent to a DataLoader worker carries no array copies; it maps the files there
    first(0, [])
    assert pickle.loads(pickle.dumps(first))._arrays is None
    (tmp_path / "shards" / "x" / "value.npy").write_bytes(b"truncated")
    rebuilt = sharded(featurizer, dataset.num_items, tmp_path / "shards", "x")
    assert torch.equal(rebuilt(3, []).value, reference.value)
    assert not [p for p in (tmp_path / "shards").iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_datamodule_batches_are_the_same_with_and_without_shards(own_data, tmp_path):
    root, _ = own_data
    featurizers = {m: FEATURIZERS[m] for m in ("image", "audio")}
    batches = {}
    for shards in (False, True):
        dm = make_dm(
            root,
            tmp_path / "processed",
            featurizers=featurizers,
            live_modalities=("audio", "image"),
            media_shards=shards,
            batch_size=16,
        )
        dm.prepare_data()
        dm.setup("fit")
        assert isinstance(dm.featurizers["image"], ShardedFeaturizer) == shards
        torch.manual_seed(0)
        batches[shards] = next(iter(dm.train_dataloader()))
    plain, read = batches[False].items, batches[True].items
    for m in ("image", "audio"):
        assert torch.equal(plain.inputs[m], read.inputs[m]) and torch.equal(plain.present[m], read.present[m])
    assert sorted(plain.problems) == sorted(read.problems)
    folders = [p for p in (tmp_path / "processed" / "shards").glob("synthetic-*") if p.is_dir()]
    assert len(folders) == 2  # one folder a modality
    pixels = np.load(next(p for p in folders if "-image-" in p.name) / "value.npy", mmap_mode="r")
    assert pixels.dtype == np.uint8


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_encoded_keyframe_shards(own_data, tmp_path, codec):
    """data.media_codec: keyframes stored as PNG read back exactly, as JPEG within its pixel error,
    both in less space than raw pixels; audio shards stay raw PCM."""
    root, broken = own_data
    dataset = load_native(root)
    featurizer = FEATURIZERS["image"](dataset)
    raw = sharded(featurizer, dataset.num_items, tmp_path / "shards", "x")
    encoded = sharded(featurizer, dataset.num_items, tmp_path / "shards", "x", codec=codec)
    assert encoded.folder.name == f"x-{codec}" and not (encoded.folder / "value.npy").exists()
    errors = []
    for i in range(dataset.num_items):
        expected, got = raw(i, []), encoded(i, problems := [])
        assert got.value.shape == expected.value.shape and got.value.dtype == torch.uint8
        assert torch.equal(got.mask, expected.mask) and got.present == expected.present
        errors.append((got.value.float() - expected.value.float()).abs().mean().item())
        assert problems == raw.problems.get(str(i), [])
    if codec == "png":
        assert max(errors) == 0
    else:
        assert 0 < np.mean(errors) < 4  # mean absolute pixel error on a 0-255 scale
    assert (encoded.folder / "frames.bin").stat().st_size < (raw.folder / "value.npy").stat().st_size
    audio = sharded(FEATURIZERS["audio"](dataset), dataset.num_items, tmp_path / "shards", "a", codec=codec)
    assert (audio.folder / "value.npy").exists()
    with pytest.raises(ValueError, match="unknown data.media_codec 'gif'"):
        sharded(featurizer, dataset.num_items, tmp_path / "shards", "x", codec="gif")
