"""Training-step time of stage 2 for each row of Table 7, and its ratio to `loss=kld`.

    python -m ptdistill.bench.distill_step [--steps 20] [--warmup 3] [--repeats 3] [--threads 2] [OVERRIDE ...]

The config is `python train.py experiment=demo loss=<row>` (the demo's tiny models, scans and
batch), so the issue's target, `topo+grad` at most 1.5x `kld` per step on this CPU, is read off
the last column. Extra Hydra overrides (e.g. `model=ptv3`) change every row alike. A step is one
optimizer step as Lightning runs it: the teacher and student forwards, every loss term, the
backward and AdamW, timed from `on_train_batch_start` to `on_train_batch_end`; data loading is
outside it, but its worker process shares the CPU, as in `make train`. The rows run in turn,
`repeats` times, and each row's steps are pooled, so a slow spell of the machine is shared among
the rows. The teacher has random weights: the step costs the same with trained ones.
"""

import argparse
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[2]
ROWS = ("kld", "topo", "grad", "topo+grad")


class StepTimer(L.Callback):
    """Wall time of each training step (forward, losses, backward, optimizer)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds.append(time.perf_counter() - self._start)


def step_seconds(loss: str, overrides: list[str], steps: int, warmup: int) -> list[float]:
    """Seconds per training step of `train.py experiment=demo loss=<loss>`, after `warmup` steps."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", f"loss={loss}", *overrides])
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.output_dir = str(ROOT / "outputs" / "bench")
    L.seed_everything(cfg.seed)
    timer = StepTimer()
    trainer = instantiate(cfg.trainer, max_steps=warmup + steps, limit_val_batches=0, logger=False, callbacks=[timer],
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(instantiate(cfg.stage.module), datamodule=instantiate(cfg.dataset.datamodule))
    return timer.seconds[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    times = {loss: [] for loss in args.rows}
    for _ in range(args.repeats):
        for loss in args.rows:
            times[loss] += step_seconds(loss, args.overrides, args.steps, args.warmup)
    base = statistics.median(times["kld"]) if "kld" in times else None
    print(f"\nStage-2 step time, experiment=demo {' '.join(args.overrides)} ({args.repeats} x {args.steps} steps, "
          f"{args.threads} threads)\n")
    print("| loss | mean (s) | median (s) | median / kld |")
    print("|---|---|---|---|")
    for loss, seconds in times.items():
        ratio = f"{statistics.median(seconds) / base:.2f}x" if base else "n/a"
        print(f"| {loss} | {statistics.mean(seconds):.3f} | {statistics.median(seconds):.3f} | {ratio} |")


if __name__ == "__main__":
    main()
