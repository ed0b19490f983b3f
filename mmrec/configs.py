"""Where the configs live, and the rule for configs that come from files: they are data, not code.

A config composed from the user's own command line and config tree is instantiated as it is. A
config read from a file that may come from someone else (a checkpoint's ``mmrec_config``, a
bundle's ``config.yaml`` and ``encoders.json``) is first checked: every ``_target_`` in it must be
one of mmrec's parts or one of the library classes mmrec's presets use. Anything else (say
``pathlib.Path.write_bytes`` or ``pandas.read_pickle`` as a "loss term") is refused before any
object is built, naming the file, the key and the target. A user who trusts the file says so
(``trust_config=true``), or allows their own package (``allowed_targets=[my_pkg.]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

CONFIG_PATH = "pkg://mmrec.conf"  # the repository's conf/, shipped inside the wheel as mmrec.conf

# mmrec's swappable parts: whole modules of parts, then single classes and functions.
ALLOWED_MODULES = (
    "mmrec.modalities.",
    "mmrec.models.",
    "mmrec.losses.",
    "mmrec.evaluation.",
    "mmrec.data.loaders.",
    "mmrec.training.callbacks.",
)
ALLOWED_TARGETS = frozenset(
    {
        "mmrec.data.datamodule.RecDataModule",
        "mmrec.data.schema.load_native",
        "mmrec.data.sampling.UniformNegatives",
        "mmrec.data.sampling.PopularityNegatives",
        "mmrec.data.synthetic.ensure_generated",
        "mmrec.checkpoint.AtomicCheckpointIO",
        # the library classes the presets name
        "lightning.Trainer",
        "lightning.pytorch.Trainer",
        "lightning.pytorch.callbacks.ModelCheckpoint",
        "lightning.pytorch.callbacks.EarlyStopping",
        "lightning.pytorch.callbacks.LearningRateMonitor",
        "lightning.pytorch.callbacks.TQDMProgressBar",
        "lightning.pytorch.loggers.CSVLogger",
        "lightning.pytorch.loggers.WandbLogger",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "torch.optim.AdamW",
        "torch.optim.Adam",
        "torch.optim.SGD",
        "torch.optim.Adagrad",
        "torch.optim.SparseAdam",
    }
)


class UntrustedConfigError(ValueError):
    """A config read from a file names a target outside the allowlist."""


def targets(config, path: str = "") -> Iterable[tuple[str, str]]:
    """Every (key, _target_) in a nested config of dicts and lists."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_" and value is not None:
                yield where, str(value)
            else:
                yield from targets(value, where)
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            yield from targets(value, f"{path}[{i}]")


def is_allowed(target: str, allowed: Iterable[str] = ()) -> bool:
    """mmrec's parts, the presets' library classes, and ``allowed`` (exact names or 'pkg.' prefixes)."""
    extra = tuple(allowed)
    return (
        target in ALLOWED_TARGETS
        or target.startswith(ALLOWED_MODULES)
        or target in extra
        or any(p.endswith(".") and target.startswith(p) for p in extra)
    )


def check_file_config(config, source: str, trust: bool = False, allowed: Iterable[str] = ()) -> None:
    """Refuse ``config`` (read from ``source``) if any ``_target_`` is outside the allowlist."""
    if trust:
        return
    allowed = tuple(allowed or ())
    for key, target in targets(config):
        if not is_allowed(target, allowed):
            package = target.split(".")[0] + "."
            raise UntrustedConfigError(
                f"{source}: refused: key '{key}' names _target_ {target!r}, which is not one of mmrec's parts or "
                "the library classes its presets use, so nothing from this file is built. If you trust the file, "
                f"pass trust_config=true, or allow your own package with allowed_targets=[{package}]"
            )
