"""Stage 1 end to end on tiny synthetic scans: training, checkpoints, resume, evaluation."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import ROOT, logged_values
from hydra.utils import instantiate
from omegaconf import open_dict

from ptdistill.checkpoint_io import load_checkpoint
from ptdistill.data.semantickitti import SemanticKITTIDataset
from ptdistill.modules.metrics import FullResolutionIoU
from ptdistill.tasks.iou import evaluate_iou, module_from_checkpoint
from ptdistill.tasks.train import best_score, fit, teacher_home


class Interrupt(L.Callback):
    """Stops training after the first epoch, as a killed job would (last.ckpt is already written)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def _weights(path):
    return {k: v for k, v in load_checkpoint(path)["state_dict"].items()}


@pytest.mark.slow
def test_teacher_stage_trains_registers_and_resumes_exactly(tiny_config):
    # Deterministic kernels: with 2 threads some CPU reductions otherwise differ in the last bits.
    cfg = tiny_config("stage=teacher", "trainer.deterministic=true")
    result = fit(cfg)
    assert 0.0 <= result["val/mIoU"] <= 1.0
    assert (teacher_home(cfg) / "teacher.ckpt").exists()
    uninterrupted = _weights(cfg.paths.output_dir + "/checkpoints/last.ckpt")

    # The same run, stopped after one epoch, then resumed from last.ckpt.
    first = tiny_config("stage=teacher", "trainer.deterministic=true")
    with open_dict(first):
        first.callbacks.interrupt = {"_target_": "test_train_stage1.Interrupt"}
    fit(first)
    resumed = tiny_config("stage=teacher", "trainer.deterministic=true", f"ckpt_path={first.paths.output_dir}/checkpoints/last.ckpt")
    fit(resumed)
    final = _weights(resumed.paths.output_dir + "/checkpoints/last.ckpt")
    assert uninterrupted.keys() == final.keys()
    for key in uninterrupted:
        torch.testing.assert_close(final[key], uninterrupted[key], rtol=0, atol=0, msg=key)


def test_a_teacher_trained_with_another_recipe_is_not_reused_from_the_registry(tiny_config):
    def home(*overrides):  # the registry folder's name (each config has its own temporary root)
        return teacher_home(tiny_config(*overrides)).name

    teacher = home("stage=teacher")
    for loss in ("kld", "topo+grad"):  # stage 2 finds stage 1's teacher, whichever Table 7 row it trains
        assert home("stage=distill", f"loss={loss}") == teacher
    assert home("stage=teacher", "dataset.datamodule.num_workers=0") == teacher
    for other in ("optimizer.lr=0.123", "scheduler.pct_start=0.5", "block_lr_scale=0.5",
                  "recipe.seg.lovasz_weight=1", "teacher_epochs=7"):
        assert home("stage=teacher", other) != teacher, other


def test_best_score_is_read_from_the_best_checkpoint_when_the_callback_lost_it(tiny_config):
    """As in a spawned DDP run, whose children send back the best checkpoint's path but not its score."""
    cfg = tiny_config("stage=teacher", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1")
    result = fit(cfg)
    logged = logged_values(cfg, "val/mIoU")
    assert len(logged) == 2 and result["val/mIoU"] == pytest.approx(max(logged), abs=1e-6)
    returned = instantiate(cfg.callbacks.model_checkpoint)  # the main process's callback after a spawn
    returned.best_model_path = result["checkpoint"]
    assert returned.best_model_score is None
    assert best_score(returned, last_logged=torch.tensor(-1.0)) == result["val/mIoU"]


def test_checkpoint_rebuilds_the_model_alone(tiny_config):
    cfg = tiny_config("stage=teacher", "trainer.max_epochs=1")
    result = fit(cfg)
    module = module_from_checkpoint(result["checkpoint"])
    assert sum(p.numel() for p in module.model.parameters()) > 0
    assert not module.training


def _cli(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_reports_a_malformed_override_and_a_missing_dataset_root(tmp_path):
    bad = _cli("train.py", "trainer.max_epochs=")
    assert bad.returncode != 0 and "trainer.max_epochs" in bad.stderr
    missing = _cli("train.py", "dataset=semantickitti", f"dataset.root={tmp_path}/nowhere", "model=ptv3_tiny",
                   f"paths.log_dir={tmp_path}/out")
    assert missing.returncode != 0
    assert "nowhere" in missing.stderr and "Traceback" not in missing.stderr


def test_evaluate_rejects_a_checkpoint_that_is_not_one_of_ours(tmp_path):
    fake = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, fake)
    result = _cli("evaluate.py", f"ckpt_path={fake}", f"paths.log_dir={tmp_path}/out")
    assert result.returncode != 0 and "not a ptdistill" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_prints_iou_and_saves_predictions_that_score_the_same(tiny_config, capsys):
    """`evaluate.py save_predictions=true`: the `.label` files hold every original point, and scoring
    them against the ground truth gives the mIoU the printed table reports."""
    trained = fit(tiny_config("stage=teacher", "trainer.max_epochs=1"))
    cfg = tiny_config(f"ckpt_path={trained['checkpoint']}", "save_predictions=true", config="evaluate")
    rows = evaluate_iou(cfg)
    assert "mIoU" in capsys.readouterr().out
    assert (Path(cfg.paths.output_dir) / "iou_synthetic_val.csv").read_text().count("\n") == len(rows) + 1

    val = SemanticKITTIDataset(cfg.dataset.root, "val", cfg.dataset.splits, cfg.dataset.learning_map)
    to_class = {raw: k for k, raw in cfg.dataset.learning_map_inv.items()}
    metric = FullResolutionIoU(cfg.dataset.num_classes)
    for i, name in enumerate(val.names):
        sequence, scan = name.split("/")
        raw = np.fromfile(Path(cfg.predictions_dir) / "sequences" / sequence / "predictions" / f"{scan}.label", np.uint32)
        truth = val.read(i)["segment"]
        assert raw.shape == truth.shape, name
        metric.update(torch.tensor([to_class[int(r)] for r in raw]), torch.from_numpy(truth))
    assert FullResolutionIoU.mean(metric.compute()).item() == pytest.approx(rows[-1][1], abs=1e-6)


def test_evaluate_voxelises_at_the_grid_the_checkpoint_was_trained_at(tiny_config, tmp_path):
    """A checkpoint that records grid g is scored at g whatever dataset.grid_size says; one that records
    none (older checkpoints) at dataset.grid_size."""
    trained = fit(tiny_config("stage=teacher", "trainer.max_epochs=1"))
    checkpoint = torch.load(trained["checkpoint"], weights_only=True)
    grid = checkpoint["hyper_parameters"]["grid_size"]
    checkpoint["hyper_parameters"]["grid_size"] = 2 * grid
    torch.save(checkpoint, coarse := tmp_path / "coarse.ckpt")
    del checkpoint["hyper_parameters"]["grid_size"]
    torch.save(checkpoint, unrecorded := tmp_path / "unrecorded.ckpt")

    def score(path, config_grid):
        return evaluate_iou(tiny_config(f"ckpt_path={path}", f"dataset.grid_size={config_grid}", config="evaluate"))

    at_coarse = score(unrecorded, 2 * grid)
    assert score(coarse, grid) == at_coarse
    assert score(trained["checkpoint"], 2 * grid) == score(unrecorded, grid)
    assert at_coarse != score(unrecorded, grid)  # the grid changes the score, so the test can fail
