"""mIoU and per-class IoU on the original points (the caller maps voxel predictions back first)."""

import torch
from torchmetrics.classification import MulticlassJaccardIndex


class FullResolutionIoU(MulticlassJaccardIndex):
    """Per-class IoU (torchmetrics) of full-resolution predictions, with the ignore index.

    Classes absent from both prediction and ground truth are NaN and left out of the mean.
    """

    def __init__(self, num_classes: int, ignore_index: int = -1):
        super().__init__(num_classes, average="none", ignore_index=ignore_index, zero_division=float("nan"))

    @staticmethod
    def mean(per_class: torch.Tensor) -> torch.Tensor:
        return per_class.nanmean()
