"""The base of every LiDAR reader: checks, the learning map, the skip policy for bad files, transforms.

A reader lists its scans in `self.names` and reads scan i in `read(i)` as a sample
`{"coord" (N, 3) float32 metres, "strength" (N, 1) float32, "segment" (N,) int64 (ignore -1)}`,
raising `BadSampleError` for a bad file. `LidarDataset.__getitem__` adds the name, applies the
transform and, when `skip_bad` is on, replaces a bad sample by the next good one.
"""

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ptdistill.data.errors import BadSampleError, SkippedSamples, check_scan  # noqa: F401 (the readers' import)

log = logging.getLogger(__name__)

Transform = Callable[[dict, np.random.Generator], dict]


class LearningMap:
    """Raw label id -> class index (ignore_index for unlabelled and other ignored ids), e.g. the 34 raw
    SemanticKITTI ids -> 19 classes."""

    def __init__(self, mapping: Mapping[int, int]):
        raw = np.array([int(k) for k in mapping], dtype=np.int64)
        if len(raw) == 0 or raw.min() < 0:
            raise ValueError(f"learning_map: needs raw ids >= 0, got {sorted(raw.tolist())}")
        self._known = np.zeros(raw.max() + 1, dtype=bool)
        self._known[raw] = True
        self._table = np.zeros(raw.max() + 1, dtype=np.int64)
        self._table[raw] = [int(v) for v in mapping.values()]

    def __call__(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """raw (N,) non-negative ids read from `path` -> segment (N,) int64."""
        known = raw < len(self._known)
        known[known] = self._known[raw[known]]
        if not known.all():
            unknown = np.unique(raw[~known])
            raise BadSampleError(f"{path}: label ids {unknown[:10].tolist()} are not in the learning map")
        return self._table[raw]


class LidarDataset(Dataset):
    """Scans read by a subclass, transformed; bad files raise, or are skipped when `skip_bad` is set.

    Skipping is logged (a warning naming the file and the problem, once per file) and counted in
    `self.skipped` (shared with DataLoader workers); the bad sample is replaced by the next good one,
    so batches keep their size and DDP ranks stay in step.

    A subclass sets `self.names` (one per scan) before calling `LidarDataset.__init__`, and implements `read`.
    """

    names: list[str]

    def __init__(self, transform: Transform | None = None, skip_bad: bool = False):
        self.transform = transform
        self.skip_bad = skip_bad
        self.skipped = SkippedSamples(len(self.names))

    def read(self, index: int) -> dict:
        """Scan `index` as a sample (see the module docstring); BadSampleError for a bad file."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """`key`: an index, or `(index, epoch_seed)` from `EpochShuffleSampler` (training)."""
        index, epoch_seed = key if isinstance(key, tuple) else (key, 0)
        for i in ((index + k) % len(self) for k in range(len(self))):
            if i in self.skipped:
                continue
            try:
                sample = self.read(i)
            except BadSampleError as error:
                if not self.skip_bad:
                    raise
                if self.skipped.add(i):
                    log.warning("Skipping a bad sample (skip_bad is on): %s", error)
                continue
            sample["name"] = self.names[i]
            if self.transform is None:
                return sample
            # Augmentation drawn from (epoch, scan) alone: reproducible, and replayed exactly on resume.
            return self.transform(sample, np.random.default_rng([epoch_seed, i]))
        raise BadSampleError(f"all {len(self)} samples of {type(self).__name__} are bad; see the warnings above")
