"""Train, validate and test the two-tower multimodal recommender.

    python -m mmrec.train +experiment=fusion_attn
    python -m mmrec.train -m +experiment=fusion_attn fusion=attn,concat,gated,late,mean
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmrec.data.datamodule import RecDataModule
from mmrec.data.features import MediaConfig
from mmrec.evaluation.table import format_metrics
from mmrec.losses.two_tower import TwoTowerLoss
from mmrec.models.builder import build_model, enabled_encoders
from mmrec.models.encoders.text import resolve_text_model
from mmrec.training.module import RecModule

log = logging.getLogger("mmrec")
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def media_config(encoders: dict[str, dict]) -> dict:
    """Data preprocessing settings implied by the enabled encoder presets."""
    media = {}
    if "text" in encoders:
        media.update(tokenizer=resolve_text_model(encoders["text"]["name_or_path"]), max_text_length=encoders["text"].get("max_text_length", 32))
    if "image" in encoders:
        media.update(image_size=encoders["image"]["image_size"], num_frames=encoders["image"].get("num_frames", 3))
    if "audio" in encoders:
        media.update(sample_rate=encoders["audio"].get("sample_rate", 16000), audio_seconds=encoders["audio"].get("audio_seconds", 1.0))
    unknown = set(media) - set(MediaConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown media settings {sorted(unknown)}")
    return media


def build(cfg: DictConfig) -> tuple[RecDataModule, RecModule]:
    """The datamodule (prepared and set up) and the LightningModule for a composed config."""
    encoders = enabled_encoders(OmegaConf.to_container(cfg.encoder, resolve=True))
    live = tuple(m for m, c in encoders.items() if c.get("mode", "frozen") != "frozen")
    dm = instantiate(cfg.data, modalities=tuple(encoders), live_modalities=live, media=media_config(encoders), _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    m = cfg.model
    model = build_model(
        encoders, dm.num_items, dm.num_users, fusion=cfg.fusion.name, dim=m.dim, fusion_layers=cfg.fusion.layers,
        fusion_heads=cfg.fusion.heads, dropout=m.dropout, modality_dropout=m.modality_dropout, item_id=m.item_id,
        id_dropout=m.id_dropout, user_id=m.user_id, user_pooling=m.user_pooling, history_length=cfg.data.history_length,
        empty_items=m.empty_items,
    )
    module = RecModule(
        model, TwoTowerLoss(**cfg.loss), instantiate(cfg.optimizer), encoders, encoder_lr_scale=m.encoder_lr_scale,
        warmup_ratio=m.warmup_ratio, ks=tuple(cfg.eval.ks), cache_dir=str(Path(cfg.paths.cache_dir) / "embeddings"),
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    return dm, module


def wandb_logged_in() -> bool:
    """Whether W&B credentials exist (env or ~/.netrc), without contacting the server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def build_loggers(cfg: DictConfig, resume_id: str | None) -> list:
    """Instantiate the configured loggers; W&B goes offline when there is no login or WANDB_MODE says so."""
    loggers = []
    for name, conf in (cfg.logger or {}).items():
        if name == "wandb":
            offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_logged_in()
            extra = {"offline": offline or conf.get("offline", False)}
            if resume_id:
                extra.update(id=resume_id, resume="allow")
            logger = instantiate(conf, **extra)
            if extra["offline"]:
                log.info("W&B: no login found, logging offline to %s/wandb; upload later with `wandb sync %s/wandb/offline-run-*`", conf.save_dir, conf.save_dir)
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
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(dict(sorted(metrics.items())), indent=2))
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns every final metric (flat keys)."""
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    dm, module = build(cfg)
    resume_id = None
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
        resume_id = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=False).get("mmrec_wandb_id")
    loggers = build_loggers(cfg, resume_id)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    for logger in loggers:
        logger.log_hyperparams(flatten(module.run_config))
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=dm, ckpt_path=best or None, weights_only=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test")})
    if trainer.is_global_zero:
        write_results(run_dir(), metrics, module.run_config)
        print(format_metrics(metrics, "test" if cfg.test else "valid", title=f"{cfg.run_name} ({dm.dataset.name})"))
        print(f"results: {run_dir() / 'metrics.json'}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    metrics = train(cfg)
    return metrics.get(cfg.eval.monitor)  # for Hydra sweepers that optimise a metric


if __name__ == "__main__":
    main()
