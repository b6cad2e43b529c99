"""What an exported `student.onnx` carries besides the graph: its metadata_props keys and format version.

Shared by the exporter (`onnx_student`, torch) and the predictor (`onnx_predict`, no torch).
"""

ONNX_FORMAT_NAME = "ptdistill-onnx"
ONNX_FORMAT_VERSION = 1  # bump when the graph's inputs or the metadata change meaning
ONNX_FORMAT = f"{ONNX_FORMAT_NAME}/{ONNX_FORMAT_VERSION}"
OPSET = 18  # ScatterND / ScatterElements with reductions

FORMAT_KEY = "ptdistill.format"  # "ptdistill-onnx/1"
GRAPH_KEY = "ptdistill.graph"  # structure_np.GraphSpec as JSON: what the numpy preprocessing computes
CLASS_NAMES_KEY = "ptdistill.class_names"  # JSON list, the logits' order
GRID_SIZE_KEY = "ptdistill.grid_size"  # metres, as a decimal string
LEARNING_MAP_INV_KEY = "ptdistill.learning_map_inv"  # JSON {class index: raw label id}; absent if none
MODEL_CONFIG_KEY = "ptdistill.model_config"  # JSON: the student's _target_ and constructor arguments
ATTENTION_KEY = "ptdistill.attention"  # "ort" (com.microsoft.MultiHeadAttention) or "onnx" (standard ops)
