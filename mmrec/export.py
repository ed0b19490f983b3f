"""Export a trained checkpoint to a serving bundle (safetensors, FAISS, JSON; no pickle).

python -m mmrec.export ckpt_path=runs/train/<run>/checkpoints/best-epoch007.ckpt out=bundle index=hnsw
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from mmrec.configs import CONFIG_PATH
from mmrec.serving.export import export_bundle


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    out = export_bundle(
        cfg.ckpt_path,
        cfg.out,
        cfg.index,
        OmegaConf.to_container(cfg.overrides, resolve=True),
        cfg.trust_config,
        tuple(cfg.allowed_targets),
    )
    print(f"bundle: {out}  (serve it: python -m mmrec.serve bundle={out})")


if __name__ == "__main__":
    main()
