"""Test-time augmentation (views, collation, softmax summed at full resolution) and the submission writers."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
from omegaconf import OmegaConf

from ptdistill.data import tta as test_time  # not `import TestTimeAugmentation`: pytest would collect it
from ptdistill.data.collate import collate
from ptdistill.data.dataset import LearningMap
from ptdistill.data.submission import NuScenesWriter, PredictionWriter, SemanticKITTIWriter
from ptdistill.data.transforms import Compose, ConcatFeatures, GridSample
from ptdistill.data.tta import View
from ptdistill.scoring import full_resolution_scores

CONF = Path(__file__).parents[1] / "conf" / "dataset"
EVAL = Compose([GridSample(0.05, train=False), ConcatFeatures()])


def scan(rng, num_points=300, name="00/000000"):
    return {"coord": rng.uniform(-5, 5, (num_points, 3)).astype(np.float32),
            "strength": rng.random((num_points, 1)).astype(np.float32),
            "segment": rng.integers(-1, 4, num_points), "name": name}


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([0, 90, 180, 270]), st.floats(0.5, 2.0), st.booleans())
def test_view_rotates_scales_and_flips(degrees, scale, flip):
    coord = np.random.default_rng(degrees).normal(0, 3, (20, 3)).astype(np.float32)
    out = View(degrees, scale, flip)({"coord": coord.copy()}, None)["coord"]
    x, y = coord[:, 0], coord[:, 1]
    turned = {0: (x, y), 90: (-y, x), 180: (-x, -y), 270: (y, -x)}[degrees]
    sign = -1 if flip else 1
    expected = np.column_stack([sign * turned[0], sign * turned[1], coord[:, 2]]) * scale
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_tta_needs_views():
    with pytest.raises(ValueError, match="dataset.tta.views"):
        test_time.TestTimeAugmentation(EVAL, [])


def test_collated_views_map_every_original_point_into_each_view():
    rng = np.random.default_rng(1)
    views = [{"degrees": d} for d in (0, 90, 180, 270)]
    augmentation = test_time.TestTimeAugmentation(EVAL, views)
    samples = [scan(rng, 300, "00/000000"), scan(rng, 200, "00/000001")]
    batch = collate([augmentation(dict(s), rng) for s in samples])
    assert batch["name"] == ["00/000000", "00/000001"] and len(batch["offset"]) == 8
    assert batch["inverse"].shape == (4, 500)
    np.testing.assert_array_equal(batch["origin_segment"], np.concatenate([s["segment"] for s in samples]))
    np.testing.assert_array_equal(batch["origin_offset"], [300, 500])
    original = np.concatenate([s["coord"] for s in samples])
    starts = np.concatenate([[0], batch["offset"][:-1].numpy()])
    for v, view in enumerate(views):
        rotated = View(**view)({"coord": original.copy()}, rng)["coord"]
        voxel = batch["coord"][batch["inverse"][v]].numpy()  # the kept point of each original point's voxel
        assert np.abs(voxel - rotated).max() <= 0.05 + 1e-5
        rows = batch["inverse"][v].numpy()
        scan_of_point = np.repeat([0, 1], [300, 200])
        assert (rows >= starts[scan_of_point * 4 + v]).all() and (rows < batch["offset"][scan_of_point * 4 + v].numpy()).all()


def test_softmax_is_summed_over_views_at_full_resolution():
    rng = np.random.default_rng(2)
    logits = torch.from_numpy(rng.normal(0, 2, (30, 5)))
    inverse = torch.from_numpy(rng.integers(0, 30, (3, 50)))
    expected = sum(logits.softmax(1)[inverse[v]] for v in range(3))
    torch.testing.assert_close(full_resolution_scores(logits, inverse), expected)
    torch.testing.assert_close(full_resolution_scores(logits, inverse[0]), logits.softmax(1)[inverse[0]])
    # Two views weakly for class 1 outvote one view strongly for class 0 only if their mass is larger.
    votes = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6]], dtype=torch.float64))
    assert full_resolution_scores(votes, torch.tensor([[0], [1], [2]])).argmax(1).item() == 0


@pytest.mark.parametrize("name, num_views", [("semantickitti", 4), ("nuscenes", 10), ("waymo", 4)])
def test_dataset_configs_enable_tta(name, num_views):
    with initialize_config_dir(config_dir=str(CONF.parent.resolve()), version_base="1.3"):  # with its base, _lidar
        dataset = compose(overrides=[f"+dataset={name}"]).dataset
    cfg = OmegaConf.create({"dataset": OmegaConf.to_container(dataset), "seed": 0, "paths": {"data_dir": "."}})
    assert not isinstance(instantiate(cfg.dataset.datamodule).eval_transform, test_time.TestTimeAugmentation)
    cfg.dataset.tta.enabled = True
    datamodule = instantiate(cfg.dataset.datamodule)
    assert len(datamodule.eval_transform.views) == num_views
    rng = np.random.default_rng(3)
    assert len(datamodule.eval_transform(scan(rng), rng)["views"]) == num_views


def test_semantickitti_labels_round_trip(tmp_path):
    config = OmegaConf.load(CONF / "semantickitti.yaml")
    writer = SemanticKITTIWriter(config.learning_map_inv)
    prediction = np.random.default_rng(4).integers(0, 19, 1000)
    path = writer(tmp_path, "08/000123", prediction)
    assert path == tmp_path / "sequences" / "08" / "predictions" / "000123.label"
    raw = np.fromfile(path, dtype=np.uint32)
    np.testing.assert_array_equal(LearningMap(config.learning_map)(raw.astype(np.int64), path), prediction)
    assert set(raw.tolist()) <= {int(k) for k in config.learning_map}


def test_nuscenes_lidarseg_round_trip(tmp_path):
    config = OmegaConf.load(CONF / "nuscenes.yaml")
    prediction = np.random.default_rng(5).integers(0, 16, 1000)
    path = NuScenesWriter("test")(tmp_path, "token123", prediction)
    assert path == tmp_path / "lidarseg" / "test" / "token123_lidarseg.bin"
    written = np.fromfile(path, dtype=np.uint8)
    mapper = SimpleNamespace(ignore_class=LidarsegClassMapper.get_ignore_class())
    challenge = LidarsegClassMapper.get_coarse2idx(mapper)  # the challenge's class -> index, 0 ignored
    names = {index: name for name, index in challenge.items()}
    assert [names[int(i)] for i in written] == [list(config.class_names)[k] for k in prediction]


def test_prediction_writer_splits_batches_by_scan(tmp_path):
    written = {}
    writer = PredictionWriter(lambda directory, name, prediction: written.setdefault(name, prediction), tmp_path)
    batch = {"name": ["a", "b"], "origin_offset": torch.tensor([3, 5])}
    writer.on_test_batch_end(None, None, torch.tensor([0, 1, 2, 3, 4]), batch, 0)
    np.testing.assert_array_equal(written["a"], [0, 1, 2])
    np.testing.assert_array_equal(written["b"], [3, 4])
