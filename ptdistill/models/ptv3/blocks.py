"""The PTv3 transformer block (PTv3 Fig. 1 and Sec. 3): pre-norm, in order,

    x = x + CPE(x)                                  conditional position encoding
    x = x + DropPath(Attention(LayerNorm(x)))       serialized patch attention
    x = x + DropPath(MLP(LayerNorm(x)))             MLP with ratio 4

Module names follow Pointcept's PT-v3m1 (`cpe.0`, `norm1.0`, `attn.qkv`, `mlp.0.fc1`, ...), so the
state dict matches its checkpoints; the one-element Sequentials exist for those names.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ptdistill.models.ptv3.attention import SerializedAttention
from ptdistill.models.ptv3.sparse_conv import SubMConv3d, VoxelSet
from ptdistill.models.ptv3.structure import PointBatch


class DropPath(nn.Module):
    """Stochastic depth per row (per point), as timm's DropPath on (N, C); torch has no such layer."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], 1).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Module):
    """Linear, GELU, Linear on (N, C) rows. Without autograd, rows go through `inference_chunk` at a
    time: the (N, 4C) hidden layer of a full-resolution stage is the largest tensor of the network
    (N x 256 floats, twice, in the last decoder stage of teacher and student alike), and chunks
    bound it without changing any output row."""

    inference_chunk = 8192

    def __init__(self, channels: int, hidden_channels: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_channels, channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or len(x) <= self.inference_chunk:
            return self._rows(x)
        return torch.cat([self._rows(rows) for rows in x.split(self.inference_chunk)])

    def _rows(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ConditionalPositionEncoding(nn.Sequential):
    """Submanifold conv k3, Linear, LayerNorm (PTv3's xCPE)."""

    def __init__(self, channels: int):
        super().__init__(SubMConv3d(channels, channels, kernel_size=3, bias=True), nn.Linear(channels, channels),
                         nn.LayerNorm(channels))

    def forward(self, feat: Tensor, voxels: VoxelSet) -> Tensor:
        conv, linear, norm = self
        return norm(linear(conv(feat, voxels)))


class Block(nn.Module):
    def __init__(
        self,
        *,
        channels: int,
        num_heads: int,
        patch_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        pre_norm: bool = True,
        order_index: int = 0,
        enable_flash: bool = True,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        self.cpe = ConditionalPositionEncoding(channels)
        self.norm1 = nn.Sequential(nn.LayerNorm(channels))
        self.attn = SerializedAttention(
            channels=channels, num_heads=num_heads, patch_size=patch_size, qkv_bias=qkv_bias, qk_scale=qk_scale,
            attn_drop=attn_drop, proj_drop=proj_drop, order_index=order_index, enable_flash=enable_flash,
        )
        self.norm2 = nn.Sequential(nn.LayerNorm(channels))
        self.mlp = nn.Sequential(MLP(channels, int(channels * mlp_ratio), proj_drop))
        self.drop_path = DropPath(drop_path)

    def forward(self, point: PointBatch) -> PointBatch:
        conv_feat = point.feat if point.conv_feat is None else point.conv_feat  # see SerializedUnpooling
        feat = point.feat + self.cpe(conv_feat, point.level.voxels)
        feat = self._residual(feat, lambda x: self.attn(x, point), self.norm1)
        feat = self._residual(feat, self.mlp, self.norm2)
        return point.with_feat(feat)

    def _residual(self, feat: Tensor, layer: Callable[[Tensor], Tensor], norm: nn.Module) -> Tensor:
        """x + DropPath(layer(norm(x))) in pre-norm, norm(x + DropPath(layer(x))) in post-norm."""
        if self.pre_norm:
            return feat + self.drop_path(layer(norm(feat)))
        return norm(feat + self.drop_path(layer(feat)))

