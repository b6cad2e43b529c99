"""The point batch that flows through PTv3: features on a level, and the level's shared geometry.

A `Level` is one resolution level of a collated batch: voxel coordinates, serialization codes and
orders, the voxel set that sparse convolutions use, the attention patch layouts and the pooling
cells. A `PointBatch` (Pointcept's `Point`) is one model's features on a level. The geometry is
built once per batch and shared: by every block of a level, encoder and decoder, and by every
model with the same curve orders (a teacher and its student).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import Tensor

from ptdistill.models.ptv3.serialization import MAX_DEPTH, encode, sort_codes
from ptdistill.models.ptv3.sparse_conv import VoxelSet
from ptdistill.points import Tap, sample_index

REQUIRED_KEYS = ("coord", "grid_coord", "feat", "offset")


class Level:
    """The geometry of one resolution level of a collated batch: what every PTv3 with the same curve
    orders computes alike from the same points, whatever its weights, its training mode or its order
    shuffling. Levels are built once and shared: the coarser level of a stride is built once
    (`pooled`), and the sparse-conv kernel maps and attention patch layouts once per kernel and patch
    size. So a teacher and a student handed the same root level (`PTv3Segmentor.structure`) build
    the serialization, the pooling cells and the kernel maps once between them.

    Curve orders are kept unshuffled (`code[o]` is order o of the model's list); the shuffling is the
    `PointBatch`'s. Pooled rows follow the first order's codes, so a level's rows are the same in
    every model (Pointcept numbers them by the shuffled first order; the function is the same).
    """

    def __init__(self, coord: Tensor, grid_coord: Tensor, batch: Tensor, offset: Tensor, code: Tensor, depth: int,
                 index: Tensor, orders: tuple[str, ...], pooling_inverse: Optional[Tensor] = None):
        self.coord = coord  # (N, 3) metres
        self.grid_coord = grid_coord  # (N, 3) int64 voxel coordinates at this level
        self.batch = batch  # (N,) sample of each row
        self.offset = offset  # (B,) cumulative end row of each sample
        self.code = code  # (O, N) serialization codes, one row per curve order
        self.order, self.inverse = sort_codes(code)  # (O, N) rows along each curve, and their positions
        self.depth = depth  # bits per axis of the serialization codes
        self.index = index  # (N_0,) row at this level of every input point
        self.orders = orders
        self.pooling_inverse = pooling_inverse  # (N_parent,) row here of every parent row
        self.voxels = VoxelSet(grid_coord, batch, len(offset))
        self.patch_layouts: dict = {}  # patch size -> attention.PatchLayout
        self._coarser: dict[int, "Level"] = {}

    @classmethod
    def from_batch(cls, batch: Mapping, in_channels: int, orders: Sequence[str]) -> "Level":
        """Validate a collated batch (see the package docstring) and serialize it along `orders`."""
        coord, grid_coord, _, offset = _validated(batch, in_channels)
        sample = sample_index(offset)
        depth = int(grid_coord.max() + 1).bit_length()  # Pointcept's adaptive serialization depth
        if depth > MAX_DEPTH:
            raise ValueError(
                f"batch['grid_coord'] reaches {int(grid_coord.max())}, beyond the {2**MAX_DEPTH - 1} that "
                "serialization supports; use a coarser grid or crop the scene"
            )
        code = torch.stack([encode(grid_coord, sample, depth, o) for o in orders])
        index = torch.arange(len(coord), device=coord.device)
        return cls(coord, grid_coord, sample, offset, code, depth, index, tuple(orders))

    def pooled(self, levels: int) -> "Level":
        """The level whose cells merge the rows that agree above the lowest 3·levels code bits (PTv3 Sec.
        3.3): the points of one 2^levels-voxel cell, since every curve order is hierarchical."""
        if levels not in self._coarser:
            code = self.code >> 3 * levels  # (O, N)
            _, cluster, counts = torch.unique(code[0], sorted=True, return_inverse=True, return_counts=True)
            rows = torch.arange(len(cluster), device=cluster.device)
            head = torch.empty_like(counts).scatter_(0, cluster, rows)  # one row per cell; they share code and voxel
            coord = self.coord.new_zeros(len(counts), 3).index_add(0, cluster, self.coord) / counts[:, None]
            batch = self.batch[head]
            self._coarser[levels] = Level(
                coord=coord,
                grid_coord=self.grid_coord[head] >> levels,
                batch=batch,
                offset=torch.bincount(batch, minlength=len(self.offset)).cumsum(0),
                code=code[:, head],
                depth=self.depth - levels,
                index=cluster[self.index],
                orders=self.orders,
                pooling_inverse=cluster,
            )
        return self._coarser[levels]

    def __len__(self) -> int:
        return len(self.coord)


@dataclass(frozen=True)
class PointBatch:
    """Features on one `Level`, as one model's forward sees them (Pointcept's `Point`).

    Layers return a copy with new features (`with_feat`); the level, and its caches, stay shared.
    `curves[i]` is the curve order (a row of `level.order`) that the level's i-th block attends along:
    the identity, or in training a random permutation (Pointcept's order shuffling).
    """

    feat: Tensor  # (N, C)
    level: Level
    curves: tuple[int, ...]
    parent: Optional["PointBatch"] = None  # the finer level this one was pooled from
    conv_feat: Optional[Tensor] = None  # (N, C) what the next CPE conv reads, when not `feat`

    @classmethod
    def from_batch(cls, batch: Mapping, in_channels: int, orders: Sequence[str], shuffle: bool,
                   level: Optional[Level] = None) -> "PointBatch":
        """The input level of a collated batch: `level` when given (shared with another model, which
        must have serialized the same batch along the same orders), else serialized here."""
        if level is None:
            level = Level.from_batch(batch, in_channels, orders)
        else:  # the batch was validated when the level was built; only the channels are this model's
            _check_channels(batch["feat"], in_channels)
            num_points = len(batch["feat"])
            if level.orders != tuple(orders) or len(level) != num_points:
                raise ValueError(f"the shared level has {len(level)} rows serialized along {list(level.orders)}; "
                                 f"this model reads {num_points} points along {list(orders)}: only models with "
                                 "the same orders share the structure of the same batch")
        return cls(feat=batch["feat"], level=level, curves=shuffled_curves(len(orders), shuffle))

    def with_feat(self, feat: Tensor, conv_feat: Optional[Tensor] = None) -> "PointBatch":
        """The same level with new features (N, C'); the caches stay shared."""
        return replace(self, feat=feat, conv_feat=conv_feat)

    def curve(self, i: int) -> tuple[Tensor, Tensor]:
        """(order (N,), inverse (N,)): the rows along the i-th curve, and each row's position on it."""
        return self.level.order[self.curves[i]], self.level.inverse[self.curves[i]]

    def tap(self) -> Tap:
        return Tap(self.feat, self.level.index)


def shuffled_curves(num_orders: int, shuffle: bool) -> tuple[int, ...]:
    """Which curve order each block slot uses: (0, 1, ..., O-1), or a random permutation of it."""
    return tuple(torch.randperm(num_orders).tolist()) if shuffle else tuple(range(num_orders))


def _validated(batch: Mapping, in_channels: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    missing = [key for key in REQUIRED_KEYS if key not in batch]
    if missing:
        raise ValueError(f"batch lacks {missing}; PTv3 needs {list(REQUIRED_KEYS)}")
    coord, grid_coord, feat, offset = (batch[key] for key in REQUIRED_KEYS)
    _check_channels(feat, in_channels)
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


def _check_channels(feat: Tensor, in_channels: int) -> None:
    if feat.ndim != 2 or feat.shape[1] != in_channels:
        raise ValueError(f"batch['feat'] has shape {tuple(feat.shape)}, expected (N, {in_channels}) (in_channels)")
