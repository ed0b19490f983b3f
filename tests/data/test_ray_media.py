"""Media shards decoded by Ray Data actors (local mode) are the shards this process's workers write."""

import json

import numpy as np
import pytest
import torch

from mmrec.build import build_datamodule, encoder_configs
from mmrec.data.ray_media import RayMedia
from mmrec.data.schema import load_native
from mmrec.data.shards import sharded
from tests.conftest import compose_config
from tests.data.test_shards import FEATURIZERS, own_data  # noqa: F401 (a fixture)


@pytest.mark.integration
@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_ray_actors_write_the_shards_the_local_workers_write(own_data, tmp_path, local_ray, codec):  # noqa: F811
    root, broken = own_data
    dataset = load_native(root)
    featurizer = FEATURIZERS["image"](dataset)
    local = sharded(featurizer, dataset.num_items, tmp_path / "local", "x", codec=codec)
    engine = RayMedia(actors=2, batch_size=7)  # 60 items in 9 blocks, two decoders
    remote = sharded(featurizer, dataset.num_items, tmp_path / "ray", "x", codec=codec, engine=engine)
    for name in ("value.npy", "frames.bin", "offsets.npy", "mask.npy", "present.npy", "meta.json"):
        if (local.folder / name).exists():
            assert (remote.folder / name).read_bytes() == (local.folder / name).read_bytes(), name
    assert json.loads((remote.folder / "problems.json").read_text()) == local.problems
    assert any(broken in p for item_problems in local.problems.values() for p in item_problems)
    for i in (0, 17, 59):
        assert torch.equal(remote(i, []).value, local(i, []).value)


def test_the_ray_option_decodes_media_on_the_catalogue_engines_cluster(tmp_path, data_dir):
    cfg = compose_config(
        "train",
        [
            f"paths.data_dir={data_dir}",
            "catalogue=ray",
            "catalogue.engine.address=auto",
            "catalogue.media_engine.batch_size=16",
        ],
        tmp_path,
    )
    dm = build_datamodule(cfg, encoder_configs(cfg))
    assert isinstance(dm.media_engine, RayMedia)
    assert (dm.media_engine.address, dm.media_engine.actors, dm.media_engine.batch_size) == ("auto", None, 16)
    assert build_datamodule(compose_config("train", [], tmp_path), {}).media_engine is None  # DataLoader workers
    with pytest.raises(ValueError, match=r"catalogue.media_engine: expected batch_size >= 1.*got 0"):
        RayMedia(batch_size=0)


def test_blocks_out_of_order_or_missing_are_refused(own_data, tmp_path):  # noqa: F811
    root, _ = own_data
    dataset = load_native(root)
    featurizer = FEATURIZERS["image"](dataset)

    def shuffled(featurise, num_items, modality):
        blocks = np.array_split(np.arange(num_items), 4)
        return [featurise(b) for b in reversed(blocks)]

    def short(featurise, num_items, modality):
        return [featurise(np.arange(num_items - 1))]

    with pytest.raises(RuntimeError, match=r"returned items \[45, 46, 47\]\.\.\. after 0 items"):
        sharded(featurizer, dataset.num_items, tmp_path / "a", "x", engine=shuffled)
    with pytest.raises(RuntimeError, match="returned 59 of 60 items"):
        sharded(featurizer, dataset.num_items, tmp_path / "b", "x", engine=short)
    assert not [p for p in (tmp_path / "b").iterdir() if p.is_dir()]  # nothing half-written is left
