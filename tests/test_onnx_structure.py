"""The numpy preprocessing of the ONNX student builds exactly the torch model's index structures."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptdistill.data.transforms import GridSample
from ptdistill.deploy import scan as scan_np
from ptdistill.deploy import structure_np
from ptdistill.models.ptv3.attention import PatchLayout
from ptdistill.models.ptv3.pooling import SerializedPooling
from ptdistill.models.ptv3.serialization import ORDERS, encode
from ptdistill.models.ptv3.sparse_conv import build_kernel_map
from ptdistill.models.ptv3.structure import Level, PointBatch

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def voxel_batches(draw):
    """grid_coord (N, 3) int64, distinct within each sample, and offset (B,): 1-3 samples of 1-200 voxels in
    boxes from 1 to 300 voxels a side (dense boxes give full kernel neighbourhoods, tiny ones run out of
    octree levels before the last pooling)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    coords, counts = [], []
    for _ in range(draw(st.integers(1, 3))):
        box = np.array([draw(st.integers(1, 300)) for _ in range(3)])
        n = min(draw(st.integers(1, 200)), int(np.prod(box)))
        flat = rng.choice(int(np.prod(box)), size=n, replace=False)
        coords.append(np.stack(np.unravel_index(flat, box), axis=1) + draw(st.integers(0, 5)))
        counts.append(n)
    return np.concatenate(coords).astype(np.int64), np.cumsum(counts).astype(np.int64)


def torch_levels(grid_coord: np.ndarray, offset: np.ndarray, strides: list[int]) -> list[Level]:
    """The torch model's levels: PointBatch.from_batch, then eval-mode SerializedPooling per stride."""
    n = len(grid_coord)
    batch = {"coord": torch.rand(n, 3), "grid_coord": torch.from_numpy(grid_coord), "feat": torch.rand(n, 2),
             "offset": torch.from_numpy(offset)}
    levels = [PointBatch.from_batch(batch, 2, ORDERS, shuffle=False)]
    for stride in strides:
        levels.append(SerializedPooling(2, 2, stride).eval()(levels[-1]))
    return [point.level for point in levels]


def assert_same(actual: np.ndarray, expected: torch.Tensor, what: str) -> None:
    np.testing.assert_array_equal(actual, expected.numpy(), err_msg=what)


@given(voxel_batches(), st.sampled_from(ORDERS))
@SETTINGS
def test_serialization_codes_match(batch, order):
    grid_coord, offset = batch
    sample = structure_np.sample_index(offset)
    depth = int(grid_coord.max() + 1).bit_length()
    expected = encode(torch.from_numpy(grid_coord), torch.from_numpy(sample), depth, order)
    assert_same(structure_np.encode(grid_coord, sample, depth, order), expected, order)


