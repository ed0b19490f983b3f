"""Image/keyframe encoder: the image tower of an open_clip model, frames pooled by mean or attention."""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from torch import nn

from mmrec.models.encoders.adapt import ModalityEncoder, apply_training_mode, masked_mean

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
FRAME_POOLINGS = ("mean", "attn")


def register_presets() -> None:
    """Make mmrec's own open_clip architectures (plain JSON in models/presets) known to open_clip."""
    for path in sorted(PRESETS_DIR.glob("*.json")):
        if open_clip.get_model_config(path.stem) is None:
            open_clip.add_model_config(path)


class FrameAttentionPool(nn.Module):
    """A learned query attends over the frames of an item; padded frames get no weight."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))
        self.key = nn.Linear(dim, dim)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.key(frames) @ self.query / frames.shape[-1] ** 0.5  # (B, F)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1).nan_to_num(0.0)
        return (weights.unsqueeze(-1) * frames).sum(1)


class ImageBackbone(nn.Module):
    """(B, F, 3, H, W) frames + (B, F) frame mask -> (B, D); only real frames are encoded."""

    def __init__(self, visual: nn.Module, output_dim: int, frame_pooling: str):
        super().__init__()
        if frame_pooling not in FRAME_POOLINGS:
            raise ValueError(f"unknown frame pooling '{frame_pooling}': expected one of {FRAME_POOLINGS}")
        self.visual = visual
        self.pool = FrameAttentionPool(output_dim) if frame_pooling == "attn" else None

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        encoded = self.visual(frames[mask])  # (n_real_frames, D)
        per_frame = encoded.new_zeros(*mask.shape, encoded.shape[-1])
        per_frame[mask] = encoded
        return masked_mean(per_frame, mask) if self.pool is None else self.pool(per_frame, mask)


def build_image_encoder(
    model_name: str,
    pretrained: str | None = None,
    mode: str = "frozen",
    frame_pooling: str = "mean",
    lora_targets: tuple[str, ...] = ("attn",),
    lora_r: int = 8,
    lora_alpha: int = 16,
    gradient_checkpointing: bool = False,
) -> ModalityEncoder:
    """Build the image ModalityEncoder from ``open_clip.create_model(model_name, pretrained)``.

    ``pretrained`` is an open_clip tag ('openai', 'laion2b_s34b_b79k', ...), a local checkpoint
    file, or None for random init. A frame pooling of 'attn' adds a trainable attention pool.
    """
    if frame_pooling == "attn" and mode == "frozen":
        raise ValueError("encoder.image.frame_pooling=attn trains an attention pool, but mode=frozen encoders are cached once: use frame_pooling=mean, or mode=full/lora")
    register_presets()
    if open_clip.get_model_config(model_name) is None and not model_name.startswith("hf-hub:"):
        raise ValueError(f"unknown open_clip model '{model_name}': expected one of open_clip.list_models() or a JSON in {PRESETS_DIR}")
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained or None, require_pretrained=bool(pretrained))
    except Exception as err:  # open_clip raises RuntimeError, OSError or URLError variants
        raise OSError(
            f"cannot load open_clip weights '{pretrained}' for '{model_name}': download the checkpoint where the "
            f"network is reachable and set encoder.image.pretrained to its local file path. ({err})"
        ) from err
    visual = model.visual
    if gradient_checkpointing:
        visual.set_grad_checkpointing(True)
    visual = apply_training_mode(visual, mode, list(lora_targets), lora_r, lora_alpha)
    return ModalityEncoder(ImageBackbone(visual, visual.output_dim, frame_pooling), visual.output_dim, mode)
