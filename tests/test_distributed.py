"""With 2 CPU processes (gloo), the gathered loss and gradients equal the single-process ones."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmrec.data.csr import PairSet
from mmrec.distributed import rank_and_world
from mmrec.losses.contrastive import InBatchSoftmax
from mmrec.models.two_tower import TwoTowerOutput

pytestmark = pytest.mark.integration  # full train / export / serve runs: `pytest -m integration`

B, D, WORLD = 4, 8, 2


def global_batch():
    g = torch.Generator().manual_seed(0)
    users = F.normalize(torch.randn(WORLD * B, D, generator=g), dim=1)
    items = F.normalize(torch.randn(WORLD * B, D, generator=g), dim=1)
    item_ids = torch.tensor([0, 1, 2, 3, 4, 1, 6, 7])  # item 1 appears on both ranks
    log_q = torch.log(torch.linspace(0.05, 0.2, WORLD * B))
    return users, items, item_ids, log_q


KNOWN = PairSet.from_pairs(
    torch.tensor([2]), torch.tensor([6]), stride=100
)  # user 2 (rank 0) interacted with item 6 (on rank 1)


# sequence training's padded rows, unequal per rank (2 real rows on rank 0, 4 on rank 1)
VALID = torch.tensor([True, False, False, True, True, True, True, True])


def loss_of(users, items, user_ids, item_ids, log_q, scale, local_loss=True, valid=None):
    b = len(users)
    out = TwoTowerOutput(
        users,
        items,
        items.unsqueeze(1),
        user_ids,
        item_ids,
        item_ids.unsqueeze(1),
        scale,
        torch.zeros(b),
        torch.zeros(b, 1),
        log_q,
        KNOWN,
        valid,
    )
    return InBatchSoftmax(local_loss=local_loss)(out)


def worker(rank, port, out, local_loss, padded):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    assert rank_and_world() == (rank, WORLD)
    users, items, item_ids, log_q = global_batch()
    rows = slice(rank * B, (rank + 1) * B)
    u, i = users[rows].clone().requires_grad_(), items[rows].clone().requires_grad_()
    scale = torch.tensor(2.3, requires_grad=True)
    valid = VALID[rows] if padded else None
    loss = loss_of(u, i, torch.arange(WORLD * B)[rows], item_ids[rows], log_q[rows], scale, local_loss, valid)
    loss.backward()
    out[rank] = (loss.detach(), u.grad, i.grad, scale.grad)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("local_loss", [True, False])
def test_gathered_loss_and_gradients_equal_single_process(local_loss, padded):
    users, items, item_ids, log_q = global_batch()
    u, i = users.clone().requires_grad_(), items.clone().requires_grad_()
    scale = torch.tensor(2.3, requires_grad=True)
    single = loss_of(u, i, torch.arange(WORLD * B), item_ids, log_q, scale, valid=VALID if padded else None)
    single.backward()

    manager = mp.Manager()
    out = manager.dict()
    mp.start_processes(worker, args=(free_port(), out, local_loss, padded), nprocs=WORLD, start_method="spawn")
    losses = torch.stack([out[r][0] for r in range(WORLD)])
    if local_loss:  # the single-process mean is the mean of the per-rank losses (padded: each scaled by W / count)
        torch.testing.assert_close(losses.mean(), single.detach())
    else:  # every rank computes the whole global loss
        torch.testing.assert_close(losses, single.detach().expand(WORLD))
    # each rank's backward (through all_gather) sums every rank's loss; DDP then averages by WORLD,
    # so the per-rank gradient divided by WORLD must be the single-process gradient
    for r in range(WORLD):
        rows = slice(r * B, (r + 1) * B)
        torch.testing.assert_close(out[r][1] / WORLD, u.grad[rows])
        torch.testing.assert_close(out[r][2] / WORLD, i.grad[rows])
    torch.testing.assert_close(sum(out[r][3] for r in range(WORLD)) / WORLD, scale.grad)
