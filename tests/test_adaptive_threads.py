"""Adaptive threads: the others' share of the cores from /proc/stat, and the threads it leaves."""

import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ptdistill.modules.adaptive_threads import AdaptiveThreads
from ptdistill.thread_policy import CoreShare, free_threads

STAT = "cpu  {total}\ncpu0 {cpu0}\ncpu1 {cpu1}\nintr 1 2 3\n\nctxt 9\n"


def _ticks(user: int, system: int, idle: int, iowait: int, steal: int) -> str:
    return f"{user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0"  # user nice system idle iowait irq softirq steal ...


def test_the_others_share_is_the_cpus_busy_time_less_this_process_own(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("os.sysconf", lambda name: 100)  # ticks per second
    stat = tmp_path / "stat"
    clock, own = iter([10.0, 10.5, 12.0]), iter([3.0, 3.6])  # an open window reads no CPU time
    stat.write_text(STAT.format(total="0", cpu0=_ticks(100, 20, 500, 7, 0), cpu1=_ticks(50, 10, 600, 0, 3)))
    share = CoreShare(str(stat), own_cpu_seconds=lambda: next(own), clock=lambda: next(clock))
    # 2 s later: cpu0 gained 150 busy ticks (user 120, system 30), 40 idle, 10 iowait; cpu1 30 busy (20 of
    # them steal) and 170 idle.
    stat.write_text(STAT.format(total="0", cpu0=_ticks(220, 50, 540, 17, 0), cpu1=_ticks(60, 10, 770, 0, 23)))
    assert share.others(min_seconds=1.0) is None  # 0.5 s: the window stays open
    # Over the 2 s window: busy ticks (120 + 30) + (10 + 20) = 180, i.e. 1.8 s; this process 3.6 - 3.0 = 0.6 s.
    assert share.others(min_seconds=1.0) == pytest.approx((1.8 - 0.6) / 2.0)


def test_a_busy_cpu_outside_the_process_cpu_set_is_not_counted(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {1})
    monkeypatch.setattr("os.sysconf", lambda name: 100)
    stat = tmp_path / "stat"
    clock = iter([0.0, 2.0])
    stat.write_text(STAT.format(total="0", cpu0=_ticks(0, 0, 0, 0, 0), cpu1=_ticks(0, 0, 0, 0, 0)))
    share = CoreShare(str(stat), own_cpu_seconds=lambda: 0.0, clock=lambda: next(clock))
    stat.write_text(STAT.format(total="0", cpu0=_ticks(200, 0, 0, 0, 0), cpu1=_ticks(60, 20, 120, 0, 0)))
    assert share.others() == pytest.approx((60 + 20) / 100 / 2.0)  # cpu1 only: 0.8 s of busy over 2 s


def test_a_spinning_neighbour_takes_about_one_core():
    share = CoreShare()
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        share.others()  # the window starts once the neighbour runs
        time.sleep(1.5)
        others = share.others()
    finally:
        spin.kill()
        spin.wait()
    assert others > 0.7  # one core, less what the rest of the machine takes from it


def test_a_pickled_share_starts_its_window_in_the_process_that_unpickles_it(monkeypatch):
    """As a spawned DDP rank receives the callbacks: its own CPU time is not the parent's."""
    import pickle

    share = CoreShare()
    monkeypatch.setattr(share, "_last", (0.0, 0.0, 1e9))  # a reading no other process could continue
    copy = pickle.loads(pickle.dumps(share))
    assert copy._last[2] < 1e9 and copy.cpus == share.cpus


@given(st.floats(0, 8), st.integers(1, 8), st.integers(1, 8), st.floats(0.05, 1))
def test_free_threads_is_between_one_and_the_maximum_and_falls_as_the_others_rise(others, cores, most, fraction):
    threads = free_threads(others, cores, most, fraction)
    assert 1 <= threads <= most
    assert free_threads(others + 1, cores, most, fraction) <= threads
    if others < fraction:
        assert threads == min(most, cores)


def test_free_threads_by_hand():
    assert free_threads(0.29, 2, 2, 0.3) == 2
    assert free_threads(0.30, 2, 2, 0.3) == 1
    assert free_threads(1.2, 16, 16, 0.3) == 15
    assert free_threads(1.3, 16, 16, 0.3) == 14
    assert free_threads(0.0, 16, 4, 0.3) == 4


class FakeShare:
    def __init__(self, readings):
        self.readings = iter(readings)

    def others(self, min_seconds):
        return next(self.readings)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_threads_follow_the_free_cores_and_come_back(restore_threads, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    torch.set_num_threads(2)
    callback = AdaptiveThreads(max_threads=2, core_share=FakeShare([1.0, None, 0.05]))
    assert callback.update() == 1 and torch.get_num_threads() == 1  # a neighbour took a core
    assert callback.update() == 1  # the window is still open: no decision
    assert callback.update() == 2 and torch.get_num_threads() == 2  # it left


def test_max_threads_defaults_to_a_child_run_share(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert AdaptiveThreads(core_share=FakeShare([])).max_threads == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert AdaptiveThreads(core_share=FakeShare([])).max_threads == 4


def test_a_deterministic_run_keeps_its_threads(restore_threads):
    callback = AdaptiveThreads(max_threads=2, core_share=FakeShare([1.0]))
    torch.use_deterministic_algorithms(True)
    try:
        callback.setup(None, None, "fit")
    finally:
        torch.use_deterministic_algorithms(False)
    threads = torch.get_num_threads()
    assert callback.update() == threads and torch.get_num_threads() == threads


def test_a_bad_busy_fraction_is_refused():
    with pytest.raises(ValueError, match="busy_fraction must be in"):
        AdaptiveThreads(busy_fraction=0)
