"""ID tables trained with sparse gradients: a step costs the rows a batch touched, not the table.

A dense Adam(W) step reads and writes every row of every parameter, so with a 10M-item ID table a
step costs the table (and its gradient, zero-filled each step) whatever the batch. With
``model.sparse_ids=true`` the tables are ``nn.Embedding(sparse=True)``: their gradients list only the
rows a batch used, and ``torch.optim.SparseAdam`` updates only those rows (lazy Adam: a row's moments
move only when the row is used). Every other parameter stays with the configured optimiser; the
tables follow its learning-rate schedule.

Sharding a table beyond one device's memory is TorchRec's job (``EmbeddingBagCollection`` with a
row-wise sharding plan); mmrec does not build that.
"""

from __future__ import annotations

import torch
from torch import nn


def sparse_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The weights of every trainable ``nn.Embedding(sparse=True)`` in ``module``."""
    return [m.weight for m in module.modules() if isinstance(m, nn.Embedding) and m.sparse and m.weight.requires_grad]


class SparseTables:
    """SparseAdam over the sparse ID tables, stepped after the main optimiser at its learning rate."""

    def __init__(self, params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999)):
        self.params = params
        self.optimizer = torch.optim.SparseAdam(params, lr=lr, betas=betas)

    def step(self, lr: float) -> None:
        """Update the rows that have gradients at ``lr``, then clear the gradients."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if any(p.grad is not None for p in self.params):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
