"""The no-KD student trained in a child process beside the teacher and the KD student (`stage.baseline_alongside`).

A PTv3 training step is many small gather, scatter and sort ops that scale poorly across threads: on the
2-core CPU, the demo's teacher and KD student side by side on one thread each do 2.04 steps/s, one of them
alone on two threads 1.04 (`python -m ptdistill.bench.threads`). So two runs side by side finish far
sooner than one after the other. The child is `train.py stage=student` with this run's
overrides, in `<run>/student`, on half the threads; this process takes the rest, and all of them back as
soon as the child ends (at the next epoch). The dataset is prepared (generated) before the child starts.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig

log = logging.getLogger(__name__)

TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"


class SideRun:
    """One `train.py` child run of another stage, started now; `join()` waits for its metrics."""

    def __init__(self, stage: str):
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("stage=", "stage."))]
        self.folder = Path(HydraConfig.get().runtime.output_dir) / stage
        self.folder.mkdir(parents=True, exist_ok=True)
        self.threads = torch.get_num_threads()
        child_threads = max(1, self.threads // 2)
        args = [sys.executable, str(TRAIN_SCRIPT), *overrides, f"stage={stage}", f"hydra.run.dir={self.folder}"]
        self.output = self.folder / "stdout.log"
        with self.output.open("w") as out:
            self.process = subprocess.Popen(args, env=os.environ | {"OMP_NUM_THREADS": str(child_threads)},
                                            stdout=out, stderr=subprocess.STDOUT)
        torch.set_num_threads(max(1, self.threads - child_threads))
        log.info("stage=%s trains beside this run in a child process (%d of %d threads; output: %s)",
                 stage, child_threads, self.threads, self.output)

    def reclaim_threads(self) -> bool:
        """Give this process every thread again once the child has ended; whether it has. A failed child
        stops this run too, at once rather than at the end."""
        if self.process.poll() is None:
            return False
        if self.process.returncode != 0:
            raise RuntimeError(f"the child run in {self.folder} failed (exit {self.process.returncode}); "
                               f"its output: {self.output}")
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
            log.info("The child run ended: this run is back on %d threads", self.threads)
        return True

    def __enter__(self) -> "SideRun":
        return self

    def __exit__(self, *error) -> None:
        """Stop the child when this run ends without joining it (an error, Ctrl-C)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()

    def join(self) -> dict:
        """The child's metrics.json (val/mIoU, test/mIoU when run, checkpoint); raises if it failed."""
        self.process.wait()
        self.reclaim_threads()
        return json.loads((self.folder / "metrics.json").read_text())


class ReclaimThreads(L.Callback):
    """Checks at every epoch start whether the side run has ended, to take its threads back."""

    def __init__(self, side_run: SideRun):
        self.side_run = side_run

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.side_run.reclaim_threads()
