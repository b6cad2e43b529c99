"""The student as an ONNX graph: PTv3Segmentor's eval forward on precomputed index tensors.

`OnnxStudent(model)` shares a trained `PTv3Segmentor`'s modules and recomputes its eval-mode forward
from `feat` plus the index arrays of `structure_np.graph_inputs`, with export-friendly ops only:

- sparse conv: centre offset as one matmul, then per kernel offset a dynamic slice of the pairs, a
  Gather, a MatMul and a row-wise ScatterND(reduction=add), in the torch model's offset order;
- pooling: Linear, a ScatterElements(reduction=max) per cell seeded with one row of the cell (the
  torch model's `-inf` seed and `include_self=False` give the same maximum), BatchNorm, GELU;
- unpooling: a Gather of the coarse rows; the first decoder block's CPE reads the skip features
  alone, Pointcept's quirk kept by the torch model;
- attention: Gather of the padded patch rows (P, L), qkv, then softmax(q kᵀ · scale) v per patch and
  head, by onnxruntime's fused `com.microsoft.MultiHeadAttention` kernel (`attention="ort"`, the
  default: blockwise, faster, and without the (P, heads, L, L) weights in memory) or by
  standard MatMul/Softmax on (patches, heads, L, d) in `attention_chunks` slices of patches
  (`attention="onnx"`, for other runtimes); Gather back to rows;
- LayerNorm, BatchNorm (eval statistics), GELU, Linear as they are.

The number of levels, blocks, heads and kernel offsets is static (the model config); every point,
pair and patch count is a dynamic axis. Exported with the TorchScript-based exporter
(`torch.onnx.export(dynamo=False)`, opset 18: ScatterElements/ScatterND reductions): it traces
`forward` once on a synthetic scan; slicing with bounds that are graph inputs stays dynamic in the
trace, so one graph serves every scan.

    python evaluate.py task=export export.format=onnx ckpt_path=STUDENT.ckpt dataset=NAME

writes `student.onnx` (`ptdistill.tasks.export`), with the metadata of `ptdistill.deploy.format`.
"""

import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ptdistill.deploy.format import (
    ATTENTION_KEY,
    CLASS_NAMES_KEY,
    FORMAT_KEY,
    GRAPH_KEY,
    GRID_SIZE_KEY,
    LEARNING_MAP_INV_KEY,
    MODEL_CONFIG_KEY,
    ONNX_FORMAT,
    OPSET,
)
from ptdistill.deploy.structure_np import GraphSpec, graph_inputs


class _RowAdd(torch.autograd.Function):
    """out[index[i]] += values[i]: index_add in torch, ScatterND(reduction=add) of rows in ONNX."""

    @staticmethod
    def forward(ctx, out: Tensor, index: Tensor, values: Tensor) -> Tensor:
        return out.index_add(0, index, values)

    @staticmethod
    def symbolic(g, out, index, values):
        axes = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
        return g.op("ScatterND", out, g.op("Unsqueeze", index, axes), values, reduction_s="add")


