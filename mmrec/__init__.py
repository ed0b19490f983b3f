"""mmrec: content-based multimodal recommendation (text, keyframes, audio, precomputed features)."""

from omegaconf import OmegaConf


def auto_precision() -> str:
    """bf16 mixed precision on a GPU that supports it, 32-bit otherwise (the CPU): trainer=auto's precision."""
    import torch

    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


OmegaConf.register_new_resolver("mmrec_auto_precision", auto_precision, replace=True)
