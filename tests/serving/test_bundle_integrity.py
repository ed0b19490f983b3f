"""Configs read from files are data, not code; every bundle file is verified by name."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
import yaml

from mmrec.checkpoint import read_checkpoint
from mmrec.configs import UntrustedConfigError
from mmrec.serving.bundle import Bundle, BundleError, bundle_files
from mmrec.serving.export import export_bundle

pytestmark = pytest.mark.integration  # full train / export / serve runs: `pytest -m integration`


def payload(tmp_path) -> dict:
    """A 'loss term' that would write a file if it were built."""
    return {"_target_": "pathlib.Path.write_bytes", "self": str(tmp_path / "pwned"), "data": "x"}


@pytest.fixture
def crafted_checkpoint(bundle_dir, tmp_path):
    """The shared bundle's training checkpoint with a payload added to its stored config."""
    ckpt = next((bundle_dir.parent / "run" / "checkpoints").glob("best-*.ckpt"))
    checkpoint = read_checkpoint(ckpt)
    checkpoint["mmrec_config"]["loss"]["evil"] = {**payload(tmp_path), "weight": 1.0}
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path


def test_a_crafted_checkpoint_is_refused_everywhere(crafted_checkpoint, tmp_path, compose, monkeypatch):
    from mmrec.evaluate import evaluate
    from mmrec.train import train

    monkeypatch.chdir(tmp_path)
    expected = r"crafted.ckpt: refused: key 'loss.evil._target_' names _target_ 'pathlib.Path.write_bytes'"
    with pytest.raises(UntrustedConfigError, match=expected):
        evaluate(compose("evaluate", [f"ckpt_path={crafted_checkpoint}"], tmp_path / "eval"))
    with pytest.raises(UntrustedConfigError, match=expected):
        export_bundle(crafted_checkpoint, tmp_path / "out")
    with pytest.raises(UntrustedConfigError, match=expected):
        train(compose("train", [f"ckpt_path={crafted_checkpoint}", "logger=none"], tmp_path / "run"))
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


def rehash(bundle) -> None:
    """Update the manifest to match edited files, as an attacker would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["sha256"] = {n: hashlib.sha256((bundle / n).read_bytes()).hexdigest() for n in bundle_files(bundle)}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_a_crafted_bundle_is_refused_before_anything_is_built(bundle_dir, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    encoders = json.loads((bundle / "encoders.json").read_text())
    encoders["text"]["featurizer"] = payload(tmp_path)
    (bundle / "encoders.json").write_text(json.dumps(encoders))
    rehash(bundle)
    with pytest.raises(UntrustedConfigError, match=r"encoders.json: refused: key 'text.featurizer._target_'"):
        Bundle.load(bundle)
    config = yaml.safe_load((bundle_dir / "config.yaml").read_text())
    config["fusion"] = payload(tmp_path)
    shutil.copy(bundle_dir / "encoders.json", bundle / "encoders.json")
    (bundle / "config.yaml").write_text(yaml.safe_dump(config))
    rehash(bundle)
    with pytest.raises(UntrustedConfigError, match=r"config.yaml: refused: key 'fusion._target_'"):
        Bundle.load(bundle)
    assert not (tmp_path / "pwned").exists()
    good = json.loads((bundle_dir / "manifest.json").read_bytes())
    expected = hashlib.sha256((bundle_dir / "manifest.json").read_bytes()).hexdigest()
    with pytest.raises(BundleError, match=r"manifest.json: its SHA-256 is not the expected one"):
        Bundle.load(bundle, expect_manifest_sha256=expected)  # altered together with its manifest
    assert Bundle.load(bundle_dir, expect_manifest_sha256=expected).manifest == good


def test_every_bundle_file_edited_in_turn_is_refused_by_name(bundle_dir, tmp_path):
    names = bundle_files(bundle_dir)
    assert {"model.safetensors", "catalogue.safetensors", "index.faiss", "README.md"} <= set(names)
    assert any(n.startswith("text/") for n in names)  # the tokenizer and config of the text encoder
    for name in names:
        bundle = tmp_path / name.replace("/", "_")
        shutil.copytree(bundle_dir, bundle)
        with open(bundle / name, "ab") as handle:
            handle.write(b"\0")
        with pytest.raises(BundleError, match=rf"{bundle / name}: its SHA-256 differs from the manifest's"):
            Bundle.load(bundle)
    added = tmp_path / "added"
    shutil.copytree(bundle_dir, added)
    (added / "text" / "added_tokens.json").write_text("{}")
    with pytest.raises(BundleError, match=r"text/added_tokens.json: not listed in the manifest"):
        Bundle.load(added)
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest.json: cannot be read as JSON"):
        Bundle.load(broken)


def test_a_damaged_index_is_rebuilt_from_the_catalogue(bundle_dir, tmp_path, caplog):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    (bundle / "index.faiss").write_bytes(b"damaged")
    loaded = Bundle.load(bundle, verify=False)
    assert (
        loaded.index.ntotal == len(loaded.catalogue["embeddings"]) and "rebuilding it from the catalogue" in caplog.text
    )
    (bundle / "catalogue.safetensors").write_bytes(b"damaged")
    with pytest.raises(BundleError, match=r"catalogue.safetensors: cannot be read as an mmrec catalogue"):
        Bundle.load(bundle, verify=False)
