"""Predictions in the benchmarks' submission formats, written scan by scan during `evaluate.py`.

    SemanticKITTI: <dir>/sequences/<XX>/predictions/<NNNNNN>.label   uint32 raw ids (inverse learning map)
    nuScenes:      <dir>/lidarseg/<split>/<token>_lidarseg.bin        uint8 challenge classes 1-16 (0: ignore)
"""

from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch

Writer = Callable[[Path, str, np.ndarray], Path]  # (directory, sample name, prediction (N_full,)) -> file


class SemanticKITTIWriter:
    """`.label` files of the SemanticKITTI benchmark: class index -> raw id through `learning_map_inv`
    (the official `learning_map_inv` of semantic-kitti.yaml, shifted to classes from 0)."""

    def __init__(self, learning_map_inv: Mapping[int, int]):
        classes = sorted(int(k) for k in learning_map_inv)
        if classes != list(range(len(classes))):
            raise ValueError(f"learning_map_inv: needs the classes 0..K-1 as keys, got {classes}")
        self.raw = np.array([int(learning_map_inv[k]) for k in classes], dtype=np.uint32)  # (K,)

    def __call__(self, directory: Path, name: str, prediction: np.ndarray) -> Path:
        """name "XX/NNNNNN" (sequence/scan), prediction (N_full,) class indices."""
        sequence, scan = name.split("/")
        path = Path(directory) / "sequences" / sequence / "predictions" / f"{scan}.label"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.raw[prediction].tofile(path)
        return path


class NuScenesWriter:
    """lidarseg `.bin` files of the nuScenes lidarseg challenge: class index k -> uint8 k + 1, since the
    challenge's classes run from 1 (barrier) to 16 (vegetation) and 0 is its ignore class."""

    def __init__(self, split: str = "test"):
        self.split = split

    def __call__(self, directory: Path, name: str, prediction: np.ndarray) -> Path:
        """name: the LIDAR_TOP sample_data token; prediction (N_full,) class indices 0..15."""
        path = Path(directory) / "lidarseg" / self.split / f"{name}_lidarseg.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        (prediction + 1).astype(np.uint8).tofile(path)
        return path


class PredictionWriter(L.Callback):
    """Writes the full-resolution prediction of every validated or tested scan with `write` under
    `directory`; the module's validation/test step returns the predictions (N_full,) of its batch."""

    def __init__(self, write: Writer, directory: str | Path):
        self.write, self.directory = write, Path(directory)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(outputs, batch)

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(outputs, batch)

    def _write(self, prediction: torch.Tensor, batch: dict) -> None:
        ends = batch["origin_offset"].tolist()
        for name, start, end in zip(batch["name"], [0, *ends[:-1]], ends):
            self.write(self.directory, name, prediction[start:end].cpu().numpy())
