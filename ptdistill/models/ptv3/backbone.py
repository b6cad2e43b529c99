"""The Point Transformer V3 backbone (Wu et al., CVPR 2024), Pointcept's PT-v3m1 in plain PyTorch.

    serialize -> embedding (stem) -> enc0 .. enc4 (pooling + blocks) -> dec3 .. dec0 (unpooling + blocks)

Module names and shapes are PT-v3m1's (`embedding.stem.conv`, `enc.enc1.down.proj`,
`enc.enc0.block0.cpe.0`, `dec.dec3.up.proj_skip.0`, ...). Two deliberate differences: the
serialization orders are shuffled in training only, so evaluation is deterministic, and attention
always uses the fixed patch size (Pointcept's flash-attn semantics) whatever the device.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import chain

import torch
from torch import nn

from ptdistill.models.ptv3.blocks import Block
from ptdistill.models.ptv3.pooling import SerializedPooling, SerializedUnpooling, point_batch_norm
from ptdistill.models.ptv3.serialization import ORDERS
from ptdistill.models.ptv3.sparse_conv import SubMConv3d
from ptdistill.models.ptv3.structure import Level, PointBatch
from ptdistill.points import Tap


class Embedding(nn.Module):
    """The stem: submanifold conv k5 without bias, BatchNorm, GELU."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.stem = nn.ModuleDict(
            {"conv": SubMConv3d(in_channels, channels, kernel_size=5, bias=False),
             "norm": point_batch_norm(channels),
             "act": nn.GELU()}
        )

    def forward(self, point: PointBatch) -> PointBatch:
        feat = self.stem.conv(point.feat, point.level.voxels)
        return point.with_feat(self.stem.act(self.stem.norm(feat)))


class PointTransformerV3(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int,
        order: Sequence[str] = ORDERS,
        stride: Sequence[int] = (2, 2, 2, 2),
        enc_depths: Sequence[int] = (2, 2, 2, 6, 2),
        enc_channels: Sequence[int] = (32, 64, 128, 256, 512),
        enc_num_head: Sequence[int] = (2, 4, 8, 16, 32),
        enc_patch_size: Sequence[int] = (1024, 1024, 1024, 1024, 1024),
        dec_depths: Sequence[int] = (2, 2, 2, 2),
        dec_channels: Sequence[int] = (64, 64, 128, 256),
        dec_num_head: Sequence[int] = (4, 4, 8, 16),
        dec_patch_size: Sequence[int] = (1024, 1024, 1024, 1024),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.3,
        pre_norm: bool = True,
        shuffle_orders: bool = True,
        enable_flash: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.order = (order,) if isinstance(order, str) else tuple(order)
        self.shuffle_orders = shuffle_orders
        unknown = [o for o in self.order if o not in ORDERS]
        if unknown or not self.order:
            raise ValueError(f"order must list serialization orders from {ORDERS}, got {list(self.order)}")
        num_stages = len(enc_depths)
        per_stage = {"stride": (stride, num_stages - 1), "enc_channels": (enc_channels, num_stages),
                     "enc_num_head": (enc_num_head, num_stages), "enc_patch_size": (enc_patch_size, num_stages),
                     "dec_depths": (dec_depths, num_stages - 1), "dec_channels": (dec_channels, num_stages - 1),
                     "dec_num_head": (dec_num_head, num_stages - 1), "dec_patch_size": (dec_patch_size, num_stages - 1)}
        for name, (values, expected) in per_stage.items():
            if len(values) != expected:
                raise ValueError(f"{name} has {len(values)} entries; {num_stages} encoder stages need {expected}")
        if list(dec_patch_size) != list(enc_patch_size)[:-1]:
            # Pointcept caches one patch layout per level, so its decoder reuses the encoder's patches.
            raise ValueError(f"dec_patch_size {list(dec_patch_size)} must equal enc_patch_size "
                             f"{list(enc_patch_size)[:-1]} level by level: Pointcept's decoder attends in the "
                             "encoder's patches")

        def block(channels, heads, patch_size, rate, i):
            return Block(channels=channels, num_heads=heads, patch_size=patch_size, mlp_ratio=mlp_ratio,
                         qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=proj_drop,
                         drop_path=rate, pre_norm=pre_norm, order_index=i % len(self.order),
                         enable_flash=enable_flash)

        self.embedding = Embedding(in_channels, enc_channels[0])
        # Stochastic depth grows linearly with depth, over the encoder and over the decoder.
        enc_rates = torch.linspace(0, drop_path, sum(enc_depths), device="cpu").tolist()
        self.enc = nn.Sequential()
        for s in range(num_stages):
            stage = nn.Sequential()
            if s > 0:
                stage.add_module("down", SerializedPooling(enc_channels[s - 1], enc_channels[s], stride[s - 1],
                                                           shuffle_orders))
            rates = enc_rates[sum(enc_depths[:s]):sum(enc_depths[: s + 1])]
            for i in range(enc_depths[s]):
                stage.add_module(f"block{i}", block(enc_channels[s], enc_num_head[s], enc_patch_size[s], rates[i], i))
            self.enc.add_module(f"enc{s}", stage)

        dec_rates = torch.linspace(0, drop_path, sum(dec_depths), device="cpu").tolist()
        up_channels = list(dec_channels) + [enc_channels[-1]]
        self.dec = nn.Sequential()
        for s in reversed(range(num_stages - 1)):
            stage = nn.Sequential()
            stage.add_module("up", SerializedUnpooling(up_channels[s + 1], enc_channels[s], dec_channels[s]))
            rates = dec_rates[sum(dec_depths[:s]):sum(dec_depths[: s + 1])][::-1]
            for i in range(dec_depths[s]):
                stage.add_module(f"block{i}", block(dec_channels[s], dec_num_head[s], dec_patch_size[s], rates[i], i))
            self.dec.add_module(f"dec{s}", stage)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The tap names: "enc0".."enc4", then "dec3".."dec0"."""
        return tuple(name for name, _ in chain(self.enc.named_children(), self.dec.named_children()))

    def structure(self, batch: Mapping) -> Level:
        """The batch's input level, to share with another model of the same orders (`forward(structure=)`)."""
        return Level.from_batch(batch, self.in_channels, self.order)

    def forward(
        self,
        batch: Mapping,
        taps: Collection[str] = (),
        tap_grad: bool = False,
        structure: Level | None = None,
        on_tap: Callable[[str, Tap], None] | None = None,
    ) -> tuple[PointBatch, dict[str, Tap]]:
        """Run a collated batch; return the full-resolution output level and the tapped stages.

        With `tap_grad`, a tapped feature that does not require grad (a frozen model) becomes a
        leaf that does, so `torch.autograd.grad(loss, tap.feat)` works for a frozen teacher too.
        `structure`: this batch's input level from `self.structure` (of this or another model with the
        same orders), whose geometry, pooled levels and kernel maps are then reused, not rebuilt.
        `on_tap(name, tap)` is called as each tap is made, before the later stages run.
        """
        shuffle = self.shuffle_orders and self.training
        point = PointBatch.from_batch(batch, self.in_channels, self.order, shuffle, structure)
        point = self.embedding(point)
        tapped = {}
        for name, stage in chain(self.enc.named_children(), self.dec.named_children()):
            point = stage(point)
            if name in taps:
                if tap_grad and not point.feat.requires_grad:
                    point = point.with_feat(point.feat.detach().requires_grad_())
                tapped[name] = point.tap()
                if on_tap is not None:
                    on_tap(name, tapped[name])
        return point, tapped
