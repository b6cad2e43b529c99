"""Full-resolution IoU: predictions on voxels are mapped back to every original point before scoring."""

import torch
from torchmetrics.classification import MulticlassJaccardIndex


class FullResolutionIoU(MulticlassJaccardIndex):
    """Per-class IoU (torchmetrics) over the original points, through the grid-sampling inverse.

    Classes absent from both prediction and ground truth are NaN and left out of the mean.
    """

    def __init__(self, num_classes: int, ignore_index: int = -1):
        super().__init__(num_classes, average="none", ignore_index=ignore_index, zero_division=float("nan"))

    def update_from_batch(self, logits: torch.Tensor, batch: dict) -> None:
        """logits (N_voxels, K); batch["inverse"] (N_full,), batch["origin_segment"] (N_full,)."""
        prediction = logits.argmax(dim=1)[batch["inverse"]]  # (N_full,)
        self.update(prediction, batch["origin_segment"])

    @staticmethod
    def mean(per_class: torch.Tensor) -> torch.Tensor:
        return per_class.nanmean()
