"""`evaluate.py task=iou`: the per-class IoU table of a trained model, like the paper's Tables 1-2."""

import csv
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from ptdistill.checkpoint_io import checkpoint_model, trained_grid_size
from ptdistill.data.submission import PredictionWriter
from ptdistill.errors import UserError
from ptdistill.modules.segmentation import SegmentationModule

log = logging.getLogger(__name__)


def module_from_checkpoint(path: str | Path) -> SegmentationModule:
    """The trained model in a stage-1 module, teacher-free, in eval mode."""
    _, weights, hparams = checkpoint_model(path)
    module = SegmentationModule(
        model=hparams["model"],
        criterion=hparams["criterion"],
        optimizer=hparams["optimizer"],
        scheduler=hparams["scheduler"],
        num_classes=hparams["num_classes"],
        class_names=hparams["class_names"],
        ignore_index=hparams["ignore_index"],
        grid_size=hparams.get("grid_size"),  # absent from checkpoints made before it was recorded
    )
    module.model.load_state_dict(weights)
    return module.eval()


def iou_table(metrics: dict, class_names: list[str], stage: str) -> list[tuple[str, float]]:
    rows = [(name, float(metrics[f"{stage}/IoU/{name}"])) for name in class_names]
    return [*rows, ("mIoU", float(metrics[f"{stage}/mIoU"]))]


def format_table(rows: list[tuple[str, float]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [f"{'class':<{width}}  IoU (%)", f"{'-' * width}  -------"]
    lines += [f"{name:<{width}}  {100 * value:7.2f}" for name, value in rows]
    return "\n".join(lines)


def prediction_writers(cfg: DictConfig) -> list[PredictionWriter]:
    """The callback that saves predictions in the benchmark's submission format, when asked to."""
    if not cfg.save_predictions:
        return []
    if "submission" not in cfg.dataset:
        raise UserError(f"save_predictions: dataset={cfg.dataset.name} has no submission format (dataset.submission)")
    log.info("Writing predictions in %s's submission format to %s", cfg.dataset.name, cfg.predictions_dir)
    return [PredictionWriter(instantiate(cfg.dataset.submission), cfg.predictions_dir)]


def evaluate_iou(cfg: DictConfig) -> list[tuple[str, float]]:
    if not cfg.ckpt_path:
        raise UserError("evaluate.py task=iou needs ckpt_path=PATH (a train.py checkpoint)")
    module = module_from_checkpoint(cfg.ckpt_path)
    if module.hparams.num_classes != cfg.dataset.num_classes:
        raise UserError(
            f"checkpoint {cfg.ckpt_path} predicts {module.hparams.num_classes} classes, "
            f"dataset={cfg.dataset.name} has {cfg.dataset.num_classes}"
        )
    # The scans are voxelised at the grid the model was trained at (the transforms read dataset.grid_size).
    cfg.dataset.grid_size = trained_grid_size(module.hparams, cfg.dataset.grid_size, cfg.ckpt_path)
    datamodule = instantiate(cfg.dataset.datamodule)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=prediction_writers(cfg))
    if cfg.split == "val":
        trainer.validate(module, datamodule=datamodule)
    elif cfg.split == "test":
        trainer.test(module, datamodule=datamodule)
    else:
        raise UserError(f"split must be val or test, got {cfg.split!r}")
    rows = iou_table(trainer.callback_metrics, list(cfg.dataset.class_names), cfg.split)
    print(format_table(rows))
    out = Path(cfg.paths.output_dir) / f"iou_{cfg.dataset.name}_{cfg.split}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        csv.writer(f).writerows([("class", "iou"), *rows])
    log.info("Wrote %s", out)
    return rows
