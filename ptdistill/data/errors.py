"""Bad dataset files: the error that names them, the scan check that raises it (numpy only, so that the
torch-free ONNX predictor shares it), and the record of samples skipped because of one."""

import ctypes
import multiprocessing
from pathlib import Path

import numpy as np

from ptdistill.errors import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset root or one of its folders is missing; the message shows the expected layout."""


class BadSampleError(UserError, ValueError):
    """A scan that cannot be used. The message starts with the offending file and says what is wrong."""


def check_scan(coord: np.ndarray, strength: np.ndarray, path: Path) -> None:
    """Raise BadSampleError naming `path` for an empty scan or NaN/Inf values. coord (N, 3), strength (N, 1)."""
    if len(coord) == 0:
        raise BadSampleError(f"{path}: empty scan (no points)")
    for name, values in (("coordinates", coord), ("strengths", strength)):
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            count, first = np.count_nonzero(~finite), np.argmin(finite)
            raise BadSampleError(f"{path}: NaN or Inf {name} in {count} points (the first is point {first})")


class SkippedSamples:
    """The samples of a dataset skipped as bad, seen by the main process and every DataLoader worker.

    One flag per sample in shared memory (`multiprocessing.RawArray`, inherited by forked workers and
    passed to spawned ones), so a worker's skip shows in the main process's count, and a bad file counts
    once however often it is drawn. Flags only ever go from False to True, so no lock is needed.
    """

    def __init__(self, num_samples: int):
        self._flags = multiprocessing.RawArray(ctypes.c_bool, num_samples)

    def add(self, index: int) -> bool:
        """Flag sample `index`; True if it was not flagged before."""
        new = not self._flags[index]
        self._flags[index] = True
        return new

    def __contains__(self, index: int) -> bool:
        return bool(self._flags[index])

    def __len__(self) -> int:
        return int(np.frombuffer(self._flags, dtype=np.bool_).sum())

    def indices(self) -> list[int]:
        return np.flatnonzero(np.frombuffer(self._flags, dtype=np.bool_)).tolist()
