"""The synthetic LiDAR dataset: street scenes (`street.py`) seen by a spinning LiDAR (`lidar.py`).

Scans are written in SemanticKITTI's on-disk layout with SemanticKITTI raw label ids (instance id in
the upper 16 bits), so that `SemanticKITTIDataset` reads them, through a learning map of their own.
"""

import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ptdistill.data.synthetic.lidar import SpinningLidar
from ptdistill.data.synthetic.street import street_scene

log = logging.getLogger(__name__)

MARKER = "synthetic.json"  # the generation parameters, written last into the dataset root


def generate_scan(seed: int | Sequence[int], lidar: SpinningLidar) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scan of a fresh random street, determined by `seed`: points (N, 3), intensity (N,), label (N,)."""
    rng = np.random.default_rng(seed)
    return lidar.scan(street_scene(rng), rng)


def write_scan(directory: Path, name: str, points: np.ndarray, intensity: np.ndarray, label: np.ndarray) -> None:
    """Write `directory/velodyne/<name>.bin` (float32 x, y, z, remission) and `labels/<name>.label` (uint32)."""
    records = np.concatenate([points, intensity[:, None]], axis=1).astype(np.float32)
    records.tofile(directory / "velodyne" / f"{name}.bin")
    label.astype(np.uint32).tofile(directory / "labels" / f"{name}.label")


def generate_dataset(
    root: str,
    splits: Mapping[str, Sequence[str]],
    num_scans: Mapping[str, int],
    seed: int = 0,
    lidar: SpinningLidar | None = None,
) -> None:
    """Generate the dataset into `root/sequences/<seq>/{velodyne,labels}` unless it is there already.

    Each sequence of split s gets num_scans[s] scans; scan i of sequence q comes from the seed (seed, q, i).
    `root/synthetic.json` records the parameters and is written last: when it matches, nothing is done;
    otherwise the sequences are generated anew. A non-empty root without it is never written into.
    """
    lidar = lidar or SpinningLidar()
    root = Path(root)
    params = {"splits": {s: [str(q) for q in seqs] for s, seqs in splits.items()}, "num_scans": dict(num_scans)}
    params = json.loads(json.dumps({**params, "seed": seed, "lidar": asdict(lidar)}))  # as read back from the file
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise FileExistsError(f"{root}: not empty and holds no {MARKER}; refusing to write synthetic scans into it")
    marker.unlink(missing_ok=True)
    shutil.rmtree(root / "sequences", ignore_errors=True)
    start, total = time.perf_counter(), 0
    for split, sequences in params["splits"].items():
        for sequence in sequences:
            directory = root / "sequences" / sequence
            (directory / "velodyne").mkdir(parents=True)
            (directory / "labels").mkdir()
            for i in range(num_scans[split]):
                write_scan(directory, f"{i:06d}", *generate_scan([seed, int(sequence), i], lidar))
                total += 1
    marker.write_text(json.dumps(params, indent=2))
    seconds = (time.perf_counter() - start) / max(total, 1)
    log.info("Generated %d synthetic scans into %s (%.2f s per scan)", total, root, seconds)
