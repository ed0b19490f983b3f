"""The query batcher: concurrent searches share encoder passes, each gets its own row."""

import threading
import time

import pytest
import torch

from mmrec.serving.batching import QueryBatcher


def test_concurrent_calls_are_batched_and_each_gets_its_own_row():
    sizes = []

    def encode(values: list[int]) -> torch.Tensor:
        sizes.append(len(values))
        time.sleep(0.05)  # an encoder pass: the other callers arrive meanwhile
        return torch.tensor(values, dtype=torch.float32).unsqueeze(1) * 10

    batcher = QueryBatcher(encode, max_batch=8)
    results, barrier = {}, threading.Barrier(20)

    def call(value: int) -> None:
        barrier.wait()
        results[value] = float(batcher.embed(value)[0])

    threads = [threading.Thread(target=call, args=(v,)) for v in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {v: 10.0 * v for v in range(20)}
    assert sum(sizes) == 20 and max(sizes) > 1 and max(sizes) <= 8 and len(sizes) < 20
    assert float(batcher.embed(3)[0]) == 30.0 and sizes[-1] == 1  # a lone call runs at once, alone


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_call_runs():
    calls = []

    def encode(values: list[str]) -> torch.Tensor:
        calls.append(values)
        if "bad" in values:
            raise ValueError("cannot encode")
        return torch.ones(len(values), 2)

    batcher = QueryBatcher(encode)
    with pytest.raises(ValueError, match="cannot encode"):
        batcher.embed("bad")
    assert batcher.embed("good").tolist() == [1.0, 1.0] and calls[-1] == ["good"]
