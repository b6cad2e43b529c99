"""A minimal nuScenes in its real on-disk layout, which the real nuscenes-devkit loads.

nuScenes cannot be downloaded here, so the reader's tests and the throughput benchmark write one:
the devkit's tables for the given scenes (one LIDAR_TOP sensor, identity poses), a `.pcd.bin` per
keyframe and, outside v1.0-test, a lidarseg file per keyframe. Scene names decide the official
split (`nuscenes.utils.splits.create_splits_scenes`), so pass real ones.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from nuscenes.utils.color_map import get_colormap

# A keyframe: points (N, 5) float32 (x, y, z, intensity 0-255, ring) and its lidarseg labels (N,) uint8.
Keyframe = tuple[np.ndarray, np.ndarray]
FIRST_TIMESTAMP = 1_532_402_927_000_000  # microseconds; keyframes are 0.5 s apart


def write_nuscenes(root: Path, version: str, scenes: Sequence[tuple[str, Sequence[Keyframe]]]) -> list[str]:
    """Write `version`'s tables and files for `scenes` [(scene name, keyframes)] under `root`.

    Returns the LIDAR_TOP sample_data token of every keyframe, scene by scene: "<version>-lidar<s>-<i>".
    """
    tables = {name: [] for name in ("attribute", "visibility", "instance", "sample_annotation")}
    tables["category"] = [
        {"token": f"category{i}", "name": name, "description": "", "index": i} for i, name in enumerate(get_colormap())
    ]
    tables["sensor"] = [{"token": "sensor0", "channel": "LIDAR_TOP", "modality": "lidar"}]
    tables["calibrated_sensor"] = [
        {"token": "calib0", "sensor_token": "sensor0", "translation": [0.9, 0, 1.8], "rotation": [1, 0, 0, 0],
         "camera_intrinsic": []}
    ]
    tables["log"] = [{"token": "log0", "logfile": "", "vehicle": "n015", "date_captured": "2018-07-24",
                      "location": "singapore-onenorth"}]
    tables["map"] = [{"token": "map0", "log_tokens": ["log0"], "category": "semantic_prior", "filename": ""}]
    tables |= {name: [] for name in ("scene", "sample", "sample_data", "ego_pose", "lidarseg")}
    labelled = version != "v1.0-test"
    lidar_tokens = []
    for s, (scene, keyframes) in enumerate(scenes):
        samples = [f"{version}-sample{s}-{i}" for i in range(len(keyframes))]
        for i, (token, (points, label)) in enumerate(zip(samples, keyframes)):
            lidar, timestamp = f"{version}-lidar{s}-{i}", FIRST_TIMESTAMP + 500_000 * (10 * s + i)
            filename = f"samples/LIDAR_TOP/{scene}__LIDAR_TOP__{timestamp}.pcd.bin"
            neighbours = {"prev": samples[i - 1] if i else "", "next": samples[i + 1] if i + 1 < len(samples) else ""}
            tables["sample"].append({"token": token, "timestamp": timestamp, "scene_token": f"scene{s}", **neighbours})
            tables["ego_pose"].append({"token": f"ego-{lidar}", "timestamp": timestamp, "rotation": [1, 0, 0, 0],
                                       "translation": [0, 0, 0]})
            tables["sample_data"].append({
                "token": lidar, "sample_token": token, "ego_pose_token": f"ego-{lidar}",
                "calibrated_sensor_token": "calib0", "timestamp": timestamp, "fileformat": "pcd", "is_key_frame": True,
                "height": 0, "width": 0, "filename": filename, "prev": "", "next": "",
            })
            (root / filename).parent.mkdir(parents=True, exist_ok=True)
            np.asarray(points, dtype=np.float32).tofile(root / filename)
            if labelled:
                label_file = f"lidarseg/{version}/{lidar}_lidarseg.bin"
                (root / label_file).parent.mkdir(parents=True, exist_ok=True)
                np.asarray(label, dtype=np.uint8).tofile(root / label_file)
                tables["lidarseg"].append({"token": f"seg-{lidar}", "sample_data_token": lidar, "filename": label_file})
            lidar_tokens.append(lidar)
        tables["scene"].append({"token": f"scene{s}", "name": scene, "description": "", "log_token": "log0",
                                "nbr_samples": len(samples), "first_sample_token": samples[0],
                                "last_sample_token": samples[-1]})
    if not labelled:
        del tables["lidarseg"]
    (root / version).mkdir(parents=True)
    for name, records in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(records))
    return lidar_tokens
