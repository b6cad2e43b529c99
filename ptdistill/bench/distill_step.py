"""Training-step time of stage 2 for each row of Table 7, and its ratio to `loss=kld`.

    python -m ptdistill.bench.distill_step [--steps 30] [--warmup 3] [--threads 2] [OVERRIDE ...]

The config is `python train.py experiment=demo loss=<row>` (the demo's tiny models, scans and
batch), so the issue's target, `topo+grad` at most 1.5x `kld` per step on this CPU, is read off
the last column. Extra Hydra overrides (e.g. `model=ptv3`) change every row alike.

A step is what Lightning's automatic optimization runs per batch: `training_step` (the teacher and
student forwards and every loss term), the backward, gradient clipping when the trainer config
sets it, and the optimizer step. The second table splits each row's median step into them: the
input level's serialization (shared by both models), the student and teacher forwards (their
pooled levels and kernel maps are built lazily inside), L_seg, each term, the backward (with
clipping) and the optimizer; a term's backward counts in the backward. The third table splits the two
terms into the work an exact L_topo and L_grad cannot skip: L_topo's TPS and its wait for the
diagrams (the persistence itself runs on the term's threads), and L_grad's two backwards from L_seg
to the tapped features (Eq. 4's ∂L_seg/∂F, one through each model's decoder). The rows take turns
batch by batch on the same batches, so that this machine's drifting speed (up to 1.5x from one minute
to the next) falls on every row alike; data loading is outside the timing. The teacher has random
weights: the step costs the same with trained ones.
"""

import argparse
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from unittest import mock

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from ptdistill.losses import saliency, topo
from ptdistill.modules.optim import configure_one_cycle
from ptdistill.topology.persistence import PendingDiagrams

ROOT = Path(__file__).resolve().parents[2]
ROWS = ("kld", "topo", "grad", "topo+grad")


