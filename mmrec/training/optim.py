"""The optimiser's parameter groups and learning-rate schedule (used by the training module)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

import torch


def param_groups(
    named: Iterable[tuple[str, torch.nn.Parameter]], lr: float, encoder_lr_scale: float, skip: set[int]
) -> list[dict]:
    """AdamW groups: encoders (``model.encoders.*``) at ``lr * encoder_lr_scale``; no weight decay on
    norms, biases, embeddings and scalars; parameters whose ``id`` is in ``skip`` left out."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in named:
        if not param.requires_grad or id(param) in skip:
            continue
        is_encoder = name.startswith("model.encoders.")
        no_decay = param.ndim < 2 or "embedding" in name or "norm" in name
        groups.setdefault((is_encoder, no_decay), []).append(param)
    return [
        {
            "params": params,
            "lr": lr * (encoder_lr_scale if enc else 1.0),
            **({"weight_decay": 0.0} if no_decay else {}),
        }
        for (enc, no_decay), params in sorted(groups.items())
    ]


def build_optimizer(factory: partial, groups: list[dict]) -> torch.optim.Optimizer:
    """The configured optimiser; ``optimizer.fused=auto`` is the fused (single-kernel) update when
    every parameter is on a GPU (Lightning moves the model before configure_optimizers), PyTorch's
    default (foreach) otherwise."""
    if factory.keywords.get("fused") == "auto":
        on_gpu = all(p.is_cuda for group in groups for p in group["params"])
        factory = partial(factory, fused=True if on_gpu else None)
    return factory(groups)


def warmup_cosine(total: int, warmup: int) -> Callable[[int], float]:
    """The learning-rate factor at a step: linear warmup over ``warmup`` steps, then cosine to zero."""

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return schedule
