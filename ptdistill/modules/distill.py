"""Stage 2: distil a frozen PTv3 teacher into the student with Eq. 8.

    L = L_seg + λ_kd·L_kd + λ_topo·L_topo + λ_grad·L_grad

`terms` holds the enabled distillation terms (the `loss=` option), each a `DistillationTerm` config that
owns its λ (`weight`), its taps and its loss.
"""

import logging
import warnings
from collections import Counter

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from ptdistill.errors import UserError
from ptdistill.losses.term import DistillStep
from ptdistill.modules.segmentation import SegmentationModule

log = logging.getLogger(__name__)
# Lightning warns of modules in eval mode at the start of fit; the frozen teacher is, on purpose (`train`).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


class DistillModule(SegmentationModule):
    """The student is `self.model` (validated like stage 1); the teacher is frozen and in eval mode.

    Checkpoints hold the student only: the teacher is rebuilt from its own checkpoint, so a
    distillation checkpoint also loads alone for evaluation and deployment.

    grad_norm_every_n_steps: every n steps, also log the norm of each weighted term's gradient at the
    student's parameters beside L_seg's (`train/grad_norm/<name>`): one extra backward per term; 0: never.
    share_structure: the teacher reuses the student's serialization, pooling cells and kernel maps of
    each batch (same points, grid and, when their curve orders agree, the same geometry at every level);
    the outputs are those of separate builds.
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
        grad_norm_every_n_steps: int = 0,
        share_structure: bool = True,
        grid_size: float | None = None,
    ):
        super().__init__(model, criterion, optimizer, scheduler, num_classes, class_names, ignore_index, block_lr_scale,
                         grid_size)
        self.teacher = instantiate(teacher).requires_grad_(False).eval()
        self.terms = nn.ModuleDict({name: self._term(name, term) for name, term in terms.items()})
        self.grad_norm_every_n_steps = grad_norm_every_n_steps
        self.share_structure = share_structure and self.model.backbone.order == self.teacher.backbone.order
        self.skipped = Counter()  # non-finite losses left out, by name
        self._logged_terms = None  # the active terms last logged

    @staticmethod
    def _term(name: str, config: dict) -> nn.Module:
        if "_target_" not in config:
            raise UserError(f"loss.terms.{name} has no _target_: an override or experiment set its keys, "
                            "but the chosen loss= option does not define that term")
        try:
            return instantiate(config)
        except InstantiationException as error:  # a term or loss refusing its arguments: one line
            if isinstance(error.__cause__, ValueError):
                raise UserError(f"loss.terms.{name}: {error.__cause__}") from None
            raise

    def train(self, mode: bool = True) -> "DistillModule":
        """The teacher stays in eval mode (fixed serialization order, frozen BatchNorm statistics)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def on_fit_start(self) -> None:
        """A run whose epochs no term is on in would train the no-KD student under a KD name: refused (e.g.
        distill_start_epoch=6 with trainer.max_epochs=4). stage=student is the run without distillation."""
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 0 or not self.terms:  # no epoch limit: max_steps ends the run
            return
        if not any(term.active(epoch) for term in self.terms.values() for epoch in range(epochs)):
            starts = ", ".join(f"{name} {term.start_epoch}" for name, term in self.terms.items())
            raise UserError(f"No distillation term is on in any of this run's {epochs} epochs (0-based start "
                            f"epochs: {starts}): lower distill_start_epoch or raise trainer.max_epochs")

    def active_terms(self) -> dict[str, nn.Module]:
        """The terms that are on in this epoch (each term's start_epoch ≤ epoch < stop_epoch)."""
        return {name: term for name, term in self.terms.items() if term.active(self.current_epoch)}

    def distill_step(self, batch: dict) -> DistillStep:
        """Both forwards and L_seg: what every term that is on needs. With none on, the teacher is not run."""
        terms = self.active_terms().values()
        taps = sorted({tap for term in terms for tap in term.taps})
        structure = self.model.structure(batch) if self.share_structure else None
        student = self.model(batch, taps=taps, structure=structure)
        seg = self.criterion(student["logits"], batch["segment"])
        if not terms:
            return DistillStep(batch, student, None, seg, self.criterion)
        # L_grad needs ∂L_seg/∂F of the teacher too, so its forward then keeps a graph from the taps on.
        teacher_grad = any(term.needs_teacher_grad for term in terms)
        teacher_taps, grad_enabled = {}, torch.is_grad_enabled()

        def start_terms(name, tap):  # a term whose taps all exist starts while the teacher's decoder runs
            teacher_taps[name] = tap
            with torch.set_grad_enabled(grad_enabled):  # the student's side, as outside the teacher's forward
                for term in terms:
                    if name in term.taps and teacher_taps.keys() >= set(term.taps):
                        term.start(batch, student["taps"], teacher_taps)

        with torch.set_grad_enabled(teacher_grad):
            teacher = self.teacher(batch, taps=taps, tap_grad=teacher_grad, structure=structure, on_tap=start_terms)
        return DistillStep(batch, student, teacher, seg, self.criterion)

    def on_train_epoch_start(self) -> None:
        """Logs which terms are on whenever that changes (a term's start_epoch or stop_epoch)."""
        active = sorted(self.active_terms())
        if active != self._logged_terms:
            on = ", ".join(active) or "none (L_seg only)"
            log.info("Epoch %d: distillation terms on: %s", self.current_epoch, on)
            self._logged_terms = active

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        step = self.distill_step(batch)
        batch_size = len(batch["offset"])
        if not torch.isfinite(step.seg_loss):
            self._skip("seg", batch)
            return None  # Lightning skips the optimizer step
        weighted = {"seg": step.seg_loss}
        for name, term in self.active_terms().items():
            value = term(step)
            self.log(f"train/raw/{name}", value.detach(), batch_size=batch_size)
            if not torch.isfinite(value):
                self._skip(name, batch)
                continue
            weighted[name] = term.weight * value
            self.log(f"train/weighted/{name}", weighted[name].detach(), batch_size=batch_size)
        if self.grad_norm_every_n_steps and self.global_step % self.grad_norm_every_n_steps == 0:
            self._log_grad_norms(weighted)
        total = sum(weighted.values())
        self.log("train/seg", step.seg_loss.detach(), batch_size=batch_size)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch_size)
        return total

    def _log_grad_norms(self, weighted: dict[str, torch.Tensor]) -> None:
        """‖∂(λ·L)/∂θ_S‖ of every term and of L_seg, over all the student's parameters."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        for name, value in weighted.items():
            grads = [g for g in torch.autograd.grad(value, params, retain_graph=True, allow_unused=True) if g is not None]
            norm = torch.stack([g.norm() for g in grads]).norm() if grads else value.new_zeros(())
            self.log(f"train/grad_norm/{name}", norm, batch_size=1)

    def _skip(self, name: str, batch: dict) -> None:
        self.skipped[name] += 1
        log.warning("Non-finite %s loss skipped at step %d (scans %s)", name, self.global_step, batch.get("name"))
        self.log(f"train/skipped/{name}", float(self.skipped[name]), reduce_fx="max")

    def persistence_diagrams(self) -> tuple[list, list, tuple] | None:
        """Teacher and student diagrams (per dim) of the last training batch's first scan, for dashboards."""
        return self.terms["topo"].diagrams() if "topo" in self.terms else None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}
        checkpoint["skipped_terms"] = dict(self.skipped)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        self.skipped = Counter(checkpoint.get("skipped_terms", {}))
