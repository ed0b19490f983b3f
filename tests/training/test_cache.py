"""The frozen-encoder cache: keyed by the media files, crash-safe, and reporting media problems every run."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from mmrec.build import build
from mmrec.train import train
from mmrec.training.module import EmptyItemsError

pytestmark = pytest.mark.integration  # full train / export / serve runs: `pytest -m integration`


def cache_files(tmp_path, modality="image"):
    return sorted((tmp_path / "cache" / "embeddings").glob(f"*-{modality}-*.pt"))


def test_replacing_a_media_file_rebuilds_the_cache(train_config, own_data, tmp_path):
    cfg = ["+experiment=image_only", "debug=fdr", f"paths.data_dir={own_data.parent}"]
    train(train_config(*cfg))
    assert len(cache_files(tmp_path)) == 1
    items = (own_data / "items.csv").read_text().splitlines()
    first_image = next(line for line in items[1:] if ".png" in line).split(",")[4].split("|")[0]
    Image.fromarray(np.full((64, 64, 3), 17, dtype=np.uint8)).save(own_data / first_image)  # same name, new content
    train(train_config(*cfg))
    assert len(cache_files(tmp_path)) == 2


def test_damaged_cache_is_removed_and_rebuilt(train_config, own_data, tmp_path, caplog):
    cfg = ["+experiment=image_only", "debug=fdr", f"paths.data_dir={own_data.parent}"]
    train(train_config(*cfg))
    (path,) = cache_files(tmp_path)
    path.write_bytes(path.read_bytes()[:100])  # as a crash in mid-write would leave it without atomic renames
    with caplog.at_level(logging.WARNING):
        train(train_config(*cfg))
    assert "cannot be read" in caplog.text and "rebuilding" in caplog.text
    assert torch.load(path, weights_only=True)["features"].shape[0] == 60
    assert not list(path.parent.glob(".*.tmp"))


def test_media_problems_are_reported_when_the_cache_is_read(train_config, own_data, tmp_path, caplog):
    cfg = ["+experiment=image_only", "debug=fdr", f"paths.data_dir={own_data.parent}"]
    broken = sorted(own_data.glob("images/*.png"))[0]
    broken.write_bytes(b"not a png")
    train(train_config(*cfg))  # builds the cache
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train(train_config(*cfg))  # reads it
    assert f"{broken.name}: cannot decode image" in caplog.text


def test_unusable_items_stop_training_before_the_first_step(train_config, own_data, tmp_path):
    """An item whose only modality is broken: refused after caching, before any step, with the ways out."""
    import pandas as pd

    items = pd.read_csv(own_data / "items.csv", keep_default_na=False)
    row = items.index[(items["image"] != "") & (items["video"] == "")][0]
    for path in items.loc[row, "image"].split("|"):
        (own_data / path).write_bytes(b"broken")
    cfg = [
        "+experiment=image_only",
        "encoder/text=none",
        "model.empty_items=error",
        f"paths.data_dir={own_data.parent}",
    ]
    item_id, first = items.loc[row, "item_id"], items.loc[row, "image"].split("|")[0]
    named = rf"item id\(s\) \[[^]]*'{item_id}'[^]]*\]\. Media that could not be used: [^ ]*{first}"
    with pytest.raises(EmptyItemsError, match=named + r".*model.item_id=true.*model.empty_items=learned"):
        train(train_config(*cfg))
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))  # stopped before the first step
    train(train_config(*cfg[:-1], "model.empty_items=learned", "debug=fdr", f"paths.data_dir={own_data.parent}"))


def test_type_errors_are_caught_at_config_time(train_config):
    with pytest.raises(ValueError, match=r"model.dim='abc': expected an integer"):
        build(train_config("model.dim=abc"))
    with pytest.raises(ValueError, match=r"model.dropout='x': expected a number"):
        build(train_config("model.dropout=x"))


def test_building_every_cache_or_reading_it_gives_the_same_model(train_config, own_data, tmp_path):
    """Media shards (trained image encoder), the frozen-encoder cache (audio) and the split are built by
    the first run and read by the second: the same seed must give the same metrics, to the last digit."""
    cfg = ["+experiment=fusion_attn", "encoder.image.mode=full", f"paths.data_dir={own_data.parent}"]
    built = train(train_config(*cfg))
    assert list((tmp_path / "cache" / "processed" / "shards").iterdir()) and cache_files(tmp_path, "audio")
    read = train(train_config(*cfg))
    tested = {k: v for k, v in built.items() if k.startswith("test")}
    assert len(tested) > 20 and tested == {k: v for k, v in read.items() if k.startswith("test")}
