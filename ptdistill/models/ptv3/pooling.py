"""Serialized pooling and unpooling (PTv3 Sec. 3.3), Pointcept's `SerializedPooling`/`Unpooling`.

Pooling with stride 2^s merges the points of one 2^s-voxel cell (`Level.pooled`). Features are
projected, max-reduced per cell, then BatchNorm + GELU; coordinates are averaged. Unpooling adds
the projected coarse features to the projected skip features of the finer level.

Pointcept quirk, kept for its checkpoints: its sparse tensor is not refreshed after that sum, so
the next block's CPE convolution reads the projected skip features alone (`conv_feat`).
"""

import torch
from torch import nn

from ptdistill.models.ptv3.structure import PointBatch, shuffled_curves


def cell_max(feat: torch.Tensor, cluster: torch.Tensor, num_cells: int) -> torch.Tensor:
    """Channel-wise maximum of the rows of each cell: feat (N, C), cluster (N,) in [0, num_cells) -> (num_cells, C).

    Every cell must hold a row. The buffer starts at -inf, not `new_empty`: torch's `amax` backward
    counts an entry of the buffer equal to the maximum as a tie even with include_self=False, and
    reused memory may hold exactly that maximum, which would halve the gradient.
    Tie rule: rows that share a cell's maximum share its gradient evenly (torch's rule). Pointcept's
    torch_scatter gives it all to one of them; the forward, all that checkpoints need, is the same.
    """
    index = cluster[:, None].expand_as(feat)  # (N, C)
    return feat.new_full((num_cells, feat.shape[1]), float("-inf")).scatter_reduce(
        0, index, feat, "amax", include_self=False
    )


def point_batch_norm(channels: int) -> nn.BatchNorm1d:
    """PT-v3m1's BatchNorm over the points of a batch."""
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


class SerializedPooling(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, shuffle_orders: bool = True):
        super().__init__()
        if stride < 2 or stride & (stride - 1):
            raise ValueError(f"pooling stride must be a power of two >= 2, got {stride}")
        self.levels = stride.bit_length() - 1  # octree levels merged: stride 2 -> 1, 4 -> 2, 8 -> 3
        self.shuffle_orders = shuffle_orders
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = nn.Sequential(point_batch_norm(out_channels))
        self.act = nn.GELU()

    def forward(self, point: PointBatch) -> PointBatch:
        levels = self.levels if self.levels <= point.level.depth else 0  # Pointcept stops at the coarsest level
        coarse = point.level.pooled(levels)
        pooled = cell_max(self.proj(point.feat), coarse.pooling_inverse, len(coarse))  # (N_coarse, C_out)
        return PointBatch(
            feat=self.act(self.norm(pooled)),
            level=coarse,
            curves=shuffled_curves(len(coarse.orders), self.shuffle_orders and self.training),
            parent=point,
        )


class SerializedUnpooling(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_channels, out_channels), point_batch_norm(out_channels), nn.GELU())
        self.proj_skip = nn.Sequential(
            nn.Linear(skip_channels, out_channels), point_batch_norm(out_channels), nn.GELU()
        )

    def forward(self, point: PointBatch) -> PointBatch:
        """The parent level of `point`, with proj_skip(parent.feat) + proj(point.feat) mapped up."""
        parent = point.parent
        if parent is None:
            raise ValueError("SerializedUnpooling needs a point batch made by SerializedPooling")
        skip = self.proj_skip(parent.feat)
        upsampled = self.proj(point.feat).index_select(0, point.level.pooling_inverse)  # (N_parent, C_out)
        return parent.with_feat(skip + upsampled, conv_feat=skip)
