"""Submanifold sparse 3D convolution: outputs live on the input's active voxels only.

out[i] = bias + sum over kernel offsets d of weight[:, d, :] @ feat[site at voxel(i) + d - k//2]

(cross-correlation, like `torch.nn.functional.conv3d`). The weight keeps spconv's layout
(C_out, kx, ky, kz, C_in), so Pointcept's checkpoints load unchanged. Two paths, one interface:
- plain PyTorch (CPU, and CUDA without spconv): neighbour pairs found once per voxel set and
  kernel size (spconv's `indice_key` idea), then per kernel offset one gather, one matmul and one
  index_add; the centre offset, where every site is its own neighbour, is a plain matmul. Gathers are
  `index_select`, whose backward is an index_add: indexing's accumulating index_put is slower on CPU;
- spconv's `SubMConv3d` on CUDA when `spconv.pytorch` imports (its CPU build refuses biases in
  eval mode and has no backward).
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

try:
    import spconv.pytorch as spconv
except ImportError:
    spconv = None

SPCONV_SHAPE_PAD = 96  # Pointcept's `sparsify` margin; it only sizes spconv's voxel hash


@dataclass(frozen=True)
class KernelMap:
    """The off-centre neighbour pairs of one kernel size, grouped by kernel offset (spconv's indice pairs)."""

    in_index: Tensor  # (P,) row whose feature is read
    out_index: Tensor  # (P,) row that receives it
    offsets: tuple[int, ...]  # flat kernel position (kx, ky, kz order) of each non-empty group
    counts: tuple[int, ...]  # pairs in each group; the groups lie one after the other


def build_kernel_map(grid_coord: Tensor, batch: Tensor, kernel_size: int) -> KernelMap:
    """Find, for every site and kernel offset, the site at that offset, by sorted search of voxel keys.

    grid_coord (N, 3) non-negative voxel coordinates, batch (N,) sample index. Keys are ordered
    (sample, x, y, z), so the k neighbours along z of one (x, y) column lie in one window of k
    consecutive keys: one binary search per column offset finds them all (k² searches, not k³).
    The searches run on the sorted keys (sorted queries walk memory in order), and the matches are scattered by their z offset, which groups them by kernel offset without a sort.
    Columns are searched one at a time, so temporaries stay O(N·k), not O(N·k³).
    """
    k, radius = kernel_size, kernel_size // 2
    extent = (grid_coord.amax(0) + 2 * radius + 1).tolist()  # per axis, with room for the offsets
    shifted = (grid_coord + radius).long()
    key = ((batch.long() * extent[0] + shifted[:, 0]) * extent[1] + shifted[:, 1]) * extent[2] + shifted[:, 2]
    sorted_key, perm = torch.sort(key)
    if bool((sorted_key[1:] == sorted_key[:-1]).any()):
        raise ValueError("grid_coord holds the same voxel twice in a sample; grid-sample the points first")

    num_sites = len(key)
    sentinel = sorted_key.new_full((k,), torch.iinfo(torch.int64).max)  # lets `first + j` run past the end
    padded_key, along_z = torch.cat([sorted_key, sentinel]), torch.arange(k, device=key.device)
    in_index, out_index, counts = [], [], []
    for column in range(k * k):  # (dx, dy) with dx slowest, as the flat kernel position
        dx, dy = divmod(column, k)
        window = sorted_key + ((dx - radius) * extent[1] + dy - radius) * extent[2] - radius  # (N,) lowest key
        candidate = _search_sorted(sorted_key, window)[:, None] + along_z  # (N, k) sorted positions
        dz = (padded_key[candidate] - window[:, None]).clamp_(max=k)  # (N, k) z offset + radius; k: no site
        # Keys increase strictly, so one site's candidates have distinct dz: scattered by dz, column dz of
        # `neighbour` holds the site at z offset dz - radius, or -1 (column k collects the misses).
        neighbour = candidate.new_full((num_sites, k + 1), -1).scatter_(1, dz, candidate)[:, :k]  # (N, k)
        if column == k * k // 2:
            neighbour[:, radius] = -1  # the centre offset is handled densely
        hit = neighbour >= 0
        z_offset, site = hit.T.nonzero(as_tuple=True)  # grouped by z offset, sites in key order
        in_index.append(perm[neighbour[site, z_offset]])
        out_index.append(perm[site])
        counts.append(torch.bincount(z_offset, minlength=k))
    counts = torch.cat(counts).tolist()  # (k³,) pairs per flat kernel position, in the order of the pairs
    groups = [(o, c) for o, c in enumerate(counts) if c > 0]
    return KernelMap(
        in_index=torch.cat(in_index),
        out_index=torch.cat(out_index),
        offsets=tuple(o for o, _ in groups),
        counts=tuple(c for _, c in groups),
    )


def _search_sorted(sorted_key: Tensor, queries: Tensor) -> Tensor:
    """(Q,) first position in `sorted_key` of a key >= each of the sorted `queries`.

    On CPU numpy's search, which reuses the last position as a hint for sorted queries: about 3x faster
    than `torch.searchsorted` at 24k points. Kernel maps are integer bookkeeping, outside autograd.
    """
    if sorted_key.device.type != "cpu":
        return torch.searchsorted(sorted_key, queries)
    return torch.from_numpy(np.searchsorted(sorted_key.numpy(), queries.numpy()))


def restrict_kernel_map(kernel_map: KernelMap, kernel_size: int, smaller: int) -> KernelMap:
    """The kernel map of a smaller kernel from a larger one's: the groups of the inner k'³ offsets, renumbered.

    Exactly what `build_kernel_map(..., smaller)` returns: the same pairs, grouped and ordered alike.
    """
    margin = (kernel_size - smaller) // 2
    keep, in_index, out_index = [], [], []
    groups = zip(kernel_map.offsets, kernel_map.in_index.split(kernel_map.counts),
                 kernel_map.out_index.split(kernel_map.counts))
    for offset, source, target in groups:
        x, y, z = (c - margin for c in (offset // kernel_size**2, offset // kernel_size % kernel_size,
                                        offset % kernel_size))
        if all(0 <= c < smaller for c in (x, y, z)):
            keep.append(((x * smaller + y) * smaller + z, len(source)))
            in_index.append(source)
            out_index.append(target)
    empty = kernel_map.in_index[:0]
    return KernelMap(
        in_index=torch.cat(in_index) if in_index else empty,
        out_index=torch.cat(out_index) if out_index else empty,
        offsets=tuple(o for o, _ in keep),
        counts=tuple(c for _, c in keep),
    )


class VoxelSet:
    """The active voxels of one resolution level, with the neighbour maps its convolutions share."""

    def __init__(self, grid_coord: Tensor, batch: Tensor, num_samples: int):
        self.grid_coord = grid_coord  # (N, 3)
        self.batch = batch  # (N,)
        self.num_samples = num_samples
        self._kernel_maps: dict[int, KernelMap] = {}
        self._spconv_tensor = None

    def kernel_map(self, kernel_size: int) -> KernelMap:
        """The pairs of `kernel_size`, cut from a larger kernel's when one is built (the stem's k5 gives
        the level-0 CPE's k3)."""
        if kernel_size not in self._kernel_maps:
            larger = [k for k in self._kernel_maps if k > kernel_size]
            self._kernel_maps[kernel_size] = (
                restrict_kernel_map(self._kernel_maps[min(larger)], min(larger), kernel_size) if larger
                else build_kernel_map(self.grid_coord, self.batch, kernel_size)
            )
        return self._kernel_maps[kernel_size]

    def spconv_forward(self, conv: Callable, feat: Tensor) -> Tensor:
        """Run an spconv layer on `feat` (N, C) over these voxels, keeping the indice pairs it builds."""
        if self._spconv_tensor is None:
            indices = torch.cat([self.batch[:, None], self.grid_coord], dim=1).int().contiguous()
            shape = (self.grid_coord.amax(0) + SPCONV_SHAPE_PAD).tolist()
            self._spconv_tensor = spconv.SparseConvTensor(feat, indices, shape, self.num_samples)
        out = conv(self._spconv_tensor.replace_feature(feat))
        self._spconv_tensor.indice_dict = out.indice_dict  # spconv caches the pairs in its output tensor
        return out.features


@functools.cache
def _spconv_module(in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> nn.Module:
    """A weightless spconv SubMConv3d to run with our parameters through `functional_call`."""
    with torch.device("meta"):
        return spconv.SubMConv3d(in_channels, out_channels, kernel_size, bias=bias, indice_key=f"subm{kernel_size}")


class SubMConv3d(nn.Module):
    """Submanifold convolution with spconv's parameters: weight (C_out, k, k, k, C_in), bias (C_out,)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for a submanifold convolution, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, k, k, k, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's Conv3d initialisation, with the fan-in of this layout."""
        fan_in = self.in_channels * self.kernel_size**3
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)  # = kaiming_uniform_(a=sqrt(5)) for this fan-in
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, feat: Tensor, voxels: VoxelSet) -> Tensor:
        """feat (N, C_in) on `voxels` -> (N, C_out)."""
        if feat.is_cuda and spconv is not None:
            return self._spconv_forward(feat, voxels)
        return self._torch_forward(feat, voxels)

    def _torch_forward(self, feat: Tensor, voxels: VoxelSet) -> Tensor:
        kernel_map = voxels.kernel_map(self.kernel_size)
        weight = self.weight.flatten(1, 3)  # (C_out, k³, C_in)
        out = feat @ weight[:, weight.shape[1] // 2].T  # centre offset: every site is its own neighbour
        # One offset at a time, so that no (P, C_out) tensor of all pairs is ever alive.
        groups = zip(kernel_map.in_index.split(kernel_map.counts), kernel_map.out_index.split(kernel_map.counts))
        for (source, target), d in zip(groups, kernel_map.offsets):
            out.index_add_(0, target, feat.index_select(0, source) @ weight[:, d].T)  # (P_d, C_out) into (N, C_out)
        return out if self.bias is None else out + self.bias

    def _spconv_forward(self, feat: Tensor, voxels: VoxelSet) -> Tensor:
        module = _spconv_module(self.in_channels, self.out_channels, self.kernel_size, self.bias is not None)
        module.train(self.training)
        params = {"weight": self.weight} if self.bias is None else {"weight": self.weight, "bias": self.bias}
        return voxels.spconv_forward(lambda x: functional_call(module, params, (x,)), feat)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"
