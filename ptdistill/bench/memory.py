"""Peak resident memory of this process (Linux), without importing torch: shared by the benchmarks.

glibc keeps freed blocks of up to 32 MiB in its heap for reuse (its mmap threshold grows as large blocks
are freed), so the resident set would also hold dead tensors. `unmap_freed_blocks` fixes the threshold at
128 KiB: every block is mapped and unmapped on its own, and the peak resident set follows live memory. It
slows a forward down (about 1.4x seen here), so latency is timed in another process.
"""

import ctypes
import ctypes.util
from pathlib import Path

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def unmap_freed_blocks() -> None:
    ctypes.CDLL(ctypes.util.find_library("c")).mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def proc_status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: resident set; VmHWM: its peak), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> float:
    """Reset the process's peak resident set to the current one; return the current one, in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return proc_status_mib("VmRSS")
