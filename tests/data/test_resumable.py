"""EpochSampler: DistributedSampler's order, handed out in chunks, resumable mid-epoch."""

import pytest
from torch.utils.data import DistributedSampler

import mmrec.data.resumable as resumable


@pytest.mark.parametrize("size,world,drop_last", [(1, 2, False), (7, 3, False), (7, 3, True), (1000, 2, False)])
def test_epoch_sampler_keeps_distributed_samplers_order(size, world, drop_last, monkeypatch):
    """EpochSampler hands out DistributedSampler's indices (same seed, epoch, rank shard, padding)
    a chunk at a time, and skips the batches a resumed epoch already trained on (asked once, at the
    first iteration)."""
    monkeypatch.setattr(resumable, "CHUNK", 3)  # several chunks even for small sizes
    for rank in range(world):
        monkeypatch.setattr(resumable, "rank_and_world", lambda rank=rank: (rank, world))
        mine = resumable.EpochSampler(size, seed=11, batch_size=2, drop_last=drop_last, resume=lambda: (3, 1))
        reference = DistributedSampler(range(size), num_replicas=world, rank=rank, seed=11, drop_last=drop_last)
        for epoch in (3, 4):
            mine.set_epoch(epoch), reference.set_epoch(epoch)
            expected = list(reference)[2:] if epoch == 3 else list(reference)  # epoch 3 resumes after 1 batch
            assert list(mine) == [(i, epoch) for i in expected]
