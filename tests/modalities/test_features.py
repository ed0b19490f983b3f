"""The features modality: precomputed vectors from .npy / .safetensors / .parquet, malformed files,
and the proof that a modality is one module plus YAML: it trains, exports, serves and benchmarks
with no other edit to mmrec."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from mmrec.benchmark import synthetic_inputs
from mmrec.build import encoder_configs
from mmrec.data.schema import Catalogue, DataError
from mmrec.modalities import modality_of
from mmrec.modalities.features import FeaturesFeaturizer


def catalogue(tmp_path, n: int = 4) -> Catalogue:
    return Catalogue.from_rows("t", tmp_path, [{"item_id": f"i{k}"} for k in range(n)])


def test_npy_rows_are_items_and_nan_rows_are_missing(tmp_path):
    matrix = np.arange(12, dtype=np.float64).reshape(4, 3)
    matrix[2] = np.nan
    np.save(tmp_path / "v.npy", matrix)
    f = FeaturesFeaturizer(catalogue(tmp_path), column="v", path="v.npy", dim=3)
    assert f.encoder_kwargs() == {"dim": 3}
    first = f(1, [])
    assert first.present and first.value.dtype == torch.float32 and first.value.tolist() == [3.0, 4.0, 5.0]
    assert not f(2, []).present and f(2, []).value.tolist() == [0.0, 0.0, 0.0]


def test_safetensors_and_parquet(tmp_path):
    from safetensors.numpy import save_file

    save_file(
        {"a": np.ones((4, 2), dtype=np.float16), "b": np.zeros((4, 5), dtype=np.float32)}, tmp_path / "v.safetensors"
    )
    with pytest.raises(DataError, match="holds tensors \\['a', 'b'\\]: name one with featurizer.key"):
        FeaturesFeaturizer(catalogue(tmp_path), column="v", path="v.safetensors")
    assert FeaturesFeaturizer(catalogue(tmp_path), column="v", path="v.safetensors", key="a").dim == 2
    pd.DataFrame({"item_id": ["i3", "i0"], "vec": [[1.0, 2.0], [3.0, 4.0]]}).to_parquet(tmp_path / "v.parquet")
    f = FeaturesFeaturizer(catalogue(tmp_path), column="v", path="v.parquet")
    assert f(0, []).value.tolist() == [3.0, 4.0] and f(3, []).value.tolist() == [1.0, 2.0]
    assert not f(1, []).present and not f(2, []).present  # no row: the modality is missing


def test_malformed_files_are_refused_by_name(tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(DataError, match=r"short.npy: 3 rows, but the catalogue has 4 items"):
        FeaturesFeaturizer(catalogue(tmp_path), column="v", path="short.npy")
    np.save(tmp_path / "v.npy", np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"featurizer.dim=8, but .*v.npy holds 2-d vectors"):
        FeaturesFeaturizer(catalogue(tmp_path), column="v", path="v.npy", dim=8)
    np.save(tmp_path / "ints.npy", np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(DataError, match="expected a 2-D float matrix"):
        FeaturesFeaturizer(catalogue(tmp_path), column="v", path="ints.npy")
    written = tmp_path / "written"
    np.save(tmp_path / "pickled.npy", np.array([PickleProbe(written)] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled.npy: refused, it holds Python objects"):
        FeaturesFeaturizer(catalogue(tmp_path), column="v", path="pickled.npy")
    assert not written.exists()
    with pytest.raises(FileNotFoundError, match="is not a .npy/.safetensors/.parquet file"):
        FeaturesFeaturizer(catalogue(tmp_path), column="v", path="absent.npy")


class PickleProbe:
    """Writes a file when unpickled: proof that a load ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_request_vector_and_its_checks(tmp_path):
    rows = Catalogue.from_rows("r", tmp_path, [{"item_id": "n", "v": [0.5, 0.25]}])
    assert FeaturesFeaturizer(rows, column="v", dim=2)(0, []).value.tolist() == [0.5, 0.25]
    with pytest.raises(ValueError, match="v: expected a list of 3 numbers"):
        FeaturesFeaturizer(rows, column="v", dim=3)
    absent = Catalogue.from_rows("r", tmp_path, [{"item_id": "n"}])
    assert not FeaturesFeaturizer(absent, column="v", dim=2)(0, []).present


