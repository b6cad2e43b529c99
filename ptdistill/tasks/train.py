"""What `train.py` runs: stage 1 (teacher or no-KD student) and stage 2 (distillation, Eq. 8).

A stage-2 run needs a teacher. Without `stage.teacher_checkpoint`, the teacher trained earlier for the
same dataset and teacher config is reused from `paths.teacher_dir`, or trained first (and logged).
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import lightning as L
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from ptdistill.checkpoint_io import load_checkpoint
from ptdistill.tasks.side_run import ReclaimThreads, SideRun

log = logging.getLogger(__name__)


def teacher_home(cfg: DictConfig) -> Path:
    """Registry folder of the teacher for this dataset, teacher architecture and training recipe (epochs,
    optimizer, schedule, L_seg): a teacher trained otherwise is not reused in its place."""

    def resolved(node):  # a config node as plain data; a leaf (a null scheduler, a number) as it is
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    key = {
        "dataset": resolved(cfg.dataset),
        "teacher": resolved(cfg.model.teacher),
        "epochs": cfg.teacher_epochs,
        **{name: resolved(cfg[name]) for name in ("optimizer", "scheduler", "block_lr_scale")},
        "seg": resolved(cfg.loss.seg),
    }
    for name in ("datamodule", "tta"):  # loader and test-time settings do not change the teacher
        key["dataset"].pop(name, None)
    key["teacher"].pop("checkpoint", None)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.paths.teacher_dir) / f"{cfg.dataset.name}-{digest}"


def fit(cfg: DictConfig, extra_callbacks: tuple[L.Callback, ...] = ()) -> dict:
    """Train the module that `cfg.stage` describes; return its best val mIoU and checkpoint, and with `cfg.test`
    its test mIoU and per-class test IoUs (`test/IoU/<class>`)."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset.datamodule)
    module = instantiate(cfg.stage.module)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] + list(extra_callbacks)
    loggers = [instantiate(c) for c in cfg.logger.values()]
    trainer = instantiate(cfg.trainer, max_epochs=cfg.stage.max_epochs, callbacks=callbacks, logger=loggers)
    trainer.fit(module, datamodule=datamodule, ckpt_path=_resume_path(cfg))
    checkpoint = trainer.checkpoint_callback
    result = {
        "val/mIoU": best_score(checkpoint, trainer.callback_metrics.get(cfg.optimized_metric)),
        "checkpoint": checkpoint.best_model_path or checkpoint.last_model_path or _save_final(cfg, trainer),
        "skipped_samples": datamodule.num_skipped,
    }
    if result["skipped_samples"]:
        log.warning("%d bad samples were skipped (skip_bad is on); see the warnings above", result["skipped_samples"])
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=result["checkpoint"])
        result["test/mIoU"] = float(trainer.callback_metrics["test/mIoU"])
        result |= {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/IoU/")}
    if cfg.stage.name == "teacher" and trainer.is_global_zero and not trainer.fast_dev_run:
        _register_teacher(cfg, result)
    return result


def best_score(checkpoint: ModelCheckpoint, last_logged: torch.Tensor | None) -> float:
    """The best monitored score of a run. Lightning's spawn launcher sends the best checkpoint's path back
    from DDP children but not its score, so then it is read from the callback state saved with that
    checkpoint; a run with no checkpoint has only its `last_logged` value (NaN when none)."""
    if checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    if checkpoint.best_model_path:
        state = load_checkpoint(checkpoint.best_model_path)["callbacks"][checkpoint.state_key]
        return float(state["best_model_score"])
    return float("nan") if last_logged is None else float(last_logged)


def _save_final(cfg: DictConfig, trainer: L.Trainer) -> str:
    """The final weights of a run that stopped before its first checkpoint (max_steps, fast_dev_run)."""
    path = Path(cfg.paths.output_dir) / "checkpoints" / "final.ckpt"
    trainer.save_checkpoint(path)
    log.warning("The run stopped before its first checkpoint (no validation ran); saved its final weights "
                "to %s", path)
    return str(path)


def _resume_path(cfg: DictConfig) -> str | None:
    if cfg.ckpt_path == "last":
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return str(path) if path.exists() else None
    return cfg.ckpt_path


def _mious(result: dict) -> dict:
    """The mIoU entries of a run's result: val/mIoU, and test/mIoU when it was tested."""
    return {key: value for key, value in result.items() if key.endswith("mIoU")}


def _register_teacher(cfg: DictConfig, result: dict) -> None:
    home = teacher_home(cfg)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result["checkpoint"], home / "teacher.ckpt")
    (home / "teacher.json").write_text(json.dumps(_mious(result) | {"source": result["checkpoint"]}))
    log.info("Registered the teacher (val mIoU %.4f) at %s", result["val/mIoU"], home / "teacher.ckpt")


