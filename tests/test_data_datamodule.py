"""The dataset configs and the DataModule they instantiate: facts, generation, batches, skip counting."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ptdistill.data.datamodule import LidarDataModule
from ptdistill.data.errors import DatasetNotFoundError
from ptdistill.data.transforms import GridSample, RandomFlip, RandomJitter, RandomRotateZ, RandomScale

CONF = Path(__file__).parents[1] / "conf"
SMALL = "dataset.generator.num_scans={train: 3, val: 2, test: 1}"


def dataset_config(name: str, data_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=[f"+dataset={name}", f"+paths.data_dir={data_dir}", "+seed=0", *overrides]).dataset


@pytest.mark.parametrize("name", ["synthetic", "semantickitti"])
def test_config_carries_the_dataset_facts(tmp_path, name):
    cfg = dataset_config(name, tmp_path)
    assert cfg.root == f"{tmp_path}/{name}"
    assert cfg.in_channels == 4 and cfg.ignore_index == -1 and cfg.grid_size == 0.05
    assert len(cfg.class_names) == cfg.num_classes >= 10
    assert set(cfg.splits) == {"train", "val", "test"}
    assert sorted({int(v) for v in cfg.learning_map.values()}) == [-1, *range(cfg.num_classes)]
    datamodule = instantiate(cfg.datamodule)
    assert isinstance(datamodule, LidarDataModule)
    steps = datamodule.train_transform.transforms
    assert [type(t) for t in steps[:5]] == [
        RandomRotateZ,
        RandomScale,
        RandomFlip,
        RandomJitter,
        GridSample,
    ]  # paper C.3 order
    assert steps[0].max_radians == pytest.approx(np.radians(1.0)) and steps[4].train
    assert not datamodule.eval_transform.transforms[0].train


def test_missing_semantickitti_root_shows_the_layout(tmp_path):
    datamodule = instantiate(dataset_config("semantickitti", tmp_path).datamodule)
    datamodule.prepare_data()
    with pytest.raises(DatasetNotFoundError, match=r"sequences/<XX>/labels/<NNNNNN>\.label"):
        datamodule.setup("fit")


def test_synthetic_datamodule_generates_and_batches(tmp_path):
    cfg = dataset_config("synthetic", tmp_path, SMALL, "dataset.grid_size=0.2", "dataset.datamodule.num_workers=0")
    datamodule = instantiate(cfg.datamodule)
    datamodule.prepare_data()
    assert len(list(Path(cfg.root).rglob("*.bin"))) == 6
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert len(batch["name"]) == 2 and batch["offset"][-1] == len(batch["coord"])
    assert batch["feat"].shape == (len(batch["coord"]), cfg.in_channels) and batch["feat"].dtype == torch.float32
    assert batch["segment"].min() >= -1 and batch["segment"].max() < cfg.num_classes
    for rows in torch.tensor_split(batch["grid_coord"], batch["offset"][:-1]):
        assert rows.min(0).values.tolist() == [0, 0, 0]  # grid coordinates start at 0 in every sample
    val = next(iter(datamodule.val_dataloader()))
    assert val["name"] == ["01/000000"] and val["inverse"].max() < len(val["coord"])
    assert val["origin_offset"][-1] == len(val["origin_segment"]) > len(val["coord"])
    datamodule.setup("test")
    assert [b["name"] for b in datamodule.test_dataloader()] == [["02/000000"]]


def test_skipped_samples_are_counted_across_workers(tmp_path):
    cfg = dataset_config(
        "synthetic",
        tmp_path,
        SMALL,
        "dataset.grid_size=0.5",
        "dataset.datamodule.num_workers=2",
        "dataset.datamodule.dataset.skip_bad=true",
    )
    datamodule = instantiate(cfg.datamodule)
    datamodule.prepare_data()
    (Path(cfg.root) / "sequences" / "00" / "labels" / "000001.label").unlink()
    datamodule.setup("fit")
    names = [name for batch in datamodule.train_dataloader() for name in batch["name"]]
    assert len(names) == 3 and "00/000001" not in names
    assert datamodule.num_skipped == 1
