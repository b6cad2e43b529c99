"""Serialized patch attention (PTv3 Sec. 3.2): multi-head self-attention inside patches of K
consecutive points along a space-filling curve.

Padding follows Pointcept: a sample of n > K points is padded to a multiple of K by repeating its
points one patch earlier, so every patch holds K distinct real points and no mask is needed; a
sample of n <= K points is one patch of length n. Attention runs with
`scaled_dot_product_attention` on (patches, heads, K, head_dim), or with flash-attn's varlen
kernel on CUDA when it imports and `enable_flash` is set (Pointcept's default path).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ptdistill.models.ptv3.structure import PointBatch

try:
    import flash_attn
except ImportError:
    flash_attn = None


@dataclass(frozen=True)
class PatchLayout:
    """Where every point of one curve order sits once the samples are cut into patches.

    The padded sequence holds all full patches (K points each) first, then one short patch per
    sample of fewer than K points.
    """

    gather: Tensor  # (N_pad,) curve position copied into each padded slot
    scatter: Tensor  # (N,) padded slot holding each curve position
    full_patches: int  # number of K-point patches at the start
    short_lengths: tuple[int, ...]  # lengths of the short patches that follow
    cu_seqlens: Tensor  # (patches + 1,) int32 patch boundaries, for flash-attn

    @classmethod
    def build(cls, counts: list[int], patch_size: int, device: torch.device) -> "PatchLayout":
        """counts: points per sample, in batch order (the curve orders keep samples contiguous)."""
        full_slots = sum(math.ceil(n / patch_size) * patch_size for n in counts if n >= patch_size)
        gather_full, gather_short, scatter = [], [], []
        start, next_full, next_short = 0, 0, full_slots
        for n in counts:
            if n >= patch_size:
                slot = torch.arange(math.ceil(n / patch_size) * patch_size, device=device)
                # Pad slots repeat the points one patch earlier, as Pointcept does.
                gather_full.append(start + torch.where(slot < n, slot, slot - patch_size))
                scatter.append(next_full + torch.arange(n, device=device))
                next_full += len(slot)
            else:
                gather_short.append(start + torch.arange(n, device=device))
                scatter.append(next_short + torch.arange(n, device=device))
                next_short += n
            start += n
        short_lengths = tuple(n for n in counts if n < patch_size)
        bounds = list(range(0, full_slots + 1, patch_size))
        for n in short_lengths:
            bounds.append(bounds[-1] + n)
        return cls(
            gather=torch.cat(gather_full + gather_short),
            scatter=torch.cat(scatter),
            full_patches=full_slots // patch_size,
            short_lengths=short_lengths,
            cu_seqlens=torch.tensor(bounds, dtype=torch.int32, device=device),
        )


class SerializedAttention(nn.Module):
    """Attention in patches of one serialization order; Pointcept's parameter names (qkv, proj)."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        patch_size: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        order_index: int = 0,
        enable_flash: bool = True,
    ):
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"channels {channels} must be divisible by num_heads {num_heads}")
        self.channels, self.num_heads, self.patch_size = channels, num_heads, patch_size
        self.scale = qk_scale or (channels // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.order_index = order_index
        self.enable_flash = enable_flash
        self.qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def layout(self, point: PointBatch) -> PatchLayout:
        """The level's patch layout for this patch size, built once and shared by its blocks."""
        if self.patch_size not in point.patch_layouts:
            counts = point.offset.diff(prepend=point.offset.new_zeros(1)).tolist()
            point.patch_layouts[self.patch_size] = PatchLayout.build(counts, self.patch_size, point.feat.device)
        return point.patch_layouts[self.patch_size]

    def forward(self, feat: Tensor, point: PointBatch) -> Tensor:
        """feat (N, C) at the level of `point` -> (N, C)."""
        layout = self.layout(point)
        order = point.order[self.order_index]
        attend = self._flash_attention if self.enable_flash and feat.is_cuda and flash_attn is not None else self._sdpa
        # Rows are gathered in padded curve order before the row-wise qkv projection, so the copy is
        # (N_pad, C), not (N_pad, 3C); and no name holds qkv (N_pad, 3C) once attention has run.
        out = attend(self.qkv(feat[order[layout.gather]]), layout)  # (N_pad, C)
        out = out[layout.scatter[point.inverse[self.order_index]]]  # (N, C) back in row order
        return self.proj_drop(self.proj(out))

    def _sdpa(self, qkv: Tensor, layout: PatchLayout) -> Tensor:
        """qkv (N_pad, 3C) -> (N_pad, C), one SDPA call per patch length."""
        full_length = layout.full_patches * self.patch_size
        lengths = ([self.patch_size] if layout.full_patches else []) + list(layout.short_lengths)
        chunks = [qkv[:full_length]] if layout.full_patches else []
        chunks += qkv[full_length:].split(layout.short_lengths)
        head_dim = self.channels // self.num_heads
        dropout = self.attn_drop if self.training else 0.0
        out = []
        for chunk, length in zip(chunks, lengths):
            # (P·K, 3C) -> 3 x (P, H, K, d)
            q, k, v = chunk.view(-1, length, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
            out.append(attended.transpose(1, 2).reshape(-1, self.channels))
        return out[0] if len(out) == 1 else torch.cat(out)

    def _flash_attention(self, qkv: Tensor, layout: PatchLayout) -> Tensor:
        """flash-attn's varlen kernel in half precision, as Pointcept runs it: (N_pad, 3C) -> (N_pad, C)."""
        out = flash_attn.flash_attn_varlen_qkvpacked_func(
            qkv.half().view(-1, 3, self.num_heads, self.channels // self.num_heads),
            layout.cu_seqlens,
            max_seqlen=self.patch_size,
            dropout_p=self.attn_drop if self.training else 0.0,
            softmax_scale=self.scale,
        )
        return out.reshape(-1, self.channels).to(qkv.dtype)
