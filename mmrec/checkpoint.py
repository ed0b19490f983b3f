"""Safe checkpoint reading: checkpoints travel between people, so they are never unpickled freely.

Every load uses ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers: a checkpoint whose pickle tries to run code is refused. The file is checked before
any data or model is built, so a wrong path fails in a second with a message naming it. Writes go
through ``AtomicCheckpointIO`` (temporary file, then rename), and the RNG states a checkpoint
holds are plain tensors and tuples so that it still loads under ``weights_only=True``.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from mmrec.io import atomic_path


class CheckpointError(ValueError):
    """A file that is not a safe, complete mmrec/Lightning checkpoint."""


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` (tensors on the CPU), or CheckpointError naming the file and why."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a checkpoint (expected a torch.save zip archive written by mmrec.train; the file "
            "is truncated or of another format)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused, it holds objects other than tensors and plain containers (a pickle that could "
            "run code). "
            f"mmrec loads checkpoints with weights_only=True only. ({str(err).splitlines()[0]})"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint (truncated or damaged?): {err}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (expected a dict with 'state_dict', got {type(checkpoint).__name__})"
        )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made crash-safe: each checkpoint goes to a temporary file
    beside its target and is renamed over it, so a kill mid-write never leaves a torn last.ckpt."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def rng_states() -> dict:
    """Every RNG the training step draws from, as tensors and plain containers (weights_only-safe)."""
    states = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(np.random.get_state()),
        "python": _python_state(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = states["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _numpy_state(state: tuple) -> tuple:
    kind, keys, pos, has_gauss, cached = state
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _python_state(state: tuple) -> tuple:
    version, internal, gauss = state
    return version, torch.tensor(internal, dtype=torch.int64), gauss


def best_checkpoint(path: str | Path) -> Path:
    """``path`` itself, or for a run folder the one ``checkpoints/best-*.ckpt`` it holds."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise FileNotFoundError(f"init_from={path}: no such checkpoint file or run folder")
        return path
    found = sorted((path / "checkpoints").glob("best-*.ckpt"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{path}: a run folder should hold one checkpoints/best-*.ckpt, found {[p.name for p in found] or 'none'}; "
            "name the checkpoint file instead"
        )
    return found[0]


def load_weights(model: torch.nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Start ``model`` from the weights of the mmrec checkpoint at ``path`` (``init_from``: fine-tuning,
    e.g. a text-only model given an item-ID table). Parameters the checkpoint holds under the same
    name are copied; the model's others keep their initialisation and the checkpoint's others are
    ignored. ``path`` may be a run folder: its best checkpoint. Returns (missing, ignored) names; a
    parameter of another shape is an error naming it."""
    stored = read_checkpoint(best_checkpoint(path))["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in stored.items() if k.startswith("model.")}
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} (this model: {tuple(own[k].shape)})"
        for k, v in weights.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        shown = "; ".join(wrong[:3]) + (f"; and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        raise CheckpointError(
            f"init_from={path}: {len(wrong)} parameter(s) of another shape: {shown}; was it trained on another "
            "catalogue, or with another model.dim?"
        )
    if not set(weights) & set(own):
        raise CheckpointError(f"init_from={path}: no parameter of this model is in the checkpoint")
    result = model.load_state_dict(weights, strict=False)
    return sorted(result.missing_keys), sorted(result.unexpected_keys)
