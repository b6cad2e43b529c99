"""Torch's intra-op threads follow the cores that other processes leave free.

Beside one busy process on a 2-core machine, no OpenMP spin count kept a two-thread run near its quiet
speed on every CPU: the forward ran 1.7-3.1x slower than quiet, training steps 1.4-5x, as each parallel
region waits for the thread that shares a core with the neighbour (`python -m ptdistill.bench.threads
--tables 3`). One thread lost little (1.0-1.3x). So before each batch, at most once per `interval_s`,
this callback measures the cores the others kept busy (`CoreShare`; data-loader workers count as others,
so training threads stop fighting the loader) and sets torch's threads to the rest, back up to
`max_threads` once they are free again. A change is logged, and `train/threads` every step.

The thread count can change a kernel's reduction order, so a run whose count changed is not bit-for-bit
reproducible. So `trainer.deterministic=true` keeps the count fixed, and one-thread runs never change.
"""

import logging
import os

import lightning as L
import torch

from ptdistill.thread_policy import CoreShare, free_threads, usable_cpus

log = logging.getLogger(__name__)


class AdaptiveThreads(L.Callback):
    def __init__(self, max_threads: int | None = None, interval_s: float = 1.0, busy_fraction: float = 0.3,
                 core_share: CoreShare | None = None):
        """max_threads: the most threads to use; None: OMP_NUM_THREADS when set (a child run's share), else
        one per core of this process's CPU set."""
        if not 0 < busy_fraction <= 1:
            raise ValueError(f"busy_fraction must be in (0, 1], got {busy_fraction}")
        self.cores = len(usable_cpus())
        self.max_threads = max_threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or self.cores
        self.interval_s = interval_s
        self.busy_fraction = busy_fraction
        try:
            self.core_share = core_share or CoreShare()
        except OSError as error:  # no /proc/stat: not Linux
            log.warning("Adaptive threads are off: the CPUs' busy time cannot be read (%s)", error)
            self.core_share = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.core_share is not None and torch.are_deterministic_algorithms_enabled():
            log.info("Adaptive threads are off: trainer.deterministic keeps %d threads", torch.get_num_threads())
            self.core_share = None

    def update(self) -> int:
        """Set torch's threads for the cores the others left free since the last decision; the thread count."""
        threads = torch.get_num_threads()
        if self.core_share is None:
            return threads
        others = self.core_share.others(min_seconds=self.interval_s)
        if others is None:  # too short a window to tell: it stays open over the next batches
            return threads
        chosen = free_threads(others, self.cores, self.max_threads, self.busy_fraction)
        if chosen != threads:
            torch.set_num_threads(chosen)
            log.info("Adaptive threads: %d -> %d (other processes kept %.2f of %d cores busy)",
                     threads, chosen, others, self.cores)
        return chosen

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.update()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("train/threads", float(torch.get_num_threads()), on_step=True, on_epoch=False, batch_size=1)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.update()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.update()

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.update()