def row_config(loss: str, overrides: list[str]) -> DictConfig:
    """`train.py experiment=demo loss=<loss> distill_start_epoch=0 OVERRIDES`, with outputs under
    outputs/bench. The timed steps are epoch 0's, and the demo distils only from epoch 6: without the
    override every row would time a step with no term on and no teacher."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", f"loss={loss}", "distill_start_epoch=0", *overrides])
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.output_dir = str(ROOT / "outputs" / "bench")
    return cfg


def _timed(seconds: dict[str, float], name: str, call: Callable) -> Callable:
    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = call(*args, **kwargs)
        seconds[name] += time.perf_counter() - start
        return out

    return timed


def _timed_channel_weights(seconds: dict[str, float], channel_weights: Callable) -> Callable:
    """`channel_weights`, its seconds counted as the student's or the teacher's backward. The teacher is
    frozen, so its first tap is a leaf made to require grad; every tap of the student has a grad_fn."""

    def timed(seg_loss: torch.Tensor, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        start = time.perf_counter()
        weights = channel_weights(seg_loss, feats)
        teacher = any(feat.is_leaf for feat in feats)
        seconds["∂L_seg/∂F_T" if teacher else "∂L_seg/∂F_S"] += time.perf_counter() - start
        return weights

    return timed


def training_step(cfg: DictConfig) -> Callable[[dict], dict[str, float]]:
    """One optimizer step of the config's stage-2 module on a batch, as Lightning runs it; it returns the
    seconds of its parts (see the module docstring), "step" the whole."""
    L.seed_everything(cfg.seed, verbose=False)
    module = instantiate(cfg.stage.module).train()
    optimizer = configure_one_cycle(module.model, instantiate(cfg.optimizer), None, cfg.block_lr_scale, 1)["optimizer"]
    clip = cfg.trainer.get("gradient_clip_val")
    seconds: dict[str, float] = defaultdict(float)
    # Instance attributes shadow the methods that nn.Module.__call__ and distill_step look up.
    module.model.structure = _timed(seconds, "structure", module.model.structure)
    parts = {"student forward": module.model, "L_seg": module.criterion}  # a stage-1 module has no teacher
    if hasattr(module, "teacher"):
        parts |= {"teacher forward": module.teacher} | {f"L_{name}": term for name, term in module.terms.items()}
    for name, part in parts.items():
        part.forward = _timed(seconds, name, part.forward)

    def step(batch: dict) -> dict[str, float]:
        seconds.clear()
        start = time.perf_counter()
        optimizer.zero_grad()
        with (  # the parts inside the terms are module functions, timed while this row's step runs
            mock.patch.object(saliency, "channel_weights", _timed_channel_weights(seconds, saliency.channel_weights)),
            mock.patch.object(topo, "tps", _timed(seconds, "TPS", topo.tps)),
            mock.patch.object(PendingDiagrams, "result", _timed(seconds, "persistence wait", PendingDiagrams.result)),
        ):
            loss = module.training_step(batch, 0)
        if loss is not None:  # every term non-finite: Lightning skips the step
            _timed(seconds, "backward", loss.backward)()
            if clip:
                _timed(seconds, "backward", torch.nn.utils.clip_grad_norm_)(module.model.parameters(), clip)
            _timed(seconds, "optimizer", optimizer.step)()
        return dict(seconds, step=time.perf_counter() - start)

    return step


def step_seconds(rows: list[str], overrides: list[str], steps: int, warmup: int) -> dict[str, list[dict]]:
    """The timed parts of every training step of each row, after `warmup` steps, the rows taking turns on
    each batch."""
    configs = {loss: row_config(loss, overrides) for loss in rows}
    steppers = {loss: training_step(cfg) for loss, cfg in configs.items()}
    datamodule = instantiate(next(iter(configs.values())).dataset.datamodule)
    datamodule.prepare_data()  # a fresh clone generates the synthetic scans here
    datamodule.setup("fit")
    seconds = {loss: [] for loss in rows}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer: nothing is logged
        for i, batch in enumerate(islice(datamodule.train_dataloader(), warmup + steps)):
            for loss, step in steppers.items():
                parts = step(batch)
                if i >= warmup:
                    seconds[loss].append(parts)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    parts = step_seconds(args.rows, args.overrides, args.steps, args.warmup)
    times = {loss: [p["step"] for p in steps] for loss, steps in parts.items()}
    base = statistics.median(times["kld"]) if "kld" in times else None
    print(f"\nStage-2 step time, experiment=demo {' '.join(args.overrides)} ({args.steps} batches, rows in turn, "
          f"{args.threads} threads)\n")
    print("| loss | mean (s) | median (s) | median / kld |")
    print("|---|---|---|---|")
    for loss, seconds in times.items():
        ratio = f"{statistics.median(seconds) / base:.2f}x" if base else "n/a"
        print(f"| {loss} | {statistics.mean(seconds):.3f} | {statistics.median(seconds):.3f} | {ratio} |")

    names = ["structure", "student forward", "teacher forward", "L_seg", "L_kd", "L_topo", "L_grad", "backward",
             "optimizer"]
    print("\nWhere a step's time goes: median seconds of each part (a term's backward counts in backward)\n")
    print("| loss | " + " | ".join(names) + " | other | step |")
    print("|---|" + "---|" * (len(names) + 2))
    for loss, steps in parts.items():
        median = {name: statistics.median(p.get(name, 0.0) for p in steps) for name in [*names, "step"]}
        other = median["step"] - sum(median[name] for name in names)
        cells = [f"{median[name]:.3f}" if any(name in p for p in steps) else "—" for name in names]
        print(f"| {loss} | " + " | ".join(cells) + f" | {other:.3f} | {median['step']:.3f} |")

    term_parts = ["L_topo", "TPS", "persistence wait", "L_grad", "∂L_seg/∂F_S", "∂L_seg/∂F_T"]
    rows = {loss: steps for loss, steps in parts.items() if any("L_topo" in p or "L_grad" in p for p in steps)}
    if rows:
        print("\nInside the terms: median seconds of L_topo and L_grad and of the work they cannot skip\n")
        print("| loss | " + " | ".join(term_parts) + " |")
        print("|---|" + "---|" * len(term_parts))
        for loss, steps in rows.items():
            median = {name: statistics.median(p.get(name, 0.0) for p in steps) for name in term_parts}
            cells = [f"{median[name]:.3f}" if any(name in p for p in steps) else "—" for name in term_parts]
            print(f"| {loss} | " + " | ".join(cells) + " |")
        for loss, steps in rows.items():
            if base and "∂L_seg/∂F_T" in steps[0]:
                backwards = statistics.median(p["∂L_seg/∂F_S"] + p["∂L_seg/∂F_T"] for p in steps)
                print(f"{loss}: Eq. 4's two backwards alone take {backwards:.3f} s, "
                      f"{backwards / base:.0%} of a kld step")


if __name__ == "__main__":
    main()
