"""Stage 1: train one PTv3 segmenter with L_seg (the teacher, or the no-KD student baseline)."""

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate

from ptdistill.modules.metrics import FullResolutionIoU
from ptdistill.modules.optim import configure_one_cycle
from ptdistill.scoring import full_resolution_scores


class SegmentationModule(L.LightningModule):
    """Trains `model` on ground truth; validates mIoU on the full-resolution points.

    Every constructor argument is a plain config (dicts with `_target_`), so the checkpoint alone
    rebuilds the module: `SegmentationModule.load_from_checkpoint(path)`.
    """

    def __init__(
        self,
        model: dict,
        criterion: dict,
        optimizer: dict,
        scheduler: dict | None,
        num_classes: int,
        class_names: list[str],
        ignore_index: int = -1,
        block_lr_scale: float = 0.1,
        grid_size: float | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # grid_size: the voxel size (m) of training, for export
        self.model = instantiate(model)
        self.criterion = instantiate(criterion)
        self.val_iou = FullResolutionIoU(num_classes, ignore_index)
        self.test_iou = FullResolutionIoU(num_classes, ignore_index)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(batch)["logits"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.criterion(self(batch), batch["segment"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["offset"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, self.val_iou, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, self.test_iou, "test")

    def _evaluate(self, batch: dict, iou: FullResolutionIoU, stage: str) -> torch.Tensor:
        """The predicted class (N_full,) of every original point, softmax summed over any TTA views."""
        logits = self(batch)  # (N, K), the voxels of every view
        loss = self.criterion(logits, batch["segment"])
        self.log(f"{stage}/loss", loss, batch_size=len(batch["name"]), sync_dist=True)  # the mean over all ranks
        prediction = full_resolution_scores(logits, batch["inverse"]).argmax(dim=1)  # (N_full,)
        iou.update(prediction, batch["origin_segment"])
        return prediction

    def on_validation_epoch_end(self) -> None:
        self._log_iou(self.val_iou, "val")

    def on_test_epoch_end(self) -> None:
        self._log_iou(self.test_iou, "test")

    def _log_iou(self, iou: FullResolutionIoU, stage: str) -> None:
        per_class = iou.compute()  # (K,)
        iou.reset()
        # The IoU is synced across ranks already; sync_dist averages their equal values, which changes nothing
        # but tells Lightning that they are global (it warns otherwise).
        self.log(f"{stage}/mIoU", FullResolutionIoU.mean(per_class), prog_bar=True, sync_dist=True)
        for name, value in zip(self.hparams.class_names, per_class):
            self.log(f"{stage}/IoU/{name}", value, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_one_cycle(
            self.model,
            instantiate(self.hparams.optimizer),
            instantiate(self.hparams.scheduler) if self.hparams.scheduler else None,
            self.hparams.block_lr_scale,
            self.trainer.estimated_stepping_batches,
        )
