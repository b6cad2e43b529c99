"""`ptdistill.bench.fit`: a model's fit of each split, scored as training scores val and test."""

import pytest
import torch
from conftest import TINY
from hydra.utils import instantiate

from ptdistill.bench.fit import fit_table, split_fit
from ptdistill.data.collate import collate
from ptdistill.tasks.iou import module_from_checkpoint
from ptdistill.tasks.train import fit


def test_fit_scores_val_as_training_does_and_every_split_of_every_checkpoint(tiny_config):
    cfg = tiny_config("stage=teacher", "trainer.max_epochs=1", "test=true")
    result = fit(cfg)
    module = module_from_checkpoint(result["checkpoint"])
    datamodule = instantiate(cfg.dataset.datamodule, num_workers=0)
    scores = {split: split_fit(module, datamodule.dataset(split=split, transform=datamodule.eval_transform))
              for split in ("val", "test")}
    assert scores["val"]["mIoU"] == pytest.approx(100 * result["val/mIoU"], abs=1e-4)
    assert scores["test"]["mIoU"] == pytest.approx(100 * result["test/mIoU"], abs=1e-4)

    # p(label) by hand on one val scan: the softmax of each point's voxel at its true class.
    scan = datamodule.dataset(split="val", transform=datamodule.eval_transform)
    sample = scan[0]
    with torch.no_grad():
        probabilities = module(collate([sample])).softmax(dim=1)  # (N, K)
    labels = torch.as_tensor(sample["origin_segment"])
    inverse = torch.as_tensor(sample["inverse"])
    keep = labels != cfg.dataset.ignore_index
    by_hand = probabilities[inverse[keep], labels[keep]].mean().item()
    single = split_fit(module, torch.utils.data.Subset(scan, [0]))
    assert single["p_label"] == pytest.approx(by_hand, rel=1e-5)
    assert 0 < single["accuracy"] <= 100

    table = fit_table([result["checkpoint"]] * 2, [*TINY, f"paths.root_dir={cfg.paths.root_dir}",
                                                     f"paths.data_dir={cfg.paths.data_dir}"])
    rows = [line for line in table.splitlines() if line.startswith(f"| {result['checkpoint']} |")]
    assert [row.split(" | ")[1] for row in rows] == ["train", "val", "test"] * 2
    assert f"| val | {100 * result['val/mIoU']:.2f} |" in rows[1]
