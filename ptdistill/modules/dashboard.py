"""W&B dashboard media: persistence diagrams, bird's-eye predictions and the per-class IoU table.

Active only with a `WandbLogger` (`logger=wandb`); scalars (loss terms, lr, mIoU) are logged by the
modules and `LearningRateMonitor` for every logger.
"""

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from ptdistill.viz.bev import bev_image, side_by_side
from ptdistill.viz.persistence import plot_diagrams


class DashboardCallback(L.Callback):
    def __init__(self, diagrams_every_n_steps: int = 200, bev_extent: float = 40.0):
        self.diagrams_every_n_steps = diagrams_every_n_steps
        self.bev_extent = bev_extent

    @staticmethod
    def _wandb(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        wandb = self._wandb(trainer)
        if wandb is None or not hasattr(pl_module, "persistence_diagrams"):
            return
        if trainer.global_step % self.diagrams_every_n_steps or not trainer.is_global_zero:
            return
        diagrams = pl_module.persistence_diagrams()
        if diagrams is not None:
            teacher, student, dims = diagrams
            wandb.log_image("topology/diagrams", [plot_diagrams(teacher, student, dims)], step=trainer.global_step)

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        wandb = self._wandb(trainer)
        if wandb is None or batch_idx != 0 or not trainer.is_global_zero:
            return
        first = slice(0, int(batch["offset"][0]))  # the batch's first scan
        coord = batch["coord"][first].cpu().numpy()
        panels = {"ground truth": batch["segment"][first]}
        if hasattr(pl_module, "teacher"):
            panels["teacher"] = pl_module.teacher(batch)["logits"].argmax(1)[first]
        panels["prediction"] = pl_module.model(batch)["logits"].argmax(1)[first]
        images = [bev_image(coord, labels.cpu().numpy(), self.bev_extent) for labels in panels.values()]
        wandb.log_image("val/bev", [side_by_side(images)], caption=[" | ".join(panels)], step=trainer.global_step)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        wandb = self._wandb(trainer)
        if wandb is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        names = pl_module.hparams.class_names
        metrics = trainer.callback_metrics
        rows = [[name, float(metrics.get(f"val/IoU/{name}", np.nan))] for name in names]
        wandb.log_table("val/per_class_iou", columns=["class", "IoU"], data=rows, step=trainer.global_step)
