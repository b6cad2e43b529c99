"""Which input point, sample and cell each row stands for: what the model's taps and the losses share.

A collated batch concatenates B samples (`offset` (B,) ends each one's rows); a `Tap` maps a stage's
features back to the input points.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Tap:
    """Features of one stage, mapped back to the input points by `feat[index]`."""

    feat: Tensor  # (N_l, C_l), on the autograd path to the logits
    index: Tensor  # (N,) row of `feat` for every input point

    def per_point(self) -> Tensor:
        """(N, C_l), row-aligned with the input points."""
        return self.feat[self.index]


def sample_index(offset: Tensor) -> Tensor:
    """(N,) the sample of every row of a batch whose B samples end at rows `offset` (B,)."""
    counts = offset.diff(prepend=offset.new_zeros(1))  # (B,)
    return torch.repeat_interleave(torch.arange(len(offset), device=offset.device), counts)


def one_point_per_cell(taps: Sequence[Tap], offset: Tensor) -> tuple[Tensor, Tensor]:
    """One input point for each cell that the taps' levels share, and the (B,) offset of those points.

    The input points of one cell (same row in every tap) carry identical tapped features, so they are
    one point of a feature cloud. `offset` (B,) ends each sample's input rows; the chosen points come
    sample by sample, so the returned offset ends each sample's cells. Returns (points (N_cells,), offset).
    """
    sample = sample_index(offset)  # (N,)
    key = sample
    for tap in taps:
        key = key * len(tap.feat) + tap.index  # (N,) the cell of every input point, sample first
    _, cell = torch.unique(key, sorted=True, return_inverse=True)
    points = cell.new_empty(int(cell.max()) + 1).scatter_(0, cell, torch.arange(len(cell), device=cell.device))
    return points, torch.bincount(sample[points], minlength=len(offset)).cumsum(0)