FEATURES = [
    "+encoder/features@encoder.vec=base",
    "encoder.vec.featurizer.path=vec.npy",
    "encoder.vec.featurizer.column=vec",
]


@pytest.fixture(scope="module")
def vec_data(tmp_path_factory, tiny_dataset):
    """A private copy of the tiny dataset with an 8-d vector per item (every fifth item without one)."""
    root = tmp_path_factory.mktemp("features") / "data"
    shutil.copytree(tiny_dataset, root / "synthetic")
    n = len(pd.read_csv(tiny_dataset / "items.csv"))
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    vectors[::5] = np.nan
    np.save(root / "synthetic" / "vec.npy", vectors)
    return root


@pytest.mark.integration
def test_features_train_export_serve_and_benchmark_with_no_other_edit(vec_data, tmp_path):
    from conftest import TINY_DATA, TINY_MODEL, compose_config

    from mmrec.serving.app import create_app
    from mmrec.serving.bundle import Bundle
    from mmrec.serving.export import export_bundle
    from mmrec.serving.recommender import Recommender
    from mmrec.train import train

    overrides = [f"paths.data_dir={vec_data}", f"paths.cache_dir={tmp_path / 'cache'}", *TINY_DATA, *TINY_MODEL]
    overrides += ["+experiment=fusion_mean", "encoder/image=none", "encoder/audio=none", *FEATURES]
    cfg = compose_config("train", [*overrides, "trainer.max_epochs=1"], tmp_path / "run")
    assert sorted(encoder_configs(cfg)) == ["text", "vec"]
    metrics = train(cfg)
    assert 0.0 <= metrics["test/recall@20"] <= 1.0

    bundle = export_bundle(next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt")), tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["modalities"] == ["text", "vec"]
    encoders = json.loads((bundle / "encoders.json").read_text())
    assert encoders["vec"]["featurizer"]["path"] is None and encoders["vec"]["featurizer"]["dim"] == 8
    loaded = Bundle.load(bundle)
    assert not bool(loaded.catalogue["present"]["vec"][0]) and bool(loaded.catalogue["present"]["vec"][1])

    recommender = Recommender(loaded, media_root=tmp_path / "media")
    assert recommender.fields["vec"] == "vector" and recommender.query_modality == "text"
    with TestClient(create_app(recommender, allow_anonymous_writes=True)) as client:
        bad = client.post("/items", json={"item_id": "new", "vec": [1.0] * 3})
        assert bad.status_code == 422 and "vec: expected a list of 8 numbers" in bad.json()["detail"]
        assert client.post("/items", json={"item_id": "new", "vec": [0.1] * 8}).status_code == 201
        new = recommender.positions["new"]  # the add is in the live catalogue (the bundle stays as exported)
        assert new == 60 and bool(recommender.live.present["vec"].data[new])
        assert not bool(recommender.live.present["text"].data[new])
        similar = client.get("/items/new/similar", params={"k": 3}).json()["items"]
        assert len(similar) == 3 and "new" not in [s["item_id"] for s in similar]

    configs = encoder_configs(cfg)
    assert synthetic_inputs(configs, 4, torch.device("cpu")).inputs["vec"].shape == (4, 128)  # no dim: a default
    configs["vec"]["featurizer"]["dim"] = 8
    batch = synthetic_inputs(configs, 4, torch.device("cpu"))
    assert batch.inputs["vec"].shape == (4, 8) and batch.input_mask["vec"].shape == (4, 1)
    assert modality_of(configs["vec"]).example_encoder_kwargs(configs["vec"]["featurizer"]) == {"dim": 8}