class _PatchAttention(torch.autograd.Function):
    """Multi-head softmax attention inside patches: q, k, v (P, L, C) -> (P, L, C), heads `num_heads`.

    In ONNX, onnxruntime's fused `com.microsoft.MultiHeadAttention` CPU kernel: it attends in blocks
    (flash attention), so the (P, heads, L, L) weights are never whole, and it is about twice as fast
    as MatMul + Softmax + MatMul in onnxruntime on one (8, 1024, 64) block."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, num_heads: int, scale: float) -> Tensor:
        patches, length, channels = q.shape

        def split(t: Tensor) -> Tensor:
            return t.view(patches, length, num_heads, channels // num_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=scale)
        return out.transpose(1, 2).reshape(patches, length, channels)

    @staticmethod
    def symbolic(g, q, k, v, num_heads, scale):
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=num_heads, scale_f=scale)
        out.setType(q.type())  # (P, L, C), as q
        return out


class _CellMax(torch.autograd.Function):
    """seed.scatter_reduce(0, index, values, "amax", include_self=True), as ScatterElements(reduction=max)."""

    @staticmethod
    def forward(ctx, seed: Tensor, index: Tensor, values: Tensor) -> Tensor:
        return seed.scatter_reduce(0, index, values, "amax", include_self=True)

    @staticmethod
    def symbolic(g, seed, index, values):
        return g.op("ScatterElements", seed, index, values, axis_i=0, reduction_s="max")


def graph_spec(model: nn.Module, attention_chunks: int = 8) -> GraphSpec:
    """The static structure of a PTv3Segmentor, read off its modules."""
    backbone = model.backbone
    stages = list(backbone.enc.children())
    levels = len(stages)
    patch_sizes, level_orders, level_kernels = [0] * levels, [set() for _ in range(levels)], \
        [set() for _ in range(levels)]
    level_kernels[0].add(backbone.embedding.stem.conv.kernel_size)
    for level, blocks in _blocks_per_level(backbone):
        for block in blocks:
            patch_sizes[level] = block.attn.patch_size
            level_orders[level].add(block.attn.order_index)
            level_kernels[level].add(block.cpe[0].kernel_size)
    return GraphSpec(
        in_channels=backbone.in_channels,
        orders=tuple(backbone.order),
        pool_levels=tuple(stage.down.levels for stage in stages[1:]),
        patch_sizes=tuple(patch_sizes),
        level_orders=tuple(tuple(sorted(o)) for o in level_orders),
        level_kernels=tuple(tuple(sorted(k)) for k in level_kernels),
        attention_chunks=attention_chunks,
    )


def _blocks(stage: nn.Module) -> list[nn.Module]:
    return [module for name, module in stage.named_children() if name.startswith("block")]


def _blocks_per_level(backbone: nn.Module):
    for level, stage in enumerate(backbone.enc.children()):
        yield level, _blocks(stage)
    for name, stage in backbone.dec.named_children():
        yield int(name.removeprefix("dec")), _blocks(stage)


ATTENTION = ("ort", "onnx")  # onnxruntime's fused kernel | standard ONNX ops


class OnnxStudent(nn.Module):
    """`PTv3Segmentor`'s eval forward as `forward(*inputs)`, inputs in `spec.input_names()` order -> logits.

    attention: "ort", onnxruntime's fused MultiHeadAttention (a com.microsoft contrib op, so the graph
    runs in onnxruntime only), or "onnx", MatMul + Softmax + MatMul (standard opset 18, any runtime),
    in `attention_chunks` slices of patches (default 8) to bound the (patches, heads, L, L) weights.
    """

    def __init__(self, model: nn.Module, attention: str = "ort", attention_chunks: int | None = None):
        super().__init__()
        if model.training:
            raise ValueError("OnnxStudent computes the eval forward; pass model.eval()")
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        self.model = model
        self.attention = attention
        if attention_chunks is None:
            attention_chunks = 1 if attention == "ort" else 8  # the fused kernel never holds the weights whole
        self.spec = graph_spec(model, attention_chunks)
        self.input_names = self.spec.input_names()
        # A new Module starts in training mode, and torch.onnx.export restores the wrapper's mode after
        # tracing, recursively: in training mode it would leave the student in training mode.
        self.eval()

    def forward(self, *inputs: Tensor) -> Tensor:
        x = dict(zip(self.input_names, inputs, strict=True))
        backbone = self.model.backbone
        stem = backbone.embedding.stem
        feat = stem.act(stem.norm(self._conv(stem.conv, x["feat"], x, 0)))
        skips = []
        for level, stage in enumerate(backbone.enc.children()):
            if level > 0:
                skips.append(feat)
                down = stage.down
                projected = down.proj(feat)
                cluster = x[f"l{level}_cluster"]
                pooled = _CellMax.apply(projected[x[f"l{level}_head"]], cluster[:, None].expand_as(projected),
                                        projected)
                feat = down.act(down.norm(pooled))
            for block in _blocks(stage):
                feat = self._block(block, feat, feat, x, level)
        for name, stage in backbone.dec.named_children():
            level = int(name.removeprefix("dec"))
            skip = stage.up.proj_skip(skips[level])
            feat = skip + stage.up.proj(feat)[x[f"l{level + 1}_cluster"]]
            conv_feat = skip  # see SerializedUnpooling: the first block's CPE reads the skip features
            for block in _blocks(stage):
                feat = self._block(block, feat, conv_feat, x, level)
                conv_feat = feat
        return self.model.seg_head(feat)

    def _conv(self, conv: nn.Module, feat: Tensor, x: dict, level: int) -> Tensor:
        """SubMConv3d._torch_forward on the level's kernel map."""
        k = conv.kernel_size
        source, target, bounds = (x[f"l{level}_k{k}_{part}"] for part in ("in", "out", "bounds"))
        weight = conv.weight.flatten(1, 3)  # (C_out, k³, C_in)
        centre = k**3 // 2
        out = feat @ weight[:, centre].T
        for d in range(k**3):
            if d == centre:
                continue
            start, stop = bounds[d], bounds[d + 1]
            out = _RowAdd.apply(out, target[start:stop], feat[source[start:stop]] @ weight[:, d].T)
        return out if conv.bias is None else out + conv.bias

    def _block(self, block: nn.Module, feat: Tensor, conv_feat: Tensor, x: dict, level: int) -> Tensor:
        conv, linear, norm = block.cpe
        feat = feat + norm(linear(self._conv(conv, conv_feat, x, level)))
        mlp = block.mlp[0]

        def attend(v: Tensor) -> Tensor:
            return self._attention(block.attn, v, x, level)

        def feed_forward(v: Tensor) -> Tensor:
            return mlp.fc2(mlp.act(mlp.fc1(v)))

        for layer, layer_norm in ((attend, block.norm1), (feed_forward, block.norm2)):
            feat = feat + layer(layer_norm(feat)) if block.pre_norm else layer_norm(feat + layer(feat))
        return feat

    def _attention(self, attn: nn.Module, feat: Tensor, x: dict, level: int) -> Tensor:
        """SerializedAttention.forward (the SDPA path) on the level's patches of order `attn.order_index`."""
        o = attn.order_index
        rows, back, bounds = x[f"l{level}_o{o}_rows"], x[f"l{level}_o{o}_back"], x[f"l{level}_chunks"]
        heads, channels = attn.num_heads, attn.channels
        out = []
        for chunk in range(self.spec.attention_chunks):
            patch_rows = rows[bounds[chunk]:bounds[chunk + 1]]  # (p, L)
            qkv = attn.qkv(feat[patch_rows])  # (p, L, 3C), channels ordered (3, H, d)
            if self.attention == "ort":
                q, k, v = qkv.chunk(3, dim=-1)  # (p, L, C) each
                out.append(_PatchAttention.apply(q, k, v, heads, attn.scale).reshape(-1, channels))
                continue
            q, k, v = qkv.unflatten(-1, (3, heads, channels // heads)).permute(2, 0, 3, 1, 4)  # (p, H, L, d)
            weights = torch.softmax((q @ k.transpose(-1, -2)) * attn.scale, dim=-1)  # (p, H, L, L)
            out.append((weights @ v).transpose(1, 2).reshape(-1, channels))  # (p·L, C)
        return attn.proj(torch.cat(out)[back])


def example_batch(in_channels: int, num_points: int = 3000, seed: int = 0) -> dict[str, Tensor]:
    """A synthetic scan as a collated batch: `num_points` distinct 0.1 m voxels drawn in a flat box
    (about half of it occupied, so convolutions have neighbours), feat x, y, z [, strength]."""
    rng = np.random.default_rng(seed)
    side = max(8, math.ceil(math.sqrt(2 * num_points / 6)))
    box = (side, side, 6)
    flat = rng.choice(side * side * 6, size=min(num_points, side * side * 6), replace=False)
    grid_coord = np.stack(np.unravel_index(flat, box), axis=1).astype(np.int64)
    coord = (grid_coord + rng.uniform(0, 1, grid_coord.shape)) * 0.1 - np.array([side * 0.05, side * 0.05, 1.7])
    feat = np.concatenate([coord, rng.uniform(0, 1, (len(coord), 1))], axis=1)[:, :in_channels]
    return {"coord": torch.from_numpy(coord).float(), "grid_coord": torch.from_numpy(grid_coord),
            "feat": torch.from_numpy(feat).float(), "offset": torch.tensor([len(coord)])}


def batch_inputs(batch: dict[str, Tensor], spec: GraphSpec) -> dict[str, np.ndarray]:
    """The graph inputs of a collated batch (one scan, or scans of at least a patch each)."""
    return graph_inputs(batch["feat"].numpy(), batch["grid_coord"].numpy(), batch["offset"].numpy(), spec)


def example_inputs(spec: GraphSpec, num_points: int = 3000, seed: int = 0) -> dict[str, np.ndarray]:
    """Graph inputs of a synthetic scan (`example_batch`), for tracing."""
    return batch_inputs(example_batch(spec.in_channels, num_points, seed), spec)


def check_export(model: nn.Module, path: str | Path, num_points: int = 3000, seed: int = 1) -> tuple[float, float]:
    """(max |logit difference| / max |logit|, argmax agreement) of onnxruntime on `path` against `model`
    (eval mode) on a synthetic scan of `num_points` voxels."""
    from ptdistill.deploy.onnx_predict import load_onnx

    predictor = load_onnx(path)
    batch = example_batch(predictor.in_channels, num_points, seed)
    was_training = model.training
    with torch.inference_mode():
        expected = model.eval()(batch)["logits"].numpy()
    model.train(was_training)
    got = predictor.logits(batch_inputs(batch, predictor.spec))
    error = float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-12))
    return error, float((got.argmax(1) == expected.argmax(1)).mean())


