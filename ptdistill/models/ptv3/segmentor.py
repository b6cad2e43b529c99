"""PTv3 semantic segmentor: the backbone plus a Linear seg head, Pointcept's `DefaultSegmentorV2`.

`model(batch, taps=("enc4",))` returns `{"logits": (N, num_classes), "taps": {name: Tap}}` (`ptdistill.points`); the
state dict is `seg_head.*` plus `backbone.*`, as Pointcept's checkpoints store it.
"""

from collections.abc import Callable, Collection, Mapping, Sequence

from torch import nn

from ptdistill.models.ptv3.backbone import PointTransformerV3
from ptdistill.models.ptv3.checkpoint import load_pointcept_checkpoint
from ptdistill.models.ptv3.serialization import ORDERS
from ptdistill.models.ptv3.structure import Level
from ptdistill.points import Tap


class PTv3Segmentor(nn.Module):
    """PT-v3m1 + seg head. Backbone arguments carry Pointcept's names and defaults (patch size 1024).

    `checkpoint`: a Pointcept (or this model's) checkpoint loaded at construction; `trust_checkpoint`
    allows full unpickling of that file (never needed for plain state dicts).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
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
        checkpoint: str | None = None,
        trust_checkpoint: bool = False,
    ):
        super().__init__()
        # Registered first, as in DefaultSegmentorV2, so the state dicts list keys in the same order.
        self.seg_head = nn.Linear(dec_channels[0], num_classes)
        self.backbone = PointTransformerV3(
            in_channels=in_channels, order=order, stride=stride, enc_depths=enc_depths, enc_channels=enc_channels,
            enc_num_head=enc_num_head, enc_patch_size=enc_patch_size, dec_depths=dec_depths,
            dec_channels=dec_channels, dec_num_head=dec_num_head, dec_patch_size=dec_patch_size,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=proj_drop,
            drop_path=drop_path, pre_norm=pre_norm, shuffle_orders=shuffle_orders, enable_flash=enable_flash,
        )
        if checkpoint is not None:
            load_pointcept_checkpoint(self, checkpoint, trust=trust_checkpoint)

    @property
    def tap_names(self) -> tuple[str, ...]:
        return self.backbone.stage_names

    def structure(self, batch: Mapping) -> Level:
        """The batch's serialized input level, which `forward(structure=)` of any PTv3 with the same curve
        orders reuses with all its caches (the teacher and the student of one distillation step)."""
        return self.backbone.structure(batch)

    def forward(self, batch: Mapping, taps: Collection[str] = (), tap_grad: bool = False,
                structure: Level | None = None, on_tap: Callable[[str, Tap], None] | None = None) -> dict:
        """batch: the collated dict (coord, grid_coord, feat, offset); taps: stage names to return;
        structure: `self.structure(batch)` of this model or of one with the same orders; on_tap(name, tap):
        called as each tap is made, before the later stages run."""
        taps = (taps,) if isinstance(taps, str) else taps
        unknown = sorted(set(taps) - set(self.tap_names))
        if unknown:
            raise ValueError(f"unknown taps {unknown}; this model has {list(self.tap_names)}")
        point, tapped = self.backbone(batch, taps, tap_grad, structure, on_tap)
        return {"logits": self.seg_head(point.feat), "taps": tapped}
