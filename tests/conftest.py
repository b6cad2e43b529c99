"""Shared fixtures: the project's Hydra configs composed on tiny synthetic scans and tiny models."""

import csv
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "disabled")

# Scans of a few thousand points and models of a few hundred thousand parameters: seconds per epoch.
TINY = [
    "model=ptv3_tiny",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "dataset.generator.num_scans={train: 4, val: 2, test: 2}",
    "dataset.generator.lidar.beams=16",
    "dataset.generator.lidar.azimuth_steps=256",
    "dataset.grid_size=0.3",
    "dataset.datamodule.batch_size=2",
    "dataset.datamodule.num_workers=0",
]


def compose_config(tmp_path: Path, *overrides: str, config: str = "train") -> DictConfig:
    """The config `python train.py <overrides>` would run, writing under tmp_path, data shared per session."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config, overrides=[*TINY, *overrides])
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.data_dir = str(tmp_path.parent / "data")  # the tiny scans are generated once per session
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def logged_values(cfg: DictConfig, key: str) -> list[float]:
    """The values of `key` that a run's CSV logger wrote, in order (rows that do not log it skipped)."""
    (metrics,) = Path(cfg.paths.output_dir).glob("csv/*/metrics.csv")
    with metrics.open() as rows:
        return [float(row[key]) for row in csv.DictReader(rows) if row.get(key)]


def fabricated_student_checkpoint(cfg: DictConfig, path: Path) -> torch.nn.Module:
    """A train.py-style checkpoint of `cfg.model.student` at `path`, its BatchNorm statistics and seg head
    perturbed so that it is not at its initialisation; returns the model (eval mode)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg.model.student, resolve=True)
    torch.manual_seed(0)
    model = instantiate(config)
    for name, buffer in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buffer.uniform_(0.5, 1.5)
    torch.nn.init.normal_(model.seg_head.weight, std=3.0)
    checkpoint = {
        "hyper_parameters": {"model": config, "num_classes": cfg.dataset.num_classes,
                             "class_names": list(cfg.dataset.class_names)},
        "state_dict": {f"model.{key}": value for key, value in model.state_dict().items()},
    }
    torch.save(checkpoint, path)
    return model.eval()


@pytest.fixture
def one_thread():
    """For tiny clouds one thread is as fast as two, and immune to other processes holding the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config(tmp_path_factory):
    def make(*overrides: str, config: str = "train") -> DictConfig:
        return compose_config(tmp_path_factory.mktemp("run"), *overrides, config=config)

    return make
