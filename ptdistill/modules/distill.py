"""Stage 2: distil a frozen PTv3 teacher into the student with Eq. 8.

    L = L_seg + λ_kd·L_kd + λ_topo·L_topo + λ_grad·L_grad

`terms` holds the enabled distillation terms (the `loss=` option): each has a `weight` (its λ), a
`loss` config and, for feature terms, the `taps` (layers) it compares.
"""

import logging
from collections import Counter

import torch
from hydra.utils import instantiate
from torch import nn

from ptdistill.errors import UserError
from ptdistill.losses.saliency import channel_weights
from ptdistill.models.ptv3.structure import one_point_per_cell
from ptdistill.modules.segmentation import SegmentationModule

log = logging.getLogger(__name__)

KNOWN_TERMS = ("kd", "topo", "grad")


class DistillModule(SegmentationModule):
    """The student is `self.model` (validated like stage 1); the teacher is frozen and in eval mode.

    Checkpoints hold the student only: the teacher is rebuilt from its own checkpoint, so a
    distillation checkpoint also loads alone for evaluation and deployment.
    """

    def __init__(
        self,
        model: dict,
        teacher: dict,
        criterion: dict,
        terms: dict,
        optimizer: dict,
        scheduler: dict | None,
        num_classes: int,
        class_names: list[str],
        ignore_index: int = -1,
        block_lr_scale: float = 0.1,
    ):
        super().__init__(model, criterion, optimizer, scheduler, num_classes, class_names, ignore_index, block_lr_scale)
        unknown = set(terms) - set(KNOWN_TERMS)
        if unknown:
            raise UserError(f"unknown distillation terms {sorted(unknown)}; known: {list(KNOWN_TERMS)}")
        incomplete = sorted(name for name, term in terms.items() if "_target_" not in (term.get("loss") or {}))
        if incomplete:
            raise UserError(f"loss.terms.{incomplete[0]} has no loss._target_: an override or experiment set its keys, "
                            "but the chosen loss= option does not define that term")
        self.teacher = instantiate(teacher).requires_grad_(False).eval()
        self.terms = nn.ModuleDict({name: instantiate(term["loss"]) for name, term in terms.items()})
        self.weights = {name: float(term["weight"]) for name, term in terms.items()}
        self.taps = {name: tuple(term.get("taps", ())) for name, term in terms.items()}
        self.skipped = Counter()  # non-finite terms left out of the loss, by name

    def train(self, mode: bool = True) -> "DistillModule":
        """The teacher stays in eval mode (fixed serialization order, frozen BatchNorm statistics)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        taps = sorted({tap for names in self.taps.values() for tap in names})
        student = self.model(batch, taps=taps)
        seg = self.criterion(student["logits"], batch["segment"])
        # L_grad needs ∂L_seg/∂F of the teacher too, so its forward then keeps a graph from the taps on.
        with torch.set_grad_enabled("grad" in self.terms):
            teacher = self.teacher(batch, taps=taps, tap_grad="grad" in self.terms)

        raw = {name: getattr(self, f"_{name}_loss")(batch, student, teacher, seg) for name in self.terms}
        batch_size = len(batch["offset"])
        if not torch.isfinite(seg):
            self._skip("seg", batch)
            return None  # Lightning skips the optimizer step
        total = seg
        for name, value in raw.items():
            self.log(f"train/raw/{name}", value.detach(), batch_size=batch_size)
            if not torch.isfinite(value):
                self._skip(name, batch)
                continue
            weighted = self.weights[name] * value
            self.log(f"train/weighted/{name}", weighted.detach(), batch_size=batch_size)
            total = total + weighted
        self.log("train/seg", seg.detach(), batch_size=batch_size)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch_size)
        return total

    def _skip(self, name: str, batch: dict) -> None:
        self.skipped[name] += 1
        log.warning("Non-finite %s loss skipped at step %d (scans %s)", name, self.global_step, batch.get("name"))
        self.log(f"train/skipped/{name}", float(self.skipped[name]), reduce_fx="max")

    def _kd_loss(self, batch: dict, student: dict, teacher: dict, seg: torch.Tensor) -> torch.Tensor:
        return self.terms["kd"](student["logits"], teacher["logits"], batch["segment"])

    def _topo_loss(self, batch: dict, student: dict, teacher: dict, seg: torch.Tensor) -> torch.Tensor:
        loss = seg.new_zeros(())
        for name in self.taps["topo"]:
            s, t = student["taps"][name], teacher["taps"][name]
            # The clouds hold each cell of a pooled level once, not once per input point in it.
            points, offset = one_point_per_cell((s, t), batch["offset"])  # (N_cells,), (B,)
            # (N_cells, C_S) and (N_cells, C_T), row-aligned
            student_feat, teacher_feat = s.feat[s.index[points]], t.feat[t.index[points]].detach()
            loss = loss + self.terms["topo"](student_feat, teacher_feat, offset)
        # The last tap's features, kept (detached) for `persistence_diagrams`.
        self._last_topo_input = (student_feat.detach(), teacher_feat, offset)
        return loss

    def persistence_diagrams(self) -> tuple[list, list, tuple] | None:
        """Teacher and student diagrams (per dim) of the last training batch's first scan, for dashboards."""
        if getattr(self, "_last_topo_input", None) is None:
            return None
        teacher, student = self.terms["topo"].diagrams(*self._last_topo_input)[0]
        return teacher, student, tuple(self.terms["topo"].dims)

    def _grad_loss(self, batch: dict, student: dict, teacher: dict, seg: torch.Tensor) -> torch.Tensor:
        teacher_seg = self.criterion(teacher["logits"], batch["segment"])
        loss = seg.new_zeros(())
        for name in self.taps["grad"]:
            s, t = student["taps"][name], teacher["taps"][name]
            student_weights = channel_weights(seg, s.feat)  # (C_S,) Eq. 4
            teacher_weights = channel_weights(teacher_seg, t.feat)  # (C_T,)
            loss = loss + self.terms["grad"](
                s.feat[s.index], student_weights, t.feat[t.index].detach(), teacher_weights, batch["offset"]
            )
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}
        checkpoint["skipped_terms"] = dict(self.skipped)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        self.skipped = Counter(checkpoint.get("skipped_terms", {}))
