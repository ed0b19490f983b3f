"""Train, validate and test the two-tower multimodal recommender.

python -m mmrec.train +experiment=fusion_attn
python -m mmrec.train -m +experiment=fusion_attn fusion=attn,concat,gated,late,mean
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmrec.build import build
from mmrec.checkpoint import read_checkpoint
from mmrec.evaluation.table import format_metrics
from mmrec.io import write_text
from mmrec.training.callbacks import parameter_counts

log = logging.getLogger("mmrec")
CONFIG_PATH = "pkg://mmrec.conf"  # the repository's conf/, shipped inside the wheel as mmrec.conf
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


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns every final metric (flat keys), with
    ``best/<monitor>`` the best validation value (what a Hydra sweeper optimises)."""
    resume_id = None
    if cfg.ckpt_path:  # refused before any data or model is built if it is not a safe checkpoint
        resume_id = read_checkpoint(cfg.ckpt_path).get("mmrec_wandb_id")
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    dm, module = build(cfg)
    loggers = build_loggers(cfg, resume_id)
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=build_callbacks(cfg, bool(loggers))
    )
    for logger in loggers:
        logger.log_hyperparams({**flatten(module.run_config), **parameter_counts(module)})
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    wandb_loggers = [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"best/{cfg.eval.monitor}"] = float(checkpoint.best_model_score)
        for logger in wandb_loggers:  # W&B's own max summary of valid/* is beside it; this one is exact
            logger.experiment.summary.update(
                {
                    f"best/{cfg.eval.monitor}": metrics[f"best/{cfg.eval.monitor}"],
                    "best_checkpoint": checkpoint.best_model_path,
                }
            )
    if cfg.test:
        best = checkpoint.best_model_path if checkpoint else ""
        trainer.test(module, datamodule=dm, ckpt_path=best or None, weights_only=True)
        tested = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test")}
        metrics.update(tested)
        for logger in wandb_loggers:  # the summary's test values are the best checkpoint's
            logger.experiment.summary.update(tested)
            if cfg.logger.wandb.get("log_model"):
                log_split_artifact(logger, dm)
    for logger in wandb_loggers:  # flush and close the run: the next run of a sweep starts a new one
        logger.experiment.finish()
    if trainer.is_global_zero:
        write_results(run_dir(), metrics, module.run_config)
        print(format_metrics(metrics, "test" if cfg.test else "valid", title=f"{cfg.run_name} ({dm.dataset.name})"))
        print(f"results: {run_dir() / 'metrics.json'}")
    return metrics


def log_split_artifact(logger, dm) -> None:
    import wandb

    artifact = wandb.Artifact(f"split-{dm.dataset.name}-{dm.split_path.stem}", type="dataset")
    artifact.add_file(str(dm.split_path))
    logger.experiment.log_artifact(artifact)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    metrics = train(cfg)
    return metrics.get(f"best/{cfg.eval.monitor}", metrics.get(cfg.eval.monitor))  # the best epoch's, for sweepers


if __name__ == "__main__":
    main()
