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
    patch_size: int  # K
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
            patch_size=patch_size,
            full_patches=full_slots // patch_size,
            short_lengths=short_lengths,
            cu_seqlens=torch.tensor(bounds, dtype=torch.int32, device=device),
        )

    def runs(self, max_rows: int | None = None) -> list[tuple[int, int, int]]:
        """(start, stop, patch length): consecutive padded slots holding whole patches of one length.

        The full patches form one run, or runs of at most `max_rows` slots (one patch at least);
        each short patch is a run of its own.
        """
        k = self.patch_size
        per_run = max(1, self.full_patches if max_rows is None else max_rows // k)  # patches
        runs = [(first * k, min(first + per_run, self.full_patches) * k, k)
                for first in range(0, self.full_patches, per_run)]
        start = self.full_patches * k
        for n in self.short_lengths:
            runs.append((start, start + n, n))
            start += n
        return runs


class SerializedAttention(nn.Module):
    """Attention in patches of one serialization order; Pointcept's parameter names (qkv, proj).

    Without autograd, patches go through qkv and SDPA `inference_chunk` padded rows at a time, like
    the MLP's rows: the (N_pad, 3C) qkv of a full-resolution stage is then never whole.
    """

    inference_chunk = 8192

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
        layouts, offset = point.level.patch_layouts, point.level.offset
        if self.patch_size not in layouts:
            counts = offset.diff(prepend=offset.new_zeros(1)).tolist()
            layouts[self.patch_size] = PatchLayout.build(counts, self.patch_size, point.feat.device)
        return layouts[self.patch_size]

    def forward(self, feat: Tensor, point: PointBatch) -> Tensor:
        """feat (N, C) at the level of `point` -> (N, C)."""
        layout = self.layout(point)
        # Rows are gathered in padded curve order before the row-wise qkv projection, so the copy is
        # (N_pad, C), not (N_pad, 3C). index_select: its backward (index_add) beats indexing's on CPU.
        order, inverse = point.curve(self.order_index)  # (N,) rows along this block's curve, positions
        rows = order[layout.gather]  # (N_pad,) row of feat in each padded slot
        if self.enable_flash and feat.is_cuda and flash_attn is not None:
            out = self._flash_attention(self.qkv(feat.index_select(0, rows)), layout)
        else:
            runs = layout.runs(None if torch.is_grad_enabled() else self.inference_chunk)
            out = [self._sdpa(self.qkv(feat.index_select(0, rows[start:stop])), length) for start, stop, length in runs]
            out = out[0] if len(out) == 1 else torch.cat(out)  # (N_pad, C)
        out = out.index_select(0, layout.scatter[inverse])  # (N, C) back in row order
        return self.proj_drop(self.proj(out))

    def _sdpa(self, qkv: Tensor, length: int) -> Tensor:
        """qkv (P·L, 3C) of P patches of L points each -> (P·L, C)."""
        # (P·L, 3C) -> 3 x (P, H, L, d)
        q, k, v = qkv.view(-1, length, 3, self.num_heads, self.channels // self.num_heads).permute(2, 0, 3, 1, 4)
        dropout = self.attn_drop if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        return attended.transpose(1, 2).reshape(-1, self.channels)

    def _flash_attention(self, qkv: Tensor, layout: PatchLayout) -> Tensor:
        """flash-attn's varlen kernel in float16: (N_pad, 3C) -> (N_pad, C). Pointcept's current code casts to
        bfloat16; float16 keeps 3 more mantissa bits, and qkv of normalised features is far inside its range."""
        out = flash_attn.flash_attn_varlen_qkvpacked_func(
            qkv.half().view(-1, 3, self.num_heads, self.channels // self.num_heads),
            layout.cu_seqlens,
            max_seqlen=self.patch_size,
            dropout_p=self.attn_drop if self.training else 0.0,
            softmax_scale=self.scale,
        )
        return out.reshape(-1, self.channels).to(qkv.dtype)
