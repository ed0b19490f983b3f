"""Concurrent calls of a batched function run as one batch (search queries through the text encoder)."""

from __future__ import annotations

import threading

import torch


class QueryBatcher:
    """Runs concurrent calls of a batched function as one batch. A caller that finds no batch running
    runs one itself, over every input waiting (its own and any that arrive meanwhile), until none is
    left; the others wait for their row. A lone call waits for nothing; under load, one encoder pass
    serves many queries instead of one each."""

    def __init__(self, fn, max_batch: int = 64):
        self.fn, self.max_batch = fn, max_batch
        self.lock = threading.Lock()
        self.waiting: list[tuple[object, dict]] = []
        self.running = False

    def embed(self, value) -> torch.Tensor:
        slot = {"done": threading.Event()}
        with self.lock:
            self.waiting.append((value, slot))
            lead = not self.running
            self.running = self.running or lead
        if lead:
            self._run()
        slot["done"].wait()
        if "error" in slot:
            raise slot["error"]
        return slot["row"]

    def _run(self) -> None:
        while True:
            with self.lock:
                batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
                if not batch:
                    self.running = False
                    return
            try:
                rows = self.fn([value for value, _ in batch])
                for (_, slot), row in zip(batch, rows):
                    slot["row"] = row
            except Exception as err:  # every caller of this batch gets the error, none waits forever
                for _, slot in batch:
                    slot["error"] = err
            for _, slot in batch:
                slot["done"].set()
