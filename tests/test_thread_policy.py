"""The thread policy: OpenMP's wait set before torch loads, the environment's own choice kept."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from ptdistill.thread_policy import OPENMP_WAIT_VARIABLES, apply_thread_policy


def _python(code: str, **env: str) -> str:
    """Run code in a fresh interpreter whose environment sets no OpenMP wait variable but `env`."""
    clean = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_VARIABLES} | env
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


POLICY = """
import os, sys
from ptdistill.thread_policy import apply_thread_policy
apply_thread_policy(1, {spin})
import torch
print(os.environ.get("GOMP_SPINCOUNT"), os.environ.get("OMP_WAIT_POLICY"), torch.get_num_threads())
"""


def test_the_spin_count_is_set_before_torch_loads_and_the_threads_after():
    assert _python(POLICY.format(spin=2000)) == "2000 None 1"
    assert _python(POLICY.format(spin=None)) == "None None 1"  # null: libgomp's own default


def test_an_environment_that_chose_the_wait_keeps_it():
    assert _python(POLICY.format(spin=2000), GOMP_SPINCOUNT="7") == "7 None 1"
    assert _python(POLICY.format(spin=2000), OMP_WAIT_POLICY="PASSIVE") == "None PASSIVE 1"


def test_the_entry_points_load_torch_only_after_the_policy():
    """train.py and evaluate.py must not import torch at import time, or OpenMP reads its environment first."""
    loaded = _python("import sys; sys.argv = ['x']; import train, evaluate; print('torch' in sys.modules)")
    assert loaded == "False"


def test_a_negative_spin_count_is_refused():
    with pytest.raises(ValueError, match="omp_spin_count must be >= 0"):
        apply_thread_policy(None, -1)
