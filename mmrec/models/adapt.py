"""Training modes shared by every encoder: frozen, full fine-tuning, or LoRA adapters (peft)."""

from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

TRAINING_MODES = ("frozen", "full", "lora")


def apply_training_mode(
    backbone: nn.Module,
    mode: str,
    lora_targets: list[str],
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
) -> nn.Module:
    """Set which backbone parameters train: none (frozen), all (full) or only LoRA adapters (lora).

    LoRA is injected with ``peft.inject_adapter_in_model`` so that any nn.Module works (HF,
    open_clip, torchaudio), not only Hugging Face ``PreTrainedModel``s.
    """
    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown encoder mode '{mode}': expected one of {TRAINING_MODES}")
    if mode == "lora":
        config = LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=list(lora_targets)
        )
        try:
            backbone = inject_adapter_in_model(config, backbone)
        except ValueError as err:
            raise ValueError(
                f"LoRA target modules {list(lora_targets)} not found in {type(backbone).__name__}: {err}"
            ) from err
    else:
        backbone.requires_grad_(mode == "full")
    return backbone


class ModalityEncoder(nn.Module):
    """Runs a pooled encoder on a batch of items; items without the modality get zeros.

    ``encoder(inputs, mask) -> (n, D)``; this wrapper takes ``present`` (B,) and returns (B, D);
    the outputs of absent items (run on their placeholder inputs) are discarded. A frozen backbone stays in eval mode
    (no dropout) and runs without autograd.
    """

    def __init__(self, encoder: nn.Module, output_dim: int, mode: str):
        super().__init__()
        self.encoder, self.output_dim, self.mode = encoder, output_dim, mode

    def train(self, mode: bool = True) -> ModalityEncoder:
        super().train(mode)
        if self.mode == "frozen":
            self.encoder.eval()
        return self

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        # Every row runs and absent rows are zeroed afterwards: selecting the present rows first
        # needs their count on the host, a device sync in every training step. An absent row runs on
        # its placeholder input with only its first position unmasked, so no attention row is fully
        # masked (which would give NaN, and NaN gradients even where the output is discarded).
        first = torch.zeros_like(mask)
        first[:, 0] = True
        mask = torch.where(present.view(-1, *([1] * (mask.dim() - 1))), mask, first)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.mode != "frozen"):
            encoded = self.encoder(inputs, mask).to(torch.get_default_dtype())
        return torch.where(present.unsqueeze(1), encoded, torch.zeros((), dtype=encoded.dtype, device=encoded.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of (B, T, D) where ``mask`` (B, T) is True; rows with no True give zeros."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
