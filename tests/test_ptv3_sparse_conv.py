"""Submanifold sparse convolution against a dense `conv3d` read at the active sites."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.models.ptv3 import sparse_conv
from ptdistill.models.ptv3.sparse_conv import SubMConv3d, VoxelSet


def random_sites(seed: int, num_samples: int, side: int, density: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct active voxels of a side^3 grid per sample, in random row order: grid (N, 3), batch (N,)."""
    g = torch.Generator().manual_seed(seed)
    grids, batches = [], []
    for b in range(num_samples):
        cells = torch.nonzero(torch.rand(side, side, side, generator=g) < density)
        if len(cells) == 0:
            cells = torch.zeros(1, 3, dtype=torch.long)
        grids.append(cells)
        batches.append(torch.full((len(cells),), b))
    perm = torch.randperm(sum(len(c) for c in grids), generator=g)
    return torch.cat(grids)[perm], torch.cat(batches)[perm]


def dense_reference(conv: SubMConv3d, feat: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Scatter to a zero dense grid, F.conv3d with the weight as (C_out, C_in, k, k, k), read the sites."""
    side = int(grid.max()) + 1
    dense = feat.new_zeros(int(batch.max()) + 1, feat.shape[1], side, side, side)
    dense[batch, :, grid[:, 0], grid[:, 1], grid[:, 2]] = feat
    weight = conv.weight.permute(0, 4, 1, 2, 3)
    out = F.conv3d(dense, weight, conv.bias, padding=conv.kernel_size // 2)
    return out[batch, :, grid[:, 0], grid[:, 1], grid[:, 2]]


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_samples=st.integers(1, 3),
    side=st.integers(1, 7),
    density=st.floats(0.05, 0.9),
    kernel_size=st.sampled_from([1, 3, 5]),
    channels=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    bias=st.booleans(),
)
def test_equals_dense_convolution_at_active_sites(seed, num_samples, side, density, kernel_size, channels, bias):
    torch.manual_seed(seed)
    grid, batch = random_sites(seed, num_samples, side, density)
    conv = SubMConv3d(*channels, kernel_size, bias=bias).double()
    feat = torch.randn(len(grid), channels[0], dtype=torch.double)
    out = conv(feat, VoxelSet(grid, batch, num_samples))
    assert torch.allclose(out, dense_reference(conv, feat, grid, batch), atol=1e-10)


def test_gradients_equal_the_dense_convolution():
    grid, batch = random_sites(0, 2, 6, 0.3)
    conv = SubMConv3d(3, 4, 3).double()
    feat = torch.randn(len(grid), 3, dtype=torch.double, requires_grad=True)
    upstream = torch.randn(len(grid), 4, dtype=torch.double)
    ours = torch.autograd.grad((conv(feat, VoxelSet(grid, batch, 2)) * upstream).sum(), [feat, conv.weight, conv.bias])
    dense = torch.autograd.grad((dense_reference(conv, feat, grid, batch) * upstream).sum(),
                                [feat, conv.weight, conv.bias])
    for a, b in zip(ours, dense):
        assert torch.allclose(a, b, atol=1e-10)


def test_weight_has_spconvs_layout():
    conv = SubMConv3d(6, 32, 5, bias=False)
    assert conv.weight.shape == (32, 5, 5, 5, 6) and conv.bias is None


def test_neighbour_maps_are_built_once_per_kernel_size():
    grid, batch = random_sites(1, 1, 5, 0.5)
    voxels = VoxelSet(grid, batch, 1)
    assert voxels.kernel_map(3) is voxels.kernel_map(3)
    assert voxels.kernel_map(5) is not voxels.kernel_map(3)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_samples=st.integers(1, 3), side=st.integers(1, 8),
       density=st.floats(0.05, 0.9), sizes=st.sampled_from([(5, 3), (5, 1), (3, 1), (7, 3)]))
def test_a_smaller_kernel_map_cut_from_a_larger_equals_its_own_build(seed, num_samples, side, density, sizes):
    grid, batch = random_sites(seed, num_samples, side, density)
    larger, smaller = sizes
    cut = sparse_conv.restrict_kernel_map(sparse_conv.build_kernel_map(grid, batch, larger), larger, smaller)
    built = sparse_conv.build_kernel_map(grid, batch, smaller)
    assert (cut.offsets, cut.counts) == (built.offsets, built.counts)
    assert torch.equal(cut.in_index, built.in_index) and torch.equal(cut.out_index, built.out_index)


def test_a_level_cuts_its_smaller_kernel_maps_from_the_larger_one():
    grid, batch = random_sites(2, 2, 6, 0.4)
    voxels, fresh = VoxelSet(grid, batch, 2), VoxelSet(grid, batch, 2)
    voxels.kernel_map(5)
    conv = SubMConv3d(2, 3, 3).double()
    feat = torch.randn(len(grid), 2, dtype=torch.double)
    assert torch.equal(conv(feat, voxels), conv(feat, fresh))  # cut (from k5) and built maps, same output


def test_duplicate_voxels_are_refused():
    grid = torch.tensor([[0, 0, 0], [1, 2, 3], [0, 0, 0]])
    with pytest.raises(ValueError, match="same voxel twice"):
        SubMConv3d(2, 2, 3)(torch.randn(3, 2), VoxelSet(grid, torch.zeros(3, dtype=torch.long), 1))


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SubMConv3d(2, 2, 4)


@pytest.mark.skipif(not torch.cuda.is_available() or sparse_conv.spconv is None, reason="needs CUDA and spconv")
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_spconv_path_equals_the_plain_path(kernel_size):
    grid, batch = random_sites(2, 2, 12, 0.2)
    conv = SubMConv3d(16, 24, kernel_size)
    feat = torch.randn(len(grid), 16)
    plain = conv(feat, VoxelSet(grid, batch, 2))
    cuda_conv = conv.cuda()
    spconv_out = cuda_conv(feat.cuda(), VoxelSet(grid.cuda(), batch.cuda(), 2))
    assert torch.allclose(spconv_out.cpu(), plain, atol=1e-4)