@given(voxel_batches(), st.sampled_from([(2, 2, 2, 2), (4, 2), (2, 8, 2), (16,)]))
@SETTINGS
def test_levels_and_kernel_maps_match(batch, strides):
    grid_coord, offset = batch
    expected = torch_levels(grid_coord, offset, list(strides))
    levels = structure_np.build_levels(grid_coord, offset, ORDERS, [s.bit_length() - 1 for s in strides])
    assert len(levels) == len(expected)
    partial = structure_np.build_levels(grid_coord, offset, ORDERS, [s.bit_length() - 1 for s in strides], used={3})
    for level, full in zip(partial, levels):  # only the orders read are computed; those are the same
        for name in ("code", "order", "inverse"):
            np.testing.assert_array_equal(getattr(level, name)[[0, 3]], getattr(full, name)[[0, 3]])
        np.testing.assert_array_equal(level.cluster, full.cluster)
    for index, (level, point) in enumerate(zip(levels, expected)):
        for name in ("grid_coord", "batch", "offset", "code", "order", "inverse"):
            assert_same(getattr(level, name), getattr(point, name), f"level {index} {name}")
        assert level.depth == point.depth
        if index:
            assert_same(level.cluster, point.pooling_inverse, f"level {index} cluster")
            # `head` may name any row of the cell: they share the cell's codes and voxel.
            parent = levels[index - 1]
            np.testing.assert_array_equal(level.cluster[level.head], np.arange(len(level.head)))
            assert np.array_equal(parent.batch[level.head], level.batch)
        for k in (3, 5):
            got = structure_np.build_kernel_map(level.grid_coord, level.batch, k)
            want = build_kernel_map(point.grid_coord, point.batch, k)
            assert_same(got.in_index, want.in_index, f"level {index} k{k} in_index")
            assert_same(got.out_index, want.out_index, f"level {index} k{k} out_index")
            assert (got.offsets, got.counts) == (want.offsets, want.counts)
            bounds = got.bounds(k)
            assert bounds[-1] == len(got.in_index) and bounds[k**3 // 2] == bounds[k**3 // 2 + 1]


@given(st.lists(st.integers(1, 300), min_size=1, max_size=4), st.sampled_from([1, 2, 7, 16, 128]))
@SETTINGS
def test_patch_layouts_match(counts, patch_size):
    got = structure_np.build_patch_layout(counts, patch_size)
    want = PatchLayout.build(counts, patch_size, torch.device("cpu"))
    assert_same(got.gather, want.gather, "gather")
    assert_same(got.scatter, want.scatter, "scatter")
    assert (got.full_patches, got.short_lengths) == (want.full_patches, want.short_lengths)
    for sample, n in enumerate(counts):  # every padded slot of a full patch holds a point of its own sample
        assert n < patch_size or np.isin(got.gather[got.scatter[sum(counts[:sample]):sum(counts[:sample + 1])]],
                                         np.arange(sum(counts[:sample]), sum(counts[:sample + 1]))).all()


@given(voxel_batches(), st.sampled_from([4, 16, 64]), st.integers(0, 3))
@SETTINGS
def test_patch_rows_are_the_torch_gathers(batch, patch_size, order_index):
    """rows (P, L) and back (N,) are attention's `order[o][gather]` and `scatter[inverse[o]]`; patches of
    mixed lengths (short samples beside full ones) are refused."""
    grid_coord, offset = batch
    point = torch_levels(grid_coord, offset, [])[0]
    level = structure_np.first_level(grid_coord, offset, ORDERS)
    counts = level.counts
    layout = structure_np.build_patch_layout(counts, patch_size)
    lengths = {min(patch_size, n) for n in counts}
    if len(lengths) > 1:
        with pytest.raises(ValueError, match="one length"):
            structure_np.patch_rows(level, order_index, layout)
        return
    rows, back = structure_np.patch_rows(level, order_index, layout)
    want = PatchLayout.build(counts, patch_size, torch.device("cpu"))
    assert rows.shape[1] == lengths.pop()
    assert_same(rows.reshape(-1), point.order[order_index][want.gather], "rows")
    assert_same(back, want.scatter[point.inverse[order_index]], "back")


@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.sampled_from([0.05, 0.3, 1.0, 7.0]))
@SETTINGS
def test_grid_sample_matches_the_evaluation_transform(seed, n, grid_size):
    rng = np.random.default_rng(seed)
    coord = (rng.normal(size=(n, 3)) * rng.uniform(0.1, 30, size=3)).astype(np.float32)
    sample = {"coord": coord.copy(), "strength": np.zeros((n, 1), np.float32), "segment": np.zeros(n, np.int64)}
    expected = GridSample(grid_size, train=False)(sample, rng)
    grid_coord, keep, inverse = scan_np.grid_sample(coord, grid_size)
    np.testing.assert_array_equal(grid_coord, expected["grid_coord"])
    np.testing.assert_array_equal(coord[keep], expected["coord"])
    np.testing.assert_array_equal(inverse, expected["inverse"])


def test_graph_spec_round_trips_and_names_inputs():
    spec = structure_np.GraphSpec(in_channels=4, orders=ORDERS, pool_levels=(1, 1), patch_sizes=(16, 16, 0),
                                  level_orders=((0, 1), (0,), ()), level_kernels=((3, 5), (3,), ()))
    assert structure_np.GraphSpec.from_json(spec.to_json()) == spec
    names = spec.input_names()
    assert names[0] == "feat" and "l0_k5_in" in names and "l0_o1_rows" in names and "l2_cluster" in names
    assert not any(name.startswith("l2_o") or name == "l2_chunks" for name in names)  # no attention there
    grid_coord = np.stack(np.unravel_index(np.arange(40), (4, 5, 2)), axis=1)
    inputs = structure_np.graph_inputs(np.zeros((40, 4), np.float32), grid_coord, np.array([40]), spec)
    assert set(inputs) == set(names)
    assert inputs["l0_o0_rows"].shape == (3, 16) and inputs["l0_chunks"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3]
    assert all(value.dtype == np.int64 for name, value in inputs.items() if name != "feat")


def test_depth_limit_is_the_models():
    with pytest.raises(ValueError, match="beyond the 65535"):
        structure_np.first_level(np.array([[0, 0, 70000]]), np.array([1]), ORDERS)