def export_onnx(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None,
                attention: str = "ort", attention_chunks: int | None = None,
                example: dict[str, np.ndarray] | None = None) -> Path:
    """Export `model` (a PTv3Segmentor) to `path` with `metadata` (str -> str) added to metadata_props;
    `attention`, `attention_chunks`: `OnnxStudent`. The graph is traced on `example` (graph inputs),
    by default a synthetic scan; its sizes do not matter, every one is a dynamic axis."""
    import onnx

    was_training = model.training
    wrapper = OnnxStudent(model.eval(), attention, attention_chunks)
    spec = wrapper.spec
    example = example_inputs(spec) if example is None else example
    args = tuple(torch.from_numpy(example[name]) for name in wrapper.input_names)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice, and tracer warnings about the dynamic slices
        # (the bounds are graph inputs, so the slices stay dynamic in the graph).
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(wrapper, args, buffer, dynamo=False, opset_version=OPSET,
                              input_names=wrapper.input_names, output_names=["logits"],
                              dynamic_axes=spec.dynamic_axes(), do_constant_folding=True,
                              custom_opsets={"com.microsoft": 1} if attention == "ort" else None)
    model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    props = {FORMAT_KEY: ONNX_FORMAT, GRAPH_KEY: spec.to_json(), ATTENTION_KEY: attention, **(metadata or {})}
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "ptdistill"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def student_metadata(model_config: dict, class_names: list[str], grid_size: float,
                     learning_map_inv: dict | None) -> dict[str, str]:
    """The metadata_props of an exported student besides the format and the graph spec."""
    props = {
        CLASS_NAMES_KEY: json.dumps(list(class_names)),
        GRID_SIZE_KEY: repr(float(grid_size)),
        MODEL_CONFIG_KEY: json.dumps(model_config),
    }
    if learning_map_inv is not None:
        props[LEARNING_MAP_INV_KEY] = json.dumps({str(int(k)): int(v) for k, v in learning_map_inv.items()})
    return props
