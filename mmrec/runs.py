"""What every entry point shares about a run: its folder, results files, loggers and callbacks.

W&B runs are grouped by condition (experiment and overrides without the seed) and go offline
without a login; results are flat-keyed ``metrics.json`` beside the resolved ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmrec.io import write_text

log = logging.getLogger("mmrec")
GROUP_IGNORED = ("seed", "paths.", "ckpt_path", "logger", "hydra.", "test", "trainer.devices", "data.num_workers")


def wandb_logged_in() -> bool:
    """Whether W&B has credentials for its configured host (env, settings or ~/.netrc), resolved
    by wandb itself so self-hosted servers count, and without contacting any server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import wandb
        from wandb.sdk.lib import wbauth

        settings = wandb.Settings()
        settings.update_from_system_settings()  # ~/.config/wandb/settings: `wandb login --host` of a self-hosted server
        settings.update_from_env_vars(dict(os.environ))  # WANDB_BASE_URL
        host = settings.base_url
        return wbauth.session_credentials(host=host) is not None or wbauth.read_netrc_auth(host=host) is not None
    except Exception as err:  # an unknown wandb layout or a bad netrc: stay offline rather than block
        log.info("W&B credentials could not be checked (%s): logging offline", err)
        return False


def condition_group(cfg: DictConfig) -> str:
    """The W&B group of a run: its experiment and overrides without the seed (and paths), so the
    seeds of one condition are runs of one group and W&B's grouped mean ± std is meaningful."""
    if cfg.group != "auto":
        return str(cfg.group)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = dict(
        o.lstrip("+~").partition("=")[::2] for o in overrides if not o.lstrip("+~").startswith(GROUP_IGNORED)
    )  # the last value of a key wins
    return ",".join(f"{k}={v}" for k, v in sorted(kept.items())) or "default"


def wandb_logger(conf, group: str, name: str, resume_id: str | None = None, **overrides):
    """A Lightning WandbLogger for ``conf`` (a logger/wandb node), offline without credentials."""
    offline = (
        os.environ.get("WANDB_MODE") in ("offline", "disabled") or conf.get("offline", False) or not wandb_logged_in()
    )
    extra = {"offline": offline, "group": group, "name": name, **overrides}
    if offline and conf.get("log_model"):
        log.warning("W&B is offline: checkpoints cannot be uploaded as artifacts, so logger.wandb.log_model is ignored")
        extra["log_model"] = False
    if resume_id:
        extra.update(id=resume_id, resume="allow")
    if offline:
        log.info(
            "W&B: no login found, logging offline to %s/wandb; upload later with `wandb sync %s/wandb/offline-run-*`",
            conf["save_dir"],
            conf["save_dir"],
        )
    return instantiate(conf, **extra)


def build_loggers(cfg: DictConfig, resume_id: str | None) -> list:
    """Instantiate the configured loggers; W&B goes offline when there is no login or WANDB_MODE says so."""
    loggers = []
    for name, conf in (cfg.logger or {}).items():
        if name == "wandb":
            logger = wandb_logger(conf, condition_group(cfg), f"{cfg.run_name}-seed{cfg.seed}", resume_id)
            logger.experiment.define_metric("valid/*", summary="max")
        else:
            logger = instantiate(conf)
        loggers.append(logger)
    return loggers


def flatten(config: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}, so runs can be grouped by any config value in W&B."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()


def write_results(out_dir: Path, metrics: dict[str, float], config: dict) -> None:
    """``metrics.json`` (flat keys such as test/recall@20) and the resolved ``config.yaml``."""
    write_text(out_dir / "metrics.json", json.dumps(dict(sorted(metrics.items())), indent=2))
    write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list:
    """The configured callbacks. On resume, checkpoints keep going to the resumed run's folder:
    Lightning restores the best-checkpoint state only when the folder is unchanged."""
    callbacks = []
    for name, conf in (cfg.get("callbacks") or {}).items():
        if name == "lr_monitor" and not has_logger:
            continue  # Lightning's LearningRateMonitor needs a logger
        if cfg.ckpt_path and conf.get("_target_", "").endswith("ModelCheckpoint"):
            conf = OmegaConf.merge(conf, {"dirpath": str(Path(cfg.ckpt_path).resolve().parent)})
        callbacks.append(instantiate(conf))
    return callbacks


def log_split_artifact(logger, dm) -> None:
    import wandb

    artifact = wandb.Artifact(f"split-{dm.dataset.name}-{dm.split_path.stem}", type="dataset")
    artifact.add_file(str(dm.split_path))
    logger.experiment.log_artifact(artifact)
