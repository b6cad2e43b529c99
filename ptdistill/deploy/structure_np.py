"""PTv3's index structures in numpy: what the ONNX student needs besides the features.

PTv3's forward is two kinds of work. The arithmetic (linear layers, norms, attention inside
patches, the sums of sparse convolutions) is what the ONNX graph computes. The rest is
combinatorics on voxel coordinates, data-dependent in size and written with sorting,
`unique`, binary search and Python loops over samples: ONNX has no sort-based `unique`, and
torch's exporters cannot trace those loops with dynamic sizes. That part runs here, before the
graph, in numpy, mirroring the torch code step by step so that the graph sees the same orders,
cells, neighbour pairs and patches as `PTv3Segmentor` in eval mode:

- serialization codes (z, z-trans, hilbert, hilbert-trans) and their sort orders:
  `ptdistill.models.ptv3.serialization`;
- per level, the pooling cells (codes shifted by 3 bits per octree level, `unique`): `pooling`;
- per level and kernel size, the submanifold-conv neighbour pairs grouped by kernel offset
  (spconv's indice pairs): `sparse_conv.build_kernel_map`;
- per level and curve order, the attention patches with Pointcept's padding (a sample of n >= K
  points is padded to a multiple of K by repeating its points one patch earlier; a sample of
  n < K points is one patch of n): `attention.PatchLayout`.

`graph_inputs` turns them into the named int64 arrays the exported graph reads (`GraphSpec.input_names`).
Evaluation mode only: no order shuffling.
"""

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")
MAX_DEPTH = 16  # serialization.MAX_DEPTH


# --- serialization (serialization.py) ------------------------------------------------------------

