"""A callback that SIGKILLs its own training process after a given optimiser step (for resume tests)."""

import os
import signal

import lightning as L


class KillAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no final checkpoint: as a crash or an OOM kill
