"""Lightning callbacks of the trainer: a resumable training state saved every N LM steps, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L

from s3attn.paths import kill_point


class PeriodicCheckpoint(L.Callback):
    """Save the full training state (SAEs, Adam, buffers, RNG, data position) every ``every`` LM steps.

    Written to ``<path>.tmp`` and renamed, so a kill never leaves a half-written state behind.
    """

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), max(1, every)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = int(pl_module.lm_steps)
        if step % self.every == 0:
            tmp = str(self.path) + ".tmp"
            trainer.save_checkpoint(tmp, weights_only=False)  # the full resumable state
            kill_point("state-tmp", step)  # test-only hooks (s3attn.paths.kill_point)
            if trainer.global_rank == 0:
                os.replace(tmp, self.path)
        kill_point("step", step)
