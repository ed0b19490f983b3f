"""Sparse ID tables: a step moves only the rows a batch used, at the schedule's learning rate."""

import torch

from mmrec.models.towers import ItemTower, UserTower
from mmrec.training.sparse import SparseTables, sparse_parameters


def test_only_the_rows_a_batch_touched_move_at_the_given_rate():
    items = ItemTower(None, None, dim=8, num_items=1000, item_id=True, sparse_ids=True)
    users = UserTower(dim=8, history_length=4, num_users=50, user_id=True, sparse_ids=True)
    dense = ItemTower(None, None, dim=8, num_items=1000, item_id=True)
    assert sparse_parameters(items) == [items.id_embedding.weight] and sparse_parameters(dense) == []
    assert len(sparse_parameters(users)) == 1
    tables = SparseTables(sparse_parameters(items), lr=1.0)
    before = items.id_embedding.weight.detach().clone()
    used = torch.tensor([3, 17, 17, 999])
    items.id_embedding(used).sum().backward()
    assert items.id_embedding.weight.grad.is_sparse
    tables.step(lr=0.01)
    after = items.id_embedding.weight.detach()
    moved = (after != before).any(1).nonzero().flatten().tolist()
    assert moved == [3, 17, 999]
    # Adam's first step is lr * m / (sqrt(v) + eps) with m = g, v = g^2: lr per coordinate, downhill
    torch.testing.assert_close(before[moved] - after[moved], torch.full((3, 8), 0.01), atol=1e-6, rtol=0)
    assert items.id_embedding.weight.grad is None  # cleared for the next step
