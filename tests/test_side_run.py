"""The side run (stage.baseline_alongside): threads handed back when the child ends, a failed child fails fast."""

import subprocess
import sys

import pytest
import torch

from ptdistill.tasks.side_run import SideRun


def _side_run(tmp_path, code: str) -> SideRun:
    """A SideRun around a child that runs `code`, without Hydra (what __init__ needs to start a train.py)."""
    run = SideRun.__new__(SideRun)
    run.folder, run.output, run.threads = tmp_path, tmp_path / "stdout.log", torch.get_num_threads()
    run.process = subprocess.Popen([sys.executable, "-c", code])
    return run


def test_threads_come_back_once_the_child_has_ended(tmp_path):
    run = _side_run(tmp_path, "import time; time.sleep(30)")
    torch.set_num_threads(1)
    try:
        assert not run.reclaim_threads() and torch.get_num_threads() == 1  # still running: keeps its threads
    finally:
        run.process.kill()
    run = _side_run(tmp_path, "pass")
    run.process.wait()
    assert run.reclaim_threads() and torch.get_num_threads() == run.threads


def test_a_failed_child_stops_the_run_naming_its_output(tmp_path):
    run = _side_run(tmp_path, "raise SystemExit(3)")
    run.process.wait()
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\).*stdout.log"):
        run.reclaim_threads()


def test_leaving_without_join_stops_the_child(tmp_path):
    with _side_run(tmp_path, "import time; time.sleep(60)") as run:
        pass
    assert run.process.returncode is not None  # terminated, not left running
