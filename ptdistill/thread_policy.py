"""A run's thread policy: OpenMP's spin before an idle thread sleeps, then torch's intra-op threads.

OpenMP reads its environment once, when torch loads it, so `apply_thread_policy` runs before anything
imports torch (train.py and evaluate.py import the rest of the project after it). On a 2-core machine
beside one busy process, libgomp's default spin (300,000 rounds, then sleep) made training steps 10x
slower: each parallel region waits for a thread that first spins away its share of a shared core. A short
spin keeps most of the quiet speed and stops the stall (`python -m ptdistill.bench.threads --tables 3`).
"""

import logging
import os
import sys

log = logging.getLogger("ptdistill")
OPENMP_WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # libgomp: the OpenMP of torch's Linux wheels


def apply_thread_policy(threads: int | None, omp_spin_count: int | None) -> None:
    """Set GOMP_SPINCOUNT to omp_spin_count (None: the runtime's default) unless the environment already
    sets either OpenMP wait variable, then use `threads` torch threads (None: OMP_NUM_THREADS, else one per
    core), and log the policy."""
    if omp_spin_count is not None and omp_spin_count < 0:
        raise ValueError(f"omp_spin_count must be >= 0 (or null for the OpenMP default), got {omp_spin_count}")
    chosen = [name for name in OPENMP_WAIT_VARIABLES if name in os.environ]
    if omp_spin_count is not None and not chosen:
        if "torch" in sys.modules:  # e.g. a later job of a multirun in the same process
            log.warning("torch is already loaded, so OpenMP has read its environment: omp_spin_count=%d applies "
                        "to the processes this run starts, not to this one", omp_spin_count)
        os.environ["GOMP_SPINCOUNT"] = str(omp_spin_count)
    import torch

    if threads:
        torch.set_num_threads(threads)
    wait = ", ".join(f"{name}={os.environ[name]}" for name in OPENMP_WAIT_VARIABLES if name in os.environ)
    log.info("Thread policy: %d torch threads, %s%s", torch.get_num_threads(), wait or "the OpenMP default wait",
             " (from the environment)" if chosen else "")
