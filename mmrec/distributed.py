"""Cross-device negatives: gather embeddings from every rank, with gradients.

Rank and world size are read when called, never stored, so the same module works before and
after a process group exists and under any launcher. The idea follows open_clip's
``gather_features``: all-gather with autograd, and either compute the loss over the whole
global batch on every rank, or (``local_loss``) only for the local rows against all columns,
with labels offset by ``rank * local_batch``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0; gradients flow back to each rank's slice.

    Every rank must pass the same shape (the training loader drops the last partial batch).
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    return torch.cat(dist_nn.all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (ids, counts) from every rank along dim 0, without autograd."""
    _, world = rank_and_world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def local_labels(batch_size: int, device: torch.device) -> torch.Tensor:
    """Column index of each local row's positive in the gathered batch: rank * B + arange(B)."""
    rank, _ = rank_and_world()
    return torch.arange(batch_size, device=device) + rank * batch_size
