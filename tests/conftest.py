"""Shared fixtures: a tiny generated dataset and composed Hydra configs for fast runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from mmrec.build import make
from mmrec.data.synthetic import generate

CONF = str(Path(__file__).resolve().parent.parent / "conf")
EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))
TINY_DATA = [
    "data.prepare.items=60",
    "data.prepare.users=16",
    "data.prepare.interactions_per_user=12",
    "data.prepare.seed=1",
]
TINY_MODEL = [
    "encoder/text=tiny",
    "model.dim=32",
    "data.batch_size=32",
    "data.eval_batch_size=32",
    "data.history_length=5",
    "logger=none",
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 60-item synthetic dataset (with videos and missing modalities), generated once."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return generate(
        root, items=60, users=16, interactions_per_user=12, seed=1, video_fraction=0.2, missing_fraction=0.1
    )


@pytest.fixture(scope="session")
def data_dir(tiny_dataset: Path) -> Path:
    """A paths.data_dir whose 'synthetic' folder is the tiny dataset."""
    return tiny_dataset.parent


@pytest.fixture
def own_data(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset, for tests that change its files."""
    root = tmp_path / "data" / "synthetic"
    shutil.copytree(tiny_dataset, root)
    return root


@pytest.fixture(scope="module")
def local_ray():
    """A two-CPU local Ray cluster for one test module (seconds to start: integration tests only)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """A composed config as ``python -m mmrec.<name>`` would see it, running in ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = hydra.compose(config_name=name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


@pytest.fixture
def train_config(data_dir: Path, tmp_path: Path):
    """Builds a tiny training config: ``train_config('+experiment=text_only', ...)``."""

    def make(*overrides: str) -> DictConfig:
        base = [
            f"paths.data_dir={data_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.runs_dir={tmp_path / 'runs'}",
            "trainer.max_epochs=1",
        ]
        return compose_config("train", [*base, *TINY_DATA, *TINY_MODEL, *overrides], tmp_path / "run")

    return make


@pytest.fixture
def compose():
    """``compose(name, overrides, output_dir)``: any entry point's composed config."""
    return compose_config


def node_config(node: str, *overrides: str) -> dict:
    """The resolved config of one node of the training config (e.g. 'encoder.text', 'fusion')."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = hydra.compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return OmegaConf.to_container(OmegaConf.select(cfg, node), resolve=True)


def scientific_id_model(output_dir: Path, *overrides: str):
    """The Scientific ID preset's model on 30 items and 10 users (no data needed), and its config."""
    from mmrec.build import DataSizes, build_model

    cfg = compose_config("train", ["+experiment=scientific_ids", *overrides], output_dir)
    return cfg, build_model(cfg, {}, DataSizes(30, 10, cfg.data.history_length, {}))


def build_encoder(modality: str, preset: str, **changes):
    """The encoder of ``encoder/<modality>=<preset>`` with ``changes`` to its options."""
    config = {**node_config(f"encoder.{modality}", f"encoder/{modality}={preset}"), **changes}
    config.pop("featurizer")
    return make(config, f"encoder.{modality}", _convert_="all")


def train_and_export(root: Path, tiny_dataset: Path, *overrides: str) -> Path:
    """A bundle of a 2-epoch fusion_mean model (frozen MiniLM text, tiny image/audio, item IDs) trained
    in ``root`` on a private copy of the tiny dataset, with ``overrides``; the data is moved away after."""
    from mmrec.serving.export import export_bundle
    from mmrec.train import train

    shutil.copytree(tiny_dataset, root / "data" / "synthetic")
    base = [
        f"paths.data_dir={root / 'data'}",
        f"paths.cache_dir={root / 'cache'}",
        *TINY_DATA,
        *TINY_MODEL,
        "+experiment=fusion_mean",
        "encoder/text=minilm",
        "trainer.max_epochs=2",
        "model.item_id=true",
    ]
    train(compose_config("train", [*base, *overrides], root / "run"))
    ckpt = next((root / "run" / "checkpoints").glob("best-*.ckpt"))
    out = export_bundle(ckpt, root / "bundle")
    shutil.move(root / "data", root / "data_moved")  # the bundle must not need the training data
    return out


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, tiny_dataset):
    """The shared bundle (train_and_export with no overrides)."""
    return train_and_export(tmp_path_factory.mktemp("serve"), tiny_dataset)
