"""Shared fixtures: a tiny generated dataset and composed Hydra configs for fast runs."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mmrec.data.synthetic import generate

CONF = str(Path(__file__).resolve().parent.parent / "conf")
TINY_DATA = ["data.synthetic.items=60", "data.synthetic.users=16", "data.synthetic.interactions_per_user=12", "data.synthetic.seed=1"]
TINY_MODEL = ["encoder/text=tiny", "model.dim=32", "fusion.heads=2", "data.batch_size=32", "data.eval_batch_size=32", "data.history_length=5", "logger=none"]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 60-item synthetic dataset (with videos and missing modalities), generated once."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return generate(root, items=60, users=16, interactions_per_user=12, seed=1, video_fraction=0.2, missing_fraction=0.1)


@pytest.fixture(scope="session")
def data_dir(tiny_dataset: Path) -> Path:
    """A paths.data_dir whose 'synthetic' folder is the tiny dataset."""
    return tiny_dataset.parent


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
        base = [f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.runs_dir={tmp_path / 'runs'}", "trainer.max_epochs=1"]
        return compose_config("train", [*base, *TINY_DATA, *TINY_MODEL, *overrides], tmp_path / "run")

    return make


@pytest.fixture
def compose():
    """``compose(name, overrides, output_dir)``: any entry point's composed config."""
    return compose_config
