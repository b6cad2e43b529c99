"""Per-point labels of a scan from `student.onnx`, with numpy and onnxruntime only (never torch).

    ptdistill-predict SCAN --model student.onnx --out LABELS [--threads N]

What runs where:
1. numpy (`scan`, `structure_np`): read and check the scan, grid-sample it as evaluation does (one
   point per voxel, the inverse map kept), features x, y, z [, strength]; then every index
   structure of the network: serialization codes and orders, pooling cells, sparse-conv neighbour
   pairs, attention patches. These are sorting, `unique` and binary search on integer voxel keys,
   data-dependent in size: ONNX has no sort-based `unique` and torch cannot export them, and they
   are cheap (a few % of the forward).
2. onnxruntime: the graph, i.e. all the floating-point work (`onnx_student`), from the features and
   those index arrays to the voxels' logits.
3. numpy: argmax per voxel, spread to every original point through the grid-sampling inverse.

The labels are class indices (0-based, the export's `class_names` order), as the torch artifact's;
`OnnxPredictor.learning_map_inv` maps them to the dataset's raw ids when the export recorded one.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptdistill.deploy.format import (
    CLASS_NAMES_KEY,
    FORMAT_KEY,
    GRAPH_KEY,
    GRID_SIZE_KEY,
    LEARNING_MAP_INV_KEY,
    MODEL_CONFIG_KEY,
    ONNX_FORMAT,
    ONNX_FORMAT_NAME,
    ONNX_FORMAT_VERSION,
)
from ptdistill.deploy.scan import grid_sample, read_scan
from ptdistill.deploy.structure_np import GraphSpec, graph_inputs
from ptdistill.errors import UserError


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("the ONNX student needs onnxruntime: pip install 'ptdistill[onnx]'") from None
    return onnxruntime


@dataclass
class OnnxPredictor:
    """An exported student loaded in onnxruntime, with what its metadata says."""

    path: Path
    session: object  # onnxruntime.InferenceSession
    spec: GraphSpec
    class_names: list[str]
    grid_size: float
    learning_map_inv: dict[int, int] | None
    model_config: dict

    @property
    def in_channels(self) -> int:
        return self.spec.in_channels

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, K) float32 logits of `structure_np.graph_inputs(...)`."""
        feed = {name: inputs[name] for name in self._input_names}
        return self.session.run(["logits"], feed)[0]

    @property
    def _input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]


def load_onnx(path: str | Path, threads: int | None = None) -> OnnxPredictor:
    """Open `path` in onnxruntime (CPU) and check that it is a ptdistill export this version reads."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model {path} does not exist")
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for unreadable or invalid models
        raise UserError(f"cannot read {path} as an ONNX model: {error}") from None
    meta = session.get_modelmeta().custom_metadata_map
    version = _format_version(meta.get(FORMAT_KEY))
    if version is None:
        raise UserError(f"{path} is not a ptdistill ONNX student (no {FORMAT_KEY}={ONNX_FORMAT} metadata); "
                        "write one with `python evaluate.py task=export export.format=onnx ckpt_path=...`")
    if version > ONNX_FORMAT_VERSION:
        raise UserError(f"{path} is a {meta[FORMAT_KEY]} export, newer than this ptdistill reads "
                        f"({ONNX_FORMAT}): upgrade ptdistill, or export again with this version")
    try:
        spec = GraphSpec.from_json(meta[GRAPH_KEY])
        class_names = list(json.loads(meta[CLASS_NAMES_KEY]))
        grid_size = float(meta[GRID_SIZE_KEY])
        inverse = meta.get(LEARNING_MAP_INV_KEY)
        learning_map_inv = None if inverse is None else {int(k): int(v) for k, v in json.loads(inverse).items()}
        model_config = json.loads(meta.get(MODEL_CONFIG_KEY, "{}"))
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: its ptdistill metadata is incomplete or malformed ({error!r})") from None
    missing = sorted({i.name for i in session.get_inputs()} - set(spec.input_names()))
    if missing or spec.in_channels not in (3, 4) or grid_size <= 0:
        raise UserError(f"{path}: its graph does not match its metadata (inputs {missing}, in_channels "
                        f"{spec.in_channels}, grid size {grid_size}); export it again")
    return OnnxPredictor(path, session, spec, class_names, grid_size, learning_map_inv, model_config)


def _format_version(value: str | None) -> int | None:
    """1 for "ptdistill-onnx/1"; None when `value` is not a ptdistill ONNX format."""
    name, _, version = (value or "").partition("/")
    if name != ONNX_FORMAT_NAME or not version.isdigit():
        return None
    return int(version)


def predict(predictor: OnnxPredictor, coord: np.ndarray, strength: np.ndarray | None) -> np.ndarray:
    """labels (N,) int64 for every point: grid-sample, logits per voxel, back through the inverse."""
    uses_strength = predictor.in_channels == 4
    if uses_strength and strength is None:
        raise ValueError("strength: the student reads x, y, z and strength, got None")
    grid_coord, keep, inverse = grid_sample(coord, predictor.grid_size)
    feat = coord[keep] if not uses_strength else np.concatenate([coord[keep], strength[keep]], axis=1)
    offset = np.array([len(keep)], dtype=np.int64)
    logits = predictor.logits(graph_inputs(feat.astype(np.float32), grid_coord, offset, predictor.spec))
    return logits.argmax(axis=1)[inverse].astype(np.int64)


def predict_file(predictor: OnnxPredictor, path: str | Path) -> np.ndarray:
    """labels (N,) of every point of the scan file `path` (see `ptdistill.deploy.scan`)."""
    coord, strength = read_scan(path, predictor.in_channels)
    return predict(predictor, coord, strength)
