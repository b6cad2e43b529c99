"""Collate: concatenation with offsets, the inverse map shifted into the batch, the batch convention."""

import numpy as np
import torch

from ptdistill.data.collate import collate
from ptdistill.data.transforms import Compose, ConcatFeatures, GridSample

EVAL = Compose([GridSample(0.5, train=False), ConcatFeatures()])
TRAIN = Compose([GridSample(0.5, train=True), ConcatFeatures()])


def samples(transform, sizes=(300, 120, 450)) -> list[dict]:
    out = []
    for i, n in enumerate(sizes):
        rng = np.random.default_rng(i)
        sample = {
            "coord": rng.normal(0, 2, (n, 3)).astype(np.float32),
            "strength": rng.random((n, 1), dtype=np.float32),
            "segment": rng.integers(-1, 5, n),
            "name": f"00/{i:06d}",
        }
        out.append(transform(sample, rng))
    return out


def test_eval_batch_follows_the_convention():
    parts = samples(EVAL)
    batch = collate(parts)
    counts = [len(p["coord"]) for p in parts]
    full = [len(p["origin_segment"]) for p in parts]
    expected = {
        "coord": torch.float32,
        "grid_coord": torch.int64,
        "feat": torch.float32,
        "segment": torch.int64,
        "offset": torch.int64,
        "inverse": torch.int64,
        "origin_segment": torch.int64,
        "origin_offset": torch.int64,
    }
    assert set(batch) == {*expected, "name"}
    assert {key: batch[key].dtype for key in expected} == expected
    assert batch["offset"].tolist() == np.cumsum(counts).tolist()
    assert batch["origin_offset"].tolist() == np.cumsum(full).tolist()
    assert batch["coord"].shape == (sum(counts), 3) and batch["feat"].shape == (sum(counts), 4)
    assert batch["name"] == ["00/000000", "00/000001", "00/000002"]
    # the shifted inverse picks, for every original point of sample b, the row of its voxel in sample b
    start, full_start = 0, 0
    for part, count, n in zip(parts, counts, full):
        inverse = batch["inverse"][full_start : full_start + n]
        assert ((inverse >= start) & (inverse < start + count)).all()
        np.testing.assert_array_equal(batch["grid_coord"][inverse].numpy(), part["grid_coord"][part["inverse"]])
        np.testing.assert_array_equal(
            batch["origin_segment"][full_start : full_start + n].numpy(), part["origin_segment"]
        )
        start, full_start = start + count, full_start + n


def test_train_batch_concatenates_without_eval_keys():
    parts = samples(TRAIN)
    batch = collate(parts)
    assert set(batch) == {"coord", "grid_coord", "feat", "segment", "offset", "name"}
    bounds = [0, *batch["offset"].tolist()]
    for part, lo, hi in zip(parts, bounds, bounds[1:]):
        np.testing.assert_array_equal(batch["coord"][lo:hi].numpy(), part["coord"])
        np.testing.assert_array_equal(batch["segment"][lo:hi].numpy(), part["segment"])
