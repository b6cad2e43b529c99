"""`python train.py` end to end: stage 2 trains its teacher first, then reuses it; the Table 7 report."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY


def _train(tmp_path, *overrides):
    args = [*TINY, "trainer.max_epochs=1", f"paths.root_dir={tmp_path}", f"paths.data_dir={tmp_path.parent}/data",
            *overrides]
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # one thread in every process: runs comparable to the bit
    result = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=env)
    result.log = result.stdout + result.stderr  # Hydra's logging goes to stdout
    return result


@pytest.mark.slow
def test_distillation_trains_the_missing_teacher_then_reuses_it(tmp_path):
    first = _train(tmp_path, "loss=kld", "stage.baseline=true", "test=true")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "training the teacher first" in first.log
    assert "in eval mode" not in first.log  # Lightning's warning about the frozen teacher, which is meant
    assert "| teacher |" in first.stdout and "| student (no KD) |" in first.stdout
    teacher_row = next(line for line in first.stdout.splitlines() if line.startswith("| teacher |"))
    assert teacher_row.count("|") == 4 and "n/a" not in teacher_row  # val and test, both scored
    metrics = [json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("metrics.json")]
    assert len(metrics) == 1 and metrics[0]["loss"] == "kld" and 0 <= metrics[0]["val/mIoU"] <= 1

    second = _train(tmp_path, "loss=kld", "seed=1")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Reusing the stage-1 teacher" in second.log and "training the teacher first" not in second.log

    # The no-KD student in a child process beside the KD student: the same run as in-process.
    third = _train(tmp_path, "loss=kld", "stage.baseline=true", "stage.baseline_alongside=true", "test=true",
                   "hydra.run.dir=" + str(tmp_path / "alongside"))
    assert third.returncode == 0, third.stderr[-3000:]
    assert "trains beside this run in a child process" in third.log and "| student (no KD) |" in third.stdout
    alongside = json.loads((tmp_path / "alongside" / "metrics.json").read_text())["rows"]
    assert (tmp_path / "alongside" / "student" / "metrics.json").exists()
    assert alongside["student (no KD)"] == metrics[0]["rows"]["student (no KD)"]


@pytest.mark.slow
def test_multirun_from_any_folder_writes_one_run_per_job(tmp_path):
    """`train.py -m` resolves its sweep folder before Hydra's runtime config exists: paths must not need it."""
    args = [*TINY, "trainer.max_epochs=1", f"paths.data_dir={tmp_path.parent}/data", "stage=teacher", "seed=0,1"]
    without_root = {k: v for k, v in os.environ.items() if k != "PTDISTILL_ROOT"}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, env=without_root)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent.name for p in (tmp_path / "outputs" / "multirun").glob("*/*/checkpoints"))
    assert jobs == ["0", "1"]
