"""The point batch that flows through PTv3: features plus everything its layers share per level.

One `PointBatch` describes one resolution level of a collated batch (Pointcept's `Point`):
features, voxel coordinates, serialization orders, the voxel set that sparse convolutions use
and the attention patch layouts. Layers return a copy with new features (`with_feat`), so the
per-level caches are built once and shared by every block of the level, encoder and decoder.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Optional

import torch
from torch import Tensor

from ptdistill.models.ptv3.serialization import MAX_DEPTH, encode, sort_codes
from ptdistill.models.ptv3.sparse_conv import VoxelSet
from ptdistill.points import Tap, sample_index

REQUIRED_KEYS = ("coord", "grid_coord", "feat", "offset")


@dataclass(frozen=True)
class PointBatch:
    """One level of a batch of B point clouds, concatenated (N points in all)."""

    feat: Tensor  # (N, C)
    coord: Tensor  # (N, 3) metres
    grid_coord: Tensor  # (N, 3) int64 voxel coordinates at this level
    batch: Tensor  # (N,) sample of each point
    offset: Tensor  # (B,) cumulative end row of each sample
    code: Tensor  # (O, N) serialization codes, one row per curve order
    order: Tensor  # (O, N) rows sorted along each curve
    inverse: Tensor  # (O, N) position of each row along each curve
    depth: int  # bits per axis of the serialization codes
    index: Tensor  # (N_0,) row at this level of every input point
    voxels: VoxelSet
    patch_layouts: dict = field(default_factory=dict)  # patch size -> attention.PatchLayout
    parent: Optional["PointBatch"] = None  # the finer level this one was pooled from
    pooling_inverse: Optional[Tensor] = None  # (N_parent,) row here of every parent row
    conv_feat: Optional[Tensor] = None  # (N, C) what the next CPE conv reads, when not `feat`

    @classmethod
    def from_batch(cls, batch: Mapping, in_channels: int, orders: Sequence[str], shuffle: bool) -> "PointBatch":
        """Validate a collated batch (see the package docstring) and serialize it along `orders`."""
        coord, grid_coord, feat, offset = _validated(batch, in_channels)
        num_points = len(feat)
        sample = sample_index(offset)
        depth = int(grid_coord.max() + 1).bit_length()  # Pointcept's adaptive serialization depth
        if depth > MAX_DEPTH:
            raise ValueError(
                f"batch['grid_coord'] reaches {int(grid_coord.max())}, beyond the {2**MAX_DEPTH - 1} that "
                "serialization supports; use a coarser grid or crop the scene"
            )
        code = torch.stack([encode(grid_coord, sample, depth, o) for o in orders])
        code, order, inverse = sort_codes(code, shuffle)
        return cls(
            feat=feat,
            coord=coord,
            grid_coord=grid_coord,
            batch=sample,
            offset=offset,
            code=code,
            order=order,
            inverse=inverse,
            depth=depth,
            index=torch.arange(num_points, device=feat.device),
            voxels=VoxelSet(grid_coord, sample, len(offset)),
        )

    def with_feat(self, feat: Tensor, conv_feat: Optional[Tensor] = None) -> "PointBatch":
        """The same level with new features (N, C'); the caches stay shared."""
        return replace(self, feat=feat, conv_feat=conv_feat)

    def tap(self) -> Tap:
        return Tap(self.feat, self.index)


def _validated(batch: Mapping, in_channels: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    missing = [key for key in REQUIRED_KEYS if key not in batch]
    if missing:
        raise ValueError(f"batch lacks {missing}; PTv3 needs {list(REQUIRED_KEYS)}")
    coord, grid_coord, feat, offset = (batch[key] for key in REQUIRED_KEYS)
    if feat.ndim != 2 or feat.shape[1] != in_channels:
        raise ValueError(f"batch['feat'] has shape {tuple(feat.shape)}, expected (N, {in_channels}) (in_channels)")
    num_points = len(feat)
    if num_points == 0:
        raise ValueError("batch is empty: batch['feat'] has no points")
    if coord.shape != (num_points, 3) or grid_coord.shape != (num_points, 3):
        raise ValueError(
            f"batch['coord'] {tuple(coord.shape)} and batch['grid_coord'] {tuple(grid_coord.shape)} "
            f"must both be ({num_points}, 3)"
        )
    if grid_coord.is_floating_point() or offset.is_floating_point():
        raise ValueError("batch['grid_coord'] and batch['offset'] must be integer tensors")
    if not bool(torch.isfinite(coord).all()):
        raise ValueError("batch['coord'] holds NaN or Inf")
    if not bool(torch.isfinite(feat).all()):
        raise ValueError("batch['feat'] holds NaN or Inf")
    if bool((grid_coord < 0).any()):
        raise ValueError("batch['grid_coord'] holds negative voxel coordinates; they must start at 0 per sample")
    if offset.ndim != 1 or len(offset) == 0 or int(offset[-1]) != num_points:
        raise ValueError(f"batch['offset'] must be (B,) cumulative sample ends ending at {num_points}, got {offset}")
    counts = offset.diff(prepend=offset.new_zeros(1))
    if bool((counts <= 0).any()):
        empty = torch.nonzero(counts <= 0).flatten().tolist()
        raise ValueError(f"batch holds empty samples {empty} (batch['offset'] must increase strictly)")
    return coord, grid_coord.long(), feat, offset.long()
