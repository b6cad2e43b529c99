"""Per-point labels of one LiDAR scan from an exported student, without the training stack.

    ptdistill-predict SCAN --model MODEL --out LABELS [--device cpu] [--threads N]

MODEL is either export of `python evaluate.py task=export`: a `student.onnx`
(`export.format=onnx`), run by onnxruntime with numpy preprocessing and without importing torch
(`ptdistill.deploy.onnx_predict`), or a weights-only torch artifact (`export.format=torch`, the
default), run by this package's PyTorch model (`ptdistill.tasks.predict`). The choice is by the model's
suffix, before anything imports torch. SCAN and LABELS: `ptdistill.deploy.scan`.
"""

import argparse
import sys
from pathlib import Path

from ptdistill.deploy.scan import label_dtype, write_labels
from ptdistill.errors import UserError


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptdistill-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("scan", type=Path, help="a .bin (SemanticKITTI), .pcd.bin (nuScenes) or .npy scan")
    parser.add_argument("--model", type=Path, required=True,
                        help="a student from evaluate.py task=export: student.onnx or a torch artifact (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="labels to write: .label (uint32) or .npy")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (.onnx: cpu only)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the runtime's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        label_dtype(args.out)  # a bad --out fails before the work, not after
        if args.model.suffix == ".onnx":
            labels = _predict_onnx(args)
        else:
            labels = _predict_torch(args)
        write_labels(args.out, labels)
    except (UserError, ValueError) as error:  # ValueError: the model refusing the scan, e.g. a too large extent
        print(f"ptdistill-predict: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(labels)} labels to {args.out}")
    return 0


def _predict_onnx(args):
    from ptdistill.deploy.onnx_predict import load_onnx, predict_file

    if args.device != "cpu":
        raise UserError(f"--device {args.device}: an .onnx student runs on the CPU (onnxruntime); "
                        "use the torch artifact for other devices")
    return predict_file(load_onnx(args.model, args.threads), args.scan)


def _predict_torch(args):
    import torch

    from ptdistill.tasks.predict import load_artifact, predict_file

    if args.threads:
        torch.set_num_threads(args.threads)
    return predict_file(load_artifact(args.model, args.device), args.scan)


if __name__ == "__main__":
    sys.exit(main())
