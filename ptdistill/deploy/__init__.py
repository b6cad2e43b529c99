"""Deploying the student without PyTorch: an ONNX graph run by onnxruntime, fed by numpy preprocessing.

- `structure_np`: every index structure PTv3 builds from the voxels (serialization orders, pooling
  cells, sparse-conv kernel maps, attention patches), in numpy, equal to the torch model's;
- `scan`: reading and checking scan files, grid sampling, writing labels (numpy only);
- `onnx_student`: the export-friendly torch forward and `torch.onnx.export` (needs torch);
- `onnx_predict`: `ptdistill-predict SCAN --model student.onnx` (numpy + onnxruntime, never torch);
- `cli`: the `ptdistill-predict` entry point, which picks the ONNX or the torch path.

Nothing in this package's `__init__` imports torch: `onnx_predict` must run where torch is absent.
"""