def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Move bit i of `v` (< 2**21) to bit 3i."""
    v = v & 0x1FFFFF
    v = (v | v << 32) & 0x1F00000000FFFF
    v = (v | v << 16) & 0x1F0000FF0000FF
    v = (v | v << 8) & 0x100F00F00F00F00F
    v = (v | v << 4) & 0x10C30C30C30C30C3
    return (v | v << 2) & 0x1249249249249249


def _interleave(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return _spread_bits(x) << 2 | _spread_bits(y) << 1 | _spread_bits(z)


def z_order_encode(grid_coord: np.ndarray) -> np.ndarray:
    """Morton key of each voxel: grid_coord (N, 3) non-negative ints -> (N,) int64."""
    g = grid_coord.astype(np.int64)
    return _interleave(g[:, 0], g[:, 1], g[:, 2])


def hilbert_encode(grid_coord: np.ndarray, depth: int) -> np.ndarray:
    """Hilbert key of each voxel of a 2**depth cube (Skilling's transpose): (N, 3) -> (N,) int64."""
    g = grid_coord.astype(np.int64)
    axes = [g[:, 0].copy(), g[:, 1].copy(), g[:, 2].copy()]
    for level in range(depth - 1, 0, -1):
        high, low = 1 << level, (1 << level) - 1
        for i in range(3):
            bit_set = (axes[i] & high) != 0
            swap = np.where(bit_set, 0, (axes[0] ^ axes[i]) & low)
            axes[0] = axes[0] ^ np.where(bit_set, low, swap)
            axes[i] = axes[i] ^ swap
    axes[1] = axes[1] ^ axes[0]
    axes[2] = axes[2] ^ axes[1]
    flip = np.zeros_like(axes[2])
    for level in range(depth - 1, 0, -1):
        flip = flip ^ np.where((axes[2] & (1 << level)) != 0, (1 << level) - 1, 0)
    return _interleave(*(axis ^ flip for axis in axes))


def encode(grid_coord: np.ndarray, batch: np.ndarray, depth: int, order: str) -> np.ndarray:
    """(batch << 3·depth) | curve key, per point: grid_coord (N, 3), batch (N,) -> (N,) int64."""
    if order not in ORDERS:
        raise ValueError(f"unknown serialization order {order!r}; known: {ORDERS}")
    if order.endswith("-trans"):
        grid_coord = grid_coord[:, [1, 0, 2]]
    key = z_order_encode(grid_coord) if order.startswith("z") else hilbert_encode(grid_coord, depth)
    return batch.astype(np.int64) << 3 * depth | key


def sort_codes(code: np.ndarray, rows: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """code (O, N) -> order (O, N) (rows along each curve, stable) and inverse (O, N), its inverse.

    Only the orders in `rows` (default: all) are sorted; the others get the identity."""
    order = np.broadcast_to(np.arange(code.shape[1]), code.shape).copy()
    for o in range(len(code)) if rows is None else rows:
        order[o] = np.argsort(code[o], kind="stable")
    inverse = np.empty_like(order)
    np.put_along_axis(inverse, order, np.broadcast_to(np.arange(code.shape[1]), order.shape), axis=1)
    return order, inverse


# --- levels (structure.py, pooling.py) -----------------------------------------------------------

@dataclass
class Level:
    """One resolution level of a batch (the index part of `PointBatch`)."""

    grid_coord: np.ndarray  # (N, 3) int64
    batch: np.ndarray  # (N,) int64 sample of each row
    offset: np.ndarray  # (B,) int64 cumulative sample ends
    code: np.ndarray  # (O, N) int64
    order: np.ndarray  # (O, N)
    inverse: np.ndarray  # (O, N)
    depth: int
    cluster: np.ndarray | None = None  # (N_parent,) row here of every parent row (pooling_inverse)
    head: np.ndarray | None = None  # (N,) one parent row of each row here

    @property
    def counts(self) -> list[int]:
        return np.diff(self.offset, prepend=0).tolist()


def sample_index(offset: np.ndarray) -> np.ndarray:
    counts = np.diff(offset, prepend=0)
    return np.repeat(np.arange(len(offset), dtype=np.int64), counts)


def first_level(grid_coord: np.ndarray, offset: np.ndarray, orders, used: set[int] | None = None) -> Level:
    """Level 0, as `PointBatch.from_batch` serializes it (adaptive depth, codes sorted per order).

    `used`: the order indices anything will read (default: all). Pooling reads the first order's
    codes, so it is always computed; the codes of the other unused orders are left 0 and their orders
    the identity: placeholders that save the Hilbert encoding and sorts nobody reads."""
    grid_coord = np.asarray(grid_coord, dtype=np.int64)
    offset = np.asarray(offset, dtype=np.int64)
    batch = sample_index(offset)
    depth = int(grid_coord.max() + 1).bit_length()
    if depth > MAX_DEPTH:
        raise ValueError(f"grid_coord reaches {int(grid_coord.max())}, beyond the {2**MAX_DEPTH - 1} that "
                         "serialization supports; use a coarser grid or crop the scene")
    used = _used_rows(orders, used)
    code = np.stack([encode(grid_coord, batch, depth, order) if o in used else np.zeros(len(batch), np.int64)
                     for o, order in enumerate(orders)])
    order, inverse = sort_codes(code, used)
    return Level(grid_coord, batch, offset, code, order, inverse, depth)


def _used_rows(orders, used: set[int] | None) -> list[int]:
    return sorted(range(len(orders)) if used is None else {0} | set(used))


def pool(level: Level, levels: int, used: list[int] | None = None) -> Level:
    """The next level, as `SerializedPooling` (eval) builds it: merge `levels` octree levels."""
    levels = levels if levels <= level.depth else 0  # Pointcept stops at the coarsest level
    code = level.code >> 3 * levels
    _, head, cluster = np.unique(code[0], return_index=True, return_inverse=True)
    cluster = cluster.reshape(-1)
    batch = level.batch[head]
    code = code[:, head]
    order, inverse = sort_codes(code, used)
    offset = np.cumsum(np.bincount(batch, minlength=len(level.offset))).astype(np.int64)
    return Level(level.grid_coord[head] >> levels, batch, offset, code, order, inverse, level.depth - levels,
                 cluster=cluster.astype(np.int64), head=head.astype(np.int64))


def build_levels(grid_coord: np.ndarray, offset: np.ndarray, orders, pool_levels,
                 used: set[int] | None = None) -> list[Level]:
    """Level 0 and one level per pooling (`pool_levels`: octree levels merged by each); `used`: see
    `first_level`."""
    levels = [first_level(grid_coord, offset, orders, used)]
    for merged in pool_levels:
        levels.append(pool(levels[-1], merged, _used_rows(orders, used)))
    return levels


# --- sparse conv kernel maps (sparse_conv.py) ----------------------------------------------------

@dataclass
class KernelMap:
    """Off-centre neighbour pairs grouped by flat kernel offset, sites in key order within a group."""

    in_index: np.ndarray  # (P,) row read
    out_index: np.ndarray  # (P,) row written
    offsets: tuple[int, ...]  # flat kernel position of each non-empty group
    counts: tuple[int, ...]  # pairs per group

    def bounds(self, kernel_size: int) -> np.ndarray:
        """(k³ + 1,) int64: the pairs of flat offset d are [bounds[d], bounds[d + 1])."""
        per_offset = np.zeros(kernel_size**3, dtype=np.int64)
        per_offset[list(self.offsets)] = self.counts
        return np.concatenate([[0], np.cumsum(per_offset)]).astype(np.int64)


def build_kernel_map(grid_coord: np.ndarray, batch: np.ndarray, kernel_size: int) -> KernelMap:
    """`sparse_conv.build_kernel_map` in numpy: k² binary searches of the sorted (sample, x, y, z) keys,
    matches scattered by z offset; the same pairs in the same order."""
    k, radius = kernel_size, kernel_size // 2
    extent = (grid_coord.max(axis=0) + 2 * radius + 1).astype(np.int64)
    shifted = grid_coord.astype(np.int64) + radius
    key = ((batch.astype(np.int64) * extent[0] + shifted[:, 0]) * extent[1] + shifted[:, 1]) * extent[2] \
        + shifted[:, 2]
    perm = np.argsort(key, kind="stable")
    sorted_key = key[perm]
    if np.any(sorted_key[1:] == sorted_key[:-1]):
        raise ValueError("grid_coord holds the same voxel twice in a sample; grid-sample the points first")
    padded_key = np.concatenate([sorted_key, np.full(k, np.iinfo(np.int64).max, dtype=np.int64)])
    along_z, sites = np.arange(k)[:, None], np.arange(len(key))
    in_index, out_index, counts = [], [], []
    for column in range(k * k):
        dx, dy = divmod(column, k)
        window = sorted_key + ((dx - radius) * extent[1] + dy - radius) * extent[2] - radius  # (N,) sorted
        candidate = np.searchsorted(sorted_key, window) + along_z  # (k, N) sorted positions
        dz = np.minimum(padded_key[candidate] - window, k)  # (k, N) z offset + radius; k: no site
        neighbour = np.full((k + 1, len(key)), -1, dtype=np.int64)
        neighbour[dz, sites] = candidate  # one site's dz are distinct; row k collects the misses
        neighbour = neighbour[:k]
        if column == k * k // 2:
            neighbour[radius] = -1  # the centre offset is handled densely
        z_offset, site = np.nonzero(neighbour >= 0)  # grouped by z offset, sites in key order
        in_index.append(perm[neighbour[z_offset, site]])
        out_index.append(perm[site])
        counts.append(np.bincount(z_offset, minlength=k))
    counts = np.concatenate(counts)
    groups = [(o, int(c)) for o, c in enumerate(counts) if c > 0]
    return KernelMap(np.concatenate(in_index).astype(np.int64), np.concatenate(out_index).astype(np.int64),
                     tuple(o for o, _ in groups), tuple(c for _, c in groups))


# --- attention patches (attention.py) ------------------------------------------------------------

@dataclass
class PatchLayout:
    """`attention.PatchLayout`: full K-point patches first, then one short patch per small sample."""

    gather: np.ndarray  # (N_pad,) curve position in each padded slot
    scatter: np.ndarray  # (N,) padded slot of each curve position
    patch_size: int
    full_patches: int
    short_lengths: tuple[int, ...]


def build_patch_layout(counts: list[int], patch_size: int) -> PatchLayout:
    full_slots = sum(math.ceil(n / patch_size) * patch_size for n in counts if n >= patch_size)
    gather_full, gather_short, scatter = [], [], []
    start, next_full, next_short = 0, 0, full_slots
    for n in counts:
        if n >= patch_size:
            slot = np.arange(math.ceil(n / patch_size) * patch_size)
            gather_full.append(start + np.where(slot < n, slot, slot - patch_size))  # repeat one patch earlier
            scatter.append(next_full + np.arange(n))
            next_full += len(slot)
        else:
            gather_short.append(start + np.arange(n))
            scatter.append(next_short + np.arange(n))
            next_short += n
        start += n
    return PatchLayout(np.concatenate(gather_full + gather_short).astype(np.int64),
                       np.concatenate(scatter).astype(np.int64), patch_size, full_slots // patch_size,
                       tuple(n for n in counts if n < patch_size))


# --- the graph's inputs --------------------------------------------------------------------------

@dataclass(frozen=True)
class GraphSpec:
    """The static shape of an exported student: what `graph_inputs` must compute, stored in the .onnx."""

    in_channels: int
    orders: tuple[str, ...]  # serialization orders, in the model's order
    pool_levels: tuple[int, ...]  # octree levels merged by each pooling (L - 1 entries)
    patch_sizes: tuple[int, ...]  # attention patch size per level (L entries; 0: no attention there)
    level_orders: tuple[tuple[int, ...], ...]  # order indices that the blocks of each level attend along
    level_kernels: tuple[tuple[int, ...], ...]  # sparse-conv kernel sizes used at each level
    attention_chunks: int = 8  # each level's patches are attended in this many slices (bounds memory)

    @property
    def num_levels(self) -> int:
        return len(self.patch_sizes)

    def input_names(self) -> list[str]:
        names = ["feat"]
        for level in range(self.num_levels):
            for k in self.level_kernels[level]:
                names += [f"l{level}_k{k}_in", f"l{level}_k{k}_out", f"l{level}_k{k}_bounds"]
            if level > 0:
                names += [f"l{level}_cluster", f"l{level}_head"]
            if self.level_orders[level]:
                names.append(f"l{level}_chunks")
            for o in self.level_orders[level]:
                names += [f"l{level}_o{o}_rows", f"l{level}_o{o}_back"]
        return names

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Every axis of every input is dynamic except feat's channels and the fixed-length bounds."""
        axes = {"feat": {0: "points"}, "logits": {0: "points"}}
        for name in self.input_names()[1:]:
            if name.endswith("_rows"):
                axes[name] = {0: f"{name}_patches", 1: f"{name}_length"}
            elif not name.endswith(("_bounds", "_chunks")):
                axes[name] = {0: f"{name}_len"}
        return axes

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "GraphSpec":
        data = json.loads(text)
        return cls(
            in_channels=int(data["in_channels"]),
            orders=tuple(data["orders"]),
            pool_levels=tuple(int(v) for v in data["pool_levels"]),
            patch_sizes=tuple(int(v) for v in data["patch_sizes"]),
            level_orders=tuple(tuple(int(o) for o in v) for v in data["level_orders"]),
            level_kernels=tuple(tuple(int(k) for k in v) for v in data["level_kernels"]),
            attention_chunks=int(data["attention_chunks"]),
        )


def patch_rows(level: Level, order_index: int, layout: PatchLayout) -> tuple[np.ndarray, np.ndarray]:
    """(rows (P, L), back (N,)): the feature row of every padded slot, cut into P patches of L points,
    and the flat slot of every row (`SerializedAttention.forward`'s gathers). The graph reshapes the
    patches as one (P, L) array, so they must share one length: one sample, or samples of >= K points."""
    lengths = {layout.patch_size} if layout.full_patches else set()
    lengths |= set(layout.short_lengths)
    if len(lengths) != 1:
        raise ValueError(f"the ONNX student attends patches of one length per level; this batch has patches of "
                         f"{sorted(lengths)} points (run one scan at a time, or scans of >= {layout.patch_size} "
                         "points each)")
    rows = level.order[order_index][layout.gather]
    back = layout.scatter[level.inverse[order_index]]
    return rows.reshape(-1, lengths.pop()), back


def chunk_bounds(patches: int, chunks: int) -> np.ndarray:
    """(chunks + 1,) int64 boundaries cutting `patches` into `chunks` near-equal slices (some empty if few)."""
    return (np.arange(chunks + 1, dtype=np.int64) * patches) // chunks


def graph_inputs(feat: np.ndarray, grid_coord: np.ndarray, offset: np.ndarray, spec: GraphSpec) -> dict:
    """The exported graph's inputs, by name: feat (N, C) float32, the voxels grid_coord (N, 3) >= 0 (one
    per row, distinct within a sample), offset (B,) sample ends."""
    used = {o for orders in spec.level_orders for o in orders}
    levels = build_levels(grid_coord, offset, spec.orders, spec.pool_levels, used)
    inputs = {"feat": np.ascontiguousarray(feat, dtype=np.float32)}
    for index, level in enumerate(levels):
        for k in spec.level_kernels[index]:
            kernel_map = build_kernel_map(level.grid_coord, level.batch, k)
            inputs[f"l{index}_k{k}_in"] = kernel_map.in_index
            inputs[f"l{index}_k{k}_out"] = kernel_map.out_index
            inputs[f"l{index}_k{k}_bounds"] = kernel_map.bounds(k)
        if index > 0:
            inputs[f"l{index}_cluster"] = level.cluster
            inputs[f"l{index}_head"] = level.head
        if spec.level_orders[index]:
            layout = build_patch_layout(level.counts, spec.patch_sizes[index])
            for o in spec.level_orders[index]:
                rows, back = patch_rows(level, o, layout)
                inputs[f"l{index}_o{o}_rows"], inputs[f"l{index}_o{o}_back"] = rows, back
            inputs[f"l{index}_chunks"] = chunk_bounds(len(rows), spec.attention_chunks)
    return inputs