def _compose_stage(stage: str, run_name: str) -> DictConfig:
    """The current run's config with another stage, in a sub-folder of this run's output folder."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("stage=", "stage."))]
    cfg = compose("train", overrides=[*overrides, f"stage={stage}"], return_hydra_config=True)
    with open_dict(cfg):
        output_dir = Path(HydraConfig.get().runtime.output_dir) / run_name
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


def resolve_teacher(cfg: DictConfig, extra_callbacks: tuple[L.Callback, ...] = ()) -> tuple[str, dict]:
    """The teacher checkpoint of a distillation run, trained first when there is none, and its mIoU scores
    (val/mIoU, and test/mIoU when it was tested; none for a checkpoint given by path)."""
    if cfg.stage.teacher_checkpoint:
        return cfg.stage.teacher_checkpoint, {}
    home = teacher_home(cfg)
    if not (home / "teacher.ckpt").exists():
        log.info("No stage-1 teacher for dataset=%s at %s: training the teacher first.", cfg.dataset.name, home)
        result = fit(_compose_stage("teacher", "teacher"), extra_callbacks)
        if not (home / "teacher.ckpt").exists():  # a debug run (fast_dev_run) registers no teacher
            return result["checkpoint"], _mious(result)
    else:
        log.info("Reusing the stage-1 teacher at %s", home / "teacher.ckpt")
    metrics = json.loads((home / "teacher.json").read_text())
    return str(home / "teacher.ckpt"), _mious(metrics)


def train(cfg: DictConfig) -> float:
    """Run the configured stage; return the metric that sweeps optimise. Writes the run's metrics.json."""
    if cfg.stage.name != "distill":
        result = fit(cfg)
        _write_metrics(cfg, cfg.stage.name, result, rows=None)
        return result["val/mIoU"]
    side_run = None
    if cfg.stage.baseline and cfg.stage.baseline_alongside:
        instantiate(cfg.dataset.datamodule).prepare_data()  # generated once, before two processes read it
        side_run = SideRun("student")
    with side_run or contextlib.nullcontext():
        reclaim = (ReclaimThreads(side_run),) if side_run else ()
        teacher_checkpoint, teacher_scores = resolve_teacher(cfg, reclaim)
        rows = {"teacher": teacher_scores}
        if cfg.stage.baseline and not side_run:
            rows["student (no KD)"] = fit(_compose_stage("student", "student"))
        with open_dict(cfg):
            cfg.model.teacher.checkpoint = teacher_checkpoint
        student = fit(cfg, reclaim)
        if side_run:
            rows["student (no KD)"] = side_run.join()
    rows[f"student (KD, loss={cfg.loss.name})"] = student
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        print(comparison_table(rows))
    rows = {name: _mious(result) for name, result in rows.items()}
    _write_metrics(cfg, cfg.loss.name, student, rows)
    return student["val/mIoU"]


def _write_metrics(cfg: DictConfig, row: str, result: dict, rows: dict | None) -> None:
    """<output_dir>/metrics.json, what `ptdistill.tasks.report` collects: `loss` names the Table 7 row, or the
    stage (`student`: the no-KD baseline; `teacher`) of a stage-1 run."""
    if int(os.environ.get("LOCAL_RANK", 0)) != 0:
        return
    summary = {"dataset": cfg.dataset.name, "loss": row, "seed": cfg.seed, "stage": cfg.stage.name}
    summary |= {key: value for key, value in result.items() if key != "checkpoint"}
    summary |= {"checkpoint": result["checkpoint"], "rows": rows}
    (Path(cfg.paths.output_dir) / "metrics.json").write_text(json.dumps(summary))


def comparison_table(rows: dict[str, dict]) -> str:
    """Markdown: val (and test, when run) mIoU of each model, then the KD student minus the no-KD one."""
    metrics = [m for m in ("val/mIoU", "test/mIoU") if any(r.get(m) is not None for r in rows.values())]

    def cell(value) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    lines = ["| model | " + " | ".join(m.replace("/", " ") for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += [f"| {name} | " + " | ".join(cell(r.get(m)) for m in metrics) + " |" for name, r in rows.items()]
    kd = [name for name in rows if name.startswith("student (KD")]
    if "student (no KD)" in rows and kd:
        base, student = rows["student (no KD)"], rows[kd[0]]
        diffs = [f"{100 * (student[m] - base[m]):+.2f}" if student.get(m) is not None and base.get(m) is not None
                 else "n/a" for m in metrics]
        lines.append("| KD − no KD | " + " | ".join(diffs) + " |")
    return "\n".join(lines)
