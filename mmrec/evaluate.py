"""Re-evaluate a checkpoint with full ranking: python -m mmrec.evaluate ckpt_path=PATH [part=valid]

The model and data config come from the checkpoint (stored by mmrec.train); entries under
``overrides`` replace parts of it, e.g. ``+overrides.data.root=/other/copy``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from mmrec.build import build
from mmrec.checkpoint import read_checkpoint
from mmrec.configs import CONFIG_PATH, check_file_config
from mmrec.evaluation.table import format_metrics
from mmrec.runs import run_dir, wandb_logger, write_results

log = logging.getLogger("mmrec")
PARTS = ("valid", "test")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Metrics of the checkpoint at ``cfg.ckpt_path`` on ``cfg.part``; also written to metrics.json."""
    path = Path(cfg.ckpt_path)
    if cfg.part not in PARTS:
        raise ValueError(f"part={cfg.part}: expected one of {PARTS}")
    checkpoint = read_checkpoint(path)
    stored = checkpoint.get("mmrec_config")
    if not stored:
        raise ValueError(f"{path} holds no mmrec_config: it was not written by mmrec.train")
    check_file_config(stored, str(path), cfg.trust_config, cfg.allowed_targets)
    train_cfg = OmegaConf.merge(
        OmegaConf.create(stored), OmegaConf.create(OmegaConf.to_container(cfg.overrides, resolve=True))
    )
    # the checkpoint's weights replace the run's starting point (which may be gone), and nothing trains
    train_cfg.init_from, train_cfg.model.freeze = None, []
    L.seed_everything(train_cfg.seed, workers=True)
    dm, module = build(train_cfg)
    loggers = []
    if cfg.wandb:  # an eval run in the training run's W&B group, job_type=eval
        conf = (
            {**OmegaConf.to_container(train_cfg.logger.wandb, resolve=False), "save_dir": str(run_dir())}
            if train_cfg.get("logger") and "wandb" in train_cfg.logger
            else {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "mmrec", "save_dir": str(run_dir())}
        )
        group = checkpoint.get("mmrec_wandb_group") or str(train_cfg.get("group", "default"))
        loggers.append(wandb_logger(OmegaConf.create(conf), group, f"eval-{path.stem}", job_type="eval"))
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        logger=loggers or False,
        enable_checkpointing=False,
    )
    run = trainer.validate if cfg.part == "valid" else trainer.test
    run(module, datamodule=dm, ckpt_path=str(path), weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for logger in loggers:
        logger.experiment.summary.update(metrics)
        logger.experiment.finish()
    if not trainer.is_global_zero:
        return metrics
    write_results(
        run_dir(), metrics, {"evaluated_checkpoint": str(path.resolve()), **OmegaConf.to_container(train_cfg)}
    )
    print(format_metrics(metrics, cfg.part, title=f"{path.name} ({dm.dataset.name})"))
    print(f"results: {run_dir() / 'metrics.json'}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    evaluate(cfg)


if __name__ == "__main__":
    main()
