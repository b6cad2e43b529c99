"""Transforms of paper C.3 and grid sampling: shapes, dtypes, ranges and the full-resolution inverse map."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.data.transforms import (
    Compose,
    ConcatFeatures,
    GridSample,
    RandomFlip,
    RandomJitter,
    RandomRotateZ,
    RandomScale,
)


def make_sample(seed: int, num_points: int = 500, spread: float = 5.0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "coord": rng.normal(0, spread, (num_points, 3)).astype(np.float32),
        "strength": rng.random((num_points, 1), dtype=np.float32),
        "segment": rng.integers(-1, 10, num_points),
        "name": "00/000000",
    }


def train_transform(grid_size: float = 0.2) -> Compose:
    return Compose(
        [
            RandomRotateZ(1.0),
            RandomScale(0.9, 1.1),
            RandomFlip(),
            RandomJitter(),
            GridSample(grid_size, train=True),
            ConcatFeatures(),
        ]
    )


def voxel_of(coord: np.ndarray, origin: np.ndarray, grid_size: float) -> np.ndarray:
    return np.floor((coord - origin) / grid_size).astype(np.int64)


@pytest.mark.parametrize("train", [True, False])
def test_pipeline_shapes_and_dtypes(train):
    sample = make_sample(0, spread=0.5)
    transform = train_transform() if train else Compose([GridSample(0.2, train=False), ConcatFeatures()])
    out = transform(sample, np.random.default_rng(0))
    n = len(out["coord"])
    assert 0 < n < 500
    assert out["coord"].shape == (n, 3) and out["coord"].dtype == np.float32
    assert out["grid_coord"].shape == (n, 3) and out["grid_coord"].dtype == np.int64
    assert out["feat"].shape == (n, 4) and out["feat"].dtype == np.float32
    assert out["segment"].shape == (n,) and out["segment"].dtype == np.int64
    np.testing.assert_array_equal(out["feat"], np.concatenate([out["coord"], out["strength"]], axis=1))
    assert ("inverse" in out) is (not train)
    if not train:
        assert out["inverse"].shape == (500,) and out["origin_segment"].shape == (500,)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), grid_size=st.floats(0.05, 2.0), spread=st.floats(0.1, 30.0))
def test_eval_grid_sample_maps_every_point_to_the_voxel_containing_it(seed, grid_size, spread):
    sample = make_sample(seed, spread=spread)
    coord, segment = sample["coord"].copy(), sample["segment"].copy()
    out = GridSample(grid_size, train=False)(sample, np.random.default_rng(0))
    voxels = voxel_of(coord, coord.min(axis=0), grid_size)
    assert len(np.unique(out["grid_coord"], axis=0)) == len(out["grid_coord"])  # one point per voxel
    assert len(out["grid_coord"]) == len(np.unique(voxels, axis=0))  # every voxel kept
    np.testing.assert_array_equal(out["grid_coord"][out["inverse"]], voxels)  # each point -> its own voxel
    np.testing.assert_array_equal(voxel_of(out["coord"], coord.min(axis=0), grid_size), out["grid_coord"])
    np.testing.assert_array_equal(out["origin_segment"], segment)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), grid_size=st.floats(0.05, 2.0))
def test_train_grid_sample_keeps_one_random_original_point_per_voxel(seed, grid_size):
    sample = make_sample(seed)
    coord = sample["coord"].copy()
    rows = {tuple(p): i for i, p in enumerate(coord)}
    out = GridSample(grid_size, train=True)(dict(sample), np.random.default_rng(seed))
    voxels = voxel_of(coord, coord.min(axis=0), grid_size)
    assert len(out["grid_coord"]) == len(np.unique(voxels, axis=0))
    kept = np.array([rows[tuple(p)] for p in out["coord"]])  # kept points are original points...
    np.testing.assert_array_equal(voxels[kept], out["grid_coord"])  # ...of their own voxel
    np.testing.assert_array_equal(out["segment"], sample["segment"][kept])


def test_train_grid_sample_choice_is_random():
    sample = make_sample(0, num_points=2000, spread=1.0)
    picks = [GridSample(1.0, train=True)(dict(sample), np.random.default_rng(seed))["coord"] for seed in range(2)]
    assert picks[0].shape == picks[1].shape and not np.array_equal(picks[0], picks[1])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_degrees=st.floats(0.0, 180.0))
def test_rotation_is_about_z_within_range(seed, max_degrees):
    sample = make_sample(seed)
    coord = sample["coord"].copy()
    out = RandomRotateZ(max_degrees)(sample, np.random.default_rng(seed))["coord"]
    np.testing.assert_allclose(out[:, 2], coord[:, 2])
    np.testing.assert_allclose(np.hypot(out[:, 0], out[:, 1]), np.hypot(coord[:, 0], coord[:, 1]), rtol=1e-5, atol=1e-5)
    angle = np.arctan2(out[:, 1], out[:, 0]) - np.arctan2(coord[:, 1], coord[:, 0])
    angle = np.degrees(np.angle(np.exp(1j * angle)))  # wrapped to (-180, 180]
    far = np.hypot(coord[:, 0], coord[:, 1]) > 1.0
    assert np.ptp(angle[far]) < 1e-2 and abs(angle[far][0]) <= max_degrees + 1e-3


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_scale_is_uniform_within_range(seed):
    sample = make_sample(seed)
    coord = sample["coord"].copy()
    ratio = RandomScale(0.9, 1.1)(sample, np.random.default_rng(seed))["coord"] / coord
    assert np.ptp(ratio) < 1e-5 and 0.9 - 1e-6 <= ratio[0, 0] <= 1.1 + 1e-6


def test_flip_mirrors_x_and_y_independently():
    coord = make_sample(0)["coord"]
    seen = set()
    for seed in range(40):
        out = RandomFlip(0.5)({"coord": coord.copy()}, np.random.default_rng(seed))["coord"]
        sign = np.sign(out[0] / coord[0])
        np.testing.assert_array_equal(out, coord * sign)
        assert sign[2] == 1
        seen.add(tuple(sign[:2]))
    assert seen == {(1, 1), (1, -1), (-1, 1), (-1, -1)}


def test_jitter_is_clipped_gaussian():
    coord = np.zeros((20000, 3), np.float32)
    delta = RandomJitter(sigma=0.005, clip=0.02)({"coord": coord}, np.random.default_rng(0))["coord"]
    assert np.abs(delta).max() <= 0.02
    assert delta.std() == pytest.approx(0.005, rel=0.05) and abs(delta.mean()) < 1e-4
    wide = RandomJitter(sigma=0.1, clip=0.02)({"coord": coord}, np.random.default_rng(0))["coord"]
    assert np.abs(wide).max() == pytest.approx(0.02)


def test_bad_grid_size_is_rejected():
    with pytest.raises(ValueError, match="grid_size"):
        GridSample(0.0)
