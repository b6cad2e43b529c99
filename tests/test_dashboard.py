"""`logger=wandb`: a distillation run logs loss terms, diagrams, bird's-eye images and the IoU table offline."""

import json
from pathlib import Path

import numpy as np
import pytest

from ptdistill.tasks.train import fit
from ptdistill.viz.bev import bev_image


def test_bev_image_paints_each_point_in_its_class_colour():
    coord = np.array([[0.0, 0.0, 0.0], [10.0, -5.0, 1.0], [100.0, 0.0, 0.0]])  # the last is outside
    image = bev_image(coord, np.array([0, 1, 2]), extent=20.0, resolution=0.5)
    assert image.shape == (80, 80, 3)
    painted = np.argwhere(image.any(axis=2))
    assert {tuple(p) for p in painted} == {(40, 40), (50, 60)}  # rows from +y down, columns from -x
    assert not np.array_equal(image[40, 40], image[50, 60])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_wandb_offline_run_logs_terms_and_media(tiny_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_config("loss=topo+grad", "loss.terms.topo.loss.num_samples=48", "logger=[csv,wandb]",
                      "trainer.max_epochs=1", "trainer.log_every_n_steps=1", "callbacks.dashboard.diagrams_every_n_steps=1")
    fit(cfg)
    output = Path(cfg.paths.output_dir)
    (run,) = output.glob("wandb/offline-run-*")
    media = [p.relative_to(run / "files" / "media").parts[:-1] for p in (run / "files" / "media").rglob("*.*")]
    assert ("images", "topology") in media and ("images", "val") in media and ("table", "val") in media
    (table,) = (run / "files" / "media" / "table" / "val").glob("per_class_iou*.json")
    assert [row[0] for row in json.loads(table.read_text())["data"]] == list(cfg.dataset.class_names)
    # The scalars go to every logger; the CSV copy is readable here.
    (metrics,) = output.glob("csv/*/metrics.csv")
    header = metrics.read_text().splitlines()[0].split(",")
    for key in ("train/raw/kd", "train/raw/topo", "train/raw/grad", "train/weighted/grad", "train/seg",
                "lr-AdamW", "val/mIoU", f"val/IoU/{cfg.dataset.class_names[0]}"):
        assert any(column.startswith(key) for column in header), key
