"""Point cloud serialization by space-filling curves (PTv3 Sec. 3.1): z-order and Hilbert codes.

The codes equal Pointcept's (`pointcept/models/utils/serialization`), so a Pointcept checkpoint
sees the same patches:
- z-order: bit i of x, y, z goes to bit 3i+2, 3i+1, 3i of the key (x most significant);
- Hilbert: Skilling's transpose ("Programming the Hilbert curve", 2004), interleaved the same way;
- the "-trans" orders swap x and y first.
The sample index sits above the 3·depth coordinate bits, so sorting a batch keeps samples apart.
"""

import torch
from torch import Tensor

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")
MAX_DEPTH = 16  # Pointcept's limit: 48 coordinate bits, the rest of the int64 for the sample index


def _spread_bits(v: Tensor) -> Tensor:
    """Move bit i of `v` (< 2**21) to bit 3i: the classic magic-number "part1by2"."""
    v = v & 0x1FFFFF
    v = (v | v << 32) & 0x1F00000000FFFF
    v = (v | v << 16) & 0x1F0000FF0000FF
    v = (v | v << 8) & 0x100F00F00F00F00F
    v = (v | v << 4) & 0x10C30C30C30C30C3
    return (v | v << 2) & 0x1249249249249249


def _interleave(x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    return _spread_bits(x) << 2 | _spread_bits(y) << 1 | _spread_bits(z)


def z_order_encode(grid_coord: Tensor) -> Tensor:
    """Morton key of each voxel: grid_coord (N, 3) non-negative ints -> (N,) int64."""
    x, y, z = grid_coord.long().unbind(1)
    return _interleave(x, y, z)


def hilbert_encode(grid_coord: Tensor, depth: int) -> Tensor:
    """Hilbert key of each voxel of a 2**depth cube: grid_coord (N, 3) -> (N,) int64."""
    axes = list(grid_coord.long().unbind(1))
    # Undo the excess work of the inverse transform, from the top bit down.
    for level in range(depth - 1, 0, -1):
        high, low = 1 << level, (1 << level) - 1
        for i in range(3):
            bit_set = (axes[i] & high) != 0
            swap = torch.where(bit_set, 0, (axes[0] ^ axes[i]) & low)
            axes[0] = axes[0] ^ torch.where(bit_set, low, swap)  # invert, or exchange with axis i
            axes[i] = axes[i] ^ swap
    # Gray encode.
    axes[1] = axes[1] ^ axes[0]
    axes[2] = axes[2] ^ axes[1]
    flip = torch.zeros_like(axes[2])
    for level in range(depth - 1, 0, -1):
        flip = flip ^ torch.where((axes[2] & (1 << level)) != 0, (1 << level) - 1, 0)
    return _interleave(*(axis ^ flip for axis in axes))


def encode(grid_coord: Tensor, batch: Tensor, depth: int, order: str) -> Tensor:
    """Serialization code of each point: (batch << 3·depth) | curve key; grid_coord (N, 3), batch (N,)."""
    if order not in ORDERS:
        raise ValueError(f"unknown serialization order {order!r}; known: {ORDERS}")
    if order.endswith("-trans"):
        grid_coord = grid_coord[:, [1, 0, 2]]
    key = z_order_encode(grid_coord) if order.startswith("z") else hilbert_encode(grid_coord, depth)
    return batch.long() << 3 * depth | key


def sort_codes(code: Tensor) -> tuple[Tensor, Tensor]:
    """Orders of the serialized points: code (O, N) -> (order, inverse), each (O, N).

    `order[o]` lists the rows in curve order o and `inverse[o]` is its inverse permutation.
    """
    order = torch.argsort(code, dim=1, stable=True)
    rows = torch.arange(code.shape[1], device=code.device).expand_as(order)
    return order, torch.empty_like(order).scatter_(1, order, rows)
