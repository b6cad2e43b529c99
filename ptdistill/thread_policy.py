"""A run's thread policy: OpenMP's spin before an idle thread sleeps, torch's intra-op threads, and the
cores that other processes leave free.

OpenMP reads its environment once, when torch loads it, so `apply_thread_policy` runs before anything
imports torch (train.py and evaluate.py import the rest of the project after it). On a 2-core machine
beside one busy process, libgomp's default spin (300,000 rounds, then sleep) made training steps 10x
slower: each parallel region waits for a thread that first spins away its share of a shared core. A short
spin keeps most of the quiet speed and stops the stall (`python -m ptdistill.bench.threads --tables 3`).
No spin count is immune on every CPU, though; one thread per free core is. `CoreShare` measures how many
cores the other processes (data-loader workers included) keep busy, for `modules.adaptive_threads`.
"""

import logging
import math
import os
import sys
import time

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


class CoreShare:
    """The cores of this process's CPU set that other processes kept busy since the last reading.

    Linux's /proc/stat counts each CPU's busy time (everything but idle and iowait; steal included, since
    a hypervisor's neighbour takes the core as surely as a process does). Less this process's own CPU time
    (all its threads; its children count as others), over the wall time between two readings, that is the
    number of cores used by someone else. Written by hand because no library gives the others' share:
    psutil gives the two parts (the CPUs' and this process's times), and the subtraction would be this one.
    """

    def __init__(self, stat_path: str = "/proc/stat", own_cpu_seconds=None, clock=None):
        self.stat_path = stat_path
        self.cpus = {f"cpu{index}" for index in usable_cpus()}
        self.own_cpu_seconds = own_cpu_seconds or own_cpu_seconds_of_this_process
        self.clock = clock or time.monotonic
        self.ticks_per_second = os.sysconf("SC_CLK_TCK")
        self._last = self._read(self.clock())  # raises OSError where there is no /proc/stat

    def __setstate__(self, state: dict) -> None:
        """Unpickled in another process (a spawned DDP rank): its window starts there."""
        self.__dict__.update(state)
        self._last = self._read(self.clock())

    def _read(self, wall: float) -> tuple[float, float, float]:
        """(wall seconds, busy CPU seconds of this CPU set, this process's CPU seconds)."""
        busy_ticks = 0
        with open(self.stat_path) as stat:
            for line in stat:
                name, *fields = line.split() or [""]
                if name in self.cpus:  # user nice system idle iowait irq softirq steal ...
                    ticks = [int(field) for field in fields[:8]]
                    busy_ticks += sum(ticks) - ticks[3] - ticks[4]
        return wall, busy_ticks / self.ticks_per_second, self.own_cpu_seconds()

    def others(self, min_seconds: float = 0.0) -> float | None:
        """Cores the other processes kept busy since the last window closed; None (the window stays open)
        until it spans min_seconds of wall time. An open window costs a clock reading, not /proc/stat's."""
        now = self.clock()
        wall = now - self._last[0]
        if wall <= 0 or wall < min_seconds:
            return None
        (_, busy_before, own_before), self._last = self._last, self._read(now)
        busy, own = self._last[1] - busy_before, self._last[2] - own_before
        return max(0.0, busy - own) / wall


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity on Linux; every CPU elsewhere)."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def own_cpu_seconds_of_this_process() -> float:
    """User + system CPU seconds of every thread of this process."""
    return sum(os.times()[:2])


def free_threads(others: float, cores: int, max_threads: int, busy_fraction: float) -> int:
    """Threads for the cores the others leave of `cores`: a core counts as taken once they use
    `busy_fraction` of it (others 0.3 at busy_fraction 0.3 take one core). Between 1 and max_threads."""
    taken = math.floor(others + 1 - busy_fraction + 1e-9)  # 1e-9: 1.3 + 1 - 0.3 is 1.999...
    return max(1, min(max_threads, cores - taken))
