"""Train, validate and test the two-tower multimodal recommender.

python -m mmrec.train +experiment=fusion_attn
python -m mmrec.train -m +experiment=fusion_attn fusion=attn,concat,gated,late,mean
"""

from __future__ import annotations

import logging

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from mmrec.build import build
from mmrec.checkpoint import best_checkpoint, read_checkpoint
from mmrec.configs import CONFIG_PATH, check_file_config
from mmrec.evaluation.table import format_metrics
from mmrec.runs import (
    build_callbacks,
    build_loggers,
    flatten,
    log_split_artifact,
    run_dir,
    wandb_logged_in,  # noqa: F401  (part of mmrec.train's interface)
    write_results,
)
from mmrec.training.callbacks import parameter_counts

log = logging.getLogger("mmrec")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns every final metric (flat keys), with
    ``best/<monitor>`` the best validation value (what a Hydra sweeper optimises)."""
    resume_id = None
    if cfg.ckpt_path:  # refused before any data or model is built if it is not a safe checkpoint
        stored = read_checkpoint(cfg.ckpt_path)
        check_file_config(stored.get("mmrec_config"), cfg.ckpt_path, cfg.trust_config, cfg.allowed_targets)
        resume_id = stored.get("mmrec_wandb_id")
    if cfg.get("init_from"):  # a wrong path fails now, not after the data is prepared
        best_checkpoint(cfg.init_from)
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
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
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


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    metrics = train(cfg)
    return metrics.get(f"best/{cfg.eval.monitor}", metrics.get(cfg.eval.monitor))  # the best epoch's, for sweepers


if __name__ == "__main__":
    main()
