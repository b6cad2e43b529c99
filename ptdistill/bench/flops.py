"""Parameters and FLOPs of a PTv3 segmentor, split into encoder and decoder (paper Table 5).

Encoder: `backbone.embedding` and `backbone.enc`; decoder: `backbone.dec` and `seg_head`.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` (one FLOP = one multiply or one add,
so a multiply-accumulate is 2), on the plain-PyTorch path of the model, on CPU:
- Linear layers: counted by torch (mm/addmm, 2·M·N·K; biases not counted). Attention's qkv
  projection runs on the padded patch rows (up to K - 1 repeated rows per sample), as it does.
- Submanifold sparse convolutions: their plain-PyTorch path is one matmul per kernel offset over
  the gathered neighbour pairs, so torch counts 2·C_in·C_out per (site, offset) pair, the
  arithmetic spconv does. spconv's CUDA kernels are invisible to the counter, which is one
  reason counting always runs the plain path.
- Attention: CPU `scaled_dot_product_attention` dispatches to
  `aten._scaled_dot_product_flash_attention_for_cpu`, which torch has no formula for; we register
  torch's own SDPA formula, 4·B·H·L_q·L_k·d (QKᵀ and AV), for it. flash-attn's CUDA kernel is
  invisible too, the other reason for the plain path.
- Not counted, as in torch: softmax, norms, activations, gathers, index_add's sums, pooling.
"""

import copy
from collections.abc import Iterable
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ptdistill.models.ptv3.sparse_conv import SubMConv3d

CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu  # what SDPA dispatches to on CPU


def cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """QKᵀ and AV of query (B, H, L_q, d) against key (B, H, L_k, d) and value (B, H, L_k, d_v)."""
    batch, heads, query_length, head_dim = query_shape
    key_length, value_dim = key_shape[2], value_shape[3]
    return 2 * batch * heads * query_length * key_length * (head_dim + value_dim)


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter, silent, with the CPU attention kernel counted."""
    return FlopCounterMode(display=False, custom_mapping={CPU_SDPA: cpu_sdpa_flops})


@dataclass(frozen=True)
class PartCount:
    """Parameters and forward FLOPs of one part of the model: flops = attention + conv + linear."""

    params: int
    flops: int
    attention: int  # QKᵀ and AV of the serialized patch attention
    conv: int  # the sparse convolutions (stem and CPE)

    @property
    def linear(self) -> int:
        """FLOPs of the linear layers (qkv, proj, MLP, CPE linear, pooling projections, seg head)."""
        return self.flops - self.attention - self.conv


@dataclass(frozen=True)
class ModelCount:
    encoder: PartCount
    decoder: PartCount
    per_stage: dict[str, PartCount]  # "embedding", "enc0".."enc4", "dec3".."dec0", "seg_head"

    @property
    def params(self) -> int:
        return self.encoder.params + self.decoder.params

    @property
    def flops(self) -> int:
        return self.encoder.flops + self.decoder.flops


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def stages(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """The top-level modules of a PTv3Segmentor's encoder and decoder, by qualified name."""
    encoder = {"backbone.embedding": model.backbone.embedding}
    encoder |= {f"backbone.enc.{name}": stage for name, stage in model.backbone.enc.named_children()}
    decoder = {f"backbone.dec.{name}": stage for name, stage in model.backbone.dec.named_children()}
    decoder["seg_head"] = model.seg_head
    return encoder, decoder


def count_model(model: nn.Module, batch: dict) -> ModelCount:
    """Parameters and one eval forward's FLOPs of a PTv3Segmentor on `batch`, on CPU.

    Runs the model once on a CPU copy of itself when it lives elsewhere (see the module docstring).
    """
    on_cpu = next(model.parameters()).device.type == "cpu"
    cpu_model = model if on_cpu else copy.deepcopy(model).cpu()
    cpu_batch = {key: value.cpu() if torch.is_tensor(value) else value for key, value in batch.items()}
    was_training = cpu_model.training
    cpu_model.eval()
    with torch.inference_mode(), flop_counter() as counter:
        cpu_model(cpu_batch)
    cpu_model.train(was_training)
    # "PTv3Segmentor.backbone.enc.enc0" -> "backbone.enc.enc0": {op: flops}
    by_module = {name.partition(".")[2]: ops for name, ops in counter.get_flop_counts().items()}
    convs = [name for name, module in model.named_modules() if isinstance(module, SubMConv3d)]

    def stage_count(name: str, module: nn.Module) -> PartCount:
        ops = by_module.get(name, {})
        attention = ops.get(CPU_SDPA, 0)
        conv = sum(sum(by_module.get(c, {}).values()) for c in convs if c.startswith(f"{name}."))
        return PartCount(num_params(module), sum(ops.values()), attention, conv)

    encoder, decoder = ({name.rsplit(".", 1)[-1]: stage_count(name, module) for name, module in part.items()}
                        for part in stages(model))
    return ModelCount(encoder=_sum(encoder.values()), decoder=_sum(decoder.values()), per_stage=encoder | decoder)


def _sum(counts: Iterable[PartCount]) -> PartCount:
    counts = list(counts)
    return PartCount(*(sum(getattr(count, field.name) for count in counts) for field in fields(PartCount)))
