"""The topological distillation loss L_topo (Sec. 3.2, Alg. 1).

Per sample of the batch: choose M points by TPS on the teacher features and take the same rows of the
student, normalise both subsamples without bending their geometry (centre, then divide by a
pairwise-distance scale), compute both Vietoris-Rips diagrams, and sum the persistence-weighted Chamfer
distance over the homology dimensions. The loss is the mean over samples; the teacher side has no grad.
Alg. 1 normalises before TPS; TPS ignores translation and scale, so sampling first picks the same
points and only the scale statistic differs (the subsample's, at O(M) rather than O(N) cost).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from ptdistill.losses.term import DistillationTerm, DistillStep
from ptdistill.points import one_point_per_cell
from ptdistill.topology.chamfer import chamfer, pwcd
from ptdistill.topology.persistence import PendingDiagrams
from ptdistill.topology.sampling import tps

Normalization = Literal["mean_pairwise", "rms_pairwise"]
DIAGRAM_DISTANCES = ("pwcd", "chamfer")


def normalize(feat: torch.Tensor, how: Normalization) -> torch.Tensor:
    """feat (M, C) centred and divided by its mean (or root-mean-square) pairwise distance.

    Either keeps the Rips diagram's shape up to one scale factor, so teacher and student of different
    widths become comparable; projecting onto the unit sphere would not (and makes H1 explode in cost).
    """
    centred = feat - feat.mean(0)
    tiny = torch.finfo(feat.dtype).tiny  # identical points: scale 0, features stay 0, gradients finite
    if how == "mean_pairwise":
        scale = torch.nn.functional.pdist(centred).mean() if len(feat) > 1 else feat.new_zeros(())
    else:  # mean ||h_i - h_j||^2 over all ordered pairs = 2 mean ||h_i - mean||^2, in O(M C)
        scale = (2 * centred.square().sum(1).mean() + tiny).sqrt()
    return centred / scale.clamp(min=tiny)


class TopologyLoss(nn.Module):
    """L_topo (Alg. 1) between student features (N, C_S) and teacher features (N, C_T), row-aligned.

    num_samples: M, the TPS subsample per sample (all points if fewer); dims: homology dimensions;
    backend: "gudhi" or "giotto"; workers: threads running the clouds' persistence; eps: PWCD's weight
    normaliser stabiliser; eps_dist: the edge-gradient stabiliser; tie_tol: tau_tie of Alg. 3;
    normalization: "rms_pairwise" (O(MC)) or "mean_pairwise" (O(M^2 C)) scale; seed: TPS start points;
    distance: "pwcd", the paper's persistence-weighted Chamfer distance (Eq. 2-3), or "chamfer", the
    authors' code's plain Chamfer distance between the (birth, death) points; max_bottleneck: None for
    exact diagrams, or the approximate mode's bound on each diagram's bottleneck error, in the units of
    the normalised clouds (`ptdistill.topology.persistence`).
    """

    def __init__(
        self,
        num_samples: int = 1024,
        dims: Sequence[int] = (0, 1),
        backend: str = "gudhi",
        workers: int = 2,
        eps: float = 1e-8,
        eps_dist: float = 1e-8,
        tie_tol: float = 0.0,
        normalization: Normalization = "rms_pairwise",
        seed: int = 0,
        distance: Literal["pwcd", "chamfer"] = "pwcd",
        max_bottleneck: float | None = None,
    ):
        super().__init__()
        if distance not in DIAGRAM_DISTANCES:
            raise ValueError(f"TopologyLoss: distance must be one of {sorted(DIAGRAM_DISTANCES)}, got {distance!r}")
        if num_samples < 1:
            raise ValueError(f"TopologyLoss: num_samples must be >= 1, got {num_samples}")
        if normalization not in ("mean_pairwise", "rms_pairwise"):
            raise ValueError(f"TopologyLoss: unknown normalization {normalization!r}")
        self.num_samples = num_samples
        self.dims = tuple(dims)
        self.backend = backend
        self.workers = workers
        self.eps = eps
        self.eps_dist = eps_dist
        self.tie_tol = tie_tol
        self.normalization = normalization
        self.seed = seed
        self.distance = distance
        self.max_bottleneck = max_bottleneck

    def _clouds(self, student_feat, teacher_feat, offset):
        """Normalised TPS subsamples per sample: lists of student (M_b, C_S) and teacher (M_b, C_T) clouds."""
        for name, feat in (("student_feat", student_feat), ("teacher_feat", teacher_feat)):
            if feat.dim() != 2:
                raise ValueError(f"TopologyLoss: {name} must be (N, C), got shape {tuple(feat.shape)}")
            if not torch.isfinite(feat).all():
                raise ValueError(f"TopologyLoss: {name} contains NaN or Inf")
        n = len(student_feat)
        if len(teacher_feat) != n or offset.dim() != 1 or len(offset) == 0 or int(offset[-1]) != n:
            raise ValueError(
                f"TopologyLoss: student_feat has {n} rows and teacher_feat {len(teacher_feat)}, "
                f"but offset {offset.tolist()} must end at that row count"
            )
        bounds = [0, *offset.tolist()]
        if any(b < a for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"TopologyLoss: offset {offset.tolist()} must be non-decreasing")
        # A fresh seeded generator per call: the start points depend only on the seed and the batch,
        # so a resumed run samples as the original one did.
        generator = torch.Generator(teacher_feat.device).manual_seed(self.seed)
        students, teachers = [], []
        for start, end in zip(bounds, bounds[1:]):
            teacher = teacher_feat[start:end].detach()  # the teacher side has no grad
            # M covering the whole scan keeps every point; a Rips diagram does not depend on their order.
            index = tps(teacher, self.num_samples, generator) if end - start > self.num_samples else slice(None)
            teachers.append(normalize(teacher[index], self.normalization))
            students.append(normalize(student_feat[start:end][index], self.normalization))
        return students, teachers

    def _start_diagrams(self, students, teachers) -> Callable[[], list[tuple[list, list]]]:
        """Start all clouds' persistence on one thread pool (the detached teacher clouds skip critical-edge
        recovery); the returned function joins it: per sample, (teacher, student) lists over dims of (K_d, 2)."""
        pending = PendingDiagrams(
            teachers + students, self.dims, self.backend, self.workers, self.eps_dist, self.tie_tol,
            self.max_bottleneck,
        )

        def join():
            dgms = pending.result()
            return list(zip(dgms[: len(teachers)], dgms[len(teachers) :]))

        return join

    def start(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor, offset: torch.Tensor
              ) -> Callable[[], torch.Tensor]:
        """Sample and normalise the clouds and start their persistence on the thread pool, so it overlaps
        whatever the caller does next; the returned function joins it and gives `forward`'s L_topo."""
        join = self._start_diagrams(*self._clouds(student_feat, teacher_feat, offset))
        distance = functools.partial(pwcd, eps=self.eps) if self.distance == "pwcd" else chamfer

        def finish() -> torch.Tensor:
            per_sample = [sum(distance(t, s) for t, s in zip(teacher, student)) for teacher, student in join()]
            return torch.stack(per_sample).mean()

        return finish

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Scalar L_topo: the mean over the offset's samples of the diagram distance summed over dims."""
        return self.start(student_feat, teacher_feat, offset)()

    @torch.no_grad()
    def diagrams(
        self, student_feat: torch.Tensor, teacher_feat: torch.Tensor, offset: torch.Tensor
    ) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """The diagrams the loss compares, for plotting: per sample, (teacher, student) lists over dims of (K_d, 2)."""
        return self._start_diagrams(*self._clouds(student_feat, teacher_feat, offset))()


class TopologyDistillation(DistillationTerm):
    """λ_topo·L_topo of Eq. 8, summed over the tapped layers.

    The feature clouds hold each cell of a tapped level once, not once per input point in it; teacher
    and student rows are the same cells.

    overlap: "auto", True or False. When on, `start` begins the persistence on its threads during the
    teacher's forward, so that it overlaps the teacher's decoder and the other terms, and `forward` joins
    it. "auto" overlaps when the features are on a GPU, whose host cores are then free. On a CPU the
    persistence threads compete with torch's own for the same cores, which made a 2-core step no faster
    with one torch thread and 27 % slower with two (`python -m ptdistill.bench.distill_step`).
    """

    feature_term = True

    def __init__(self, weight: float, taps: list[str], loss: TopologyLoss, overlap: bool | str = "auto",
                 start_epoch: int = 0, stop_epoch: int | None = None):
        super().__init__(weight, taps, start_epoch, stop_epoch)
        if overlap not in (True, False, "auto"):
            raise ValueError(f"overlap must be true, false or auto, got {overlap!r}")
        self.loss = loss
        self.overlap = overlap
        self._started = None  # (batch, [finish per tap]) of the step `start` began
        self._last_clouds = None  # the last tap's detached (student, teacher, offset), for `diagrams`

    def start(self, batch: dict, student_taps: dict, teacher_taps: dict) -> None:
        on_gpu = teacher_taps[self.taps[0]].feat.is_cuda
        if self.overlap is True or (self.overlap == "auto" and on_gpu):
            self._started = (batch, self._begin(batch, student_taps, teacher_taps))

    def forward(self, step: DistillStep) -> torch.Tensor:
        started, self._started = self._started, None
        if started is not None and started[0] is step.batch:
            finishes = started[1]
        else:  # not started during the teacher's forward: compute it here
            finishes = self._begin(step.batch, step.student["taps"], step.teacher["taps"])
        return sum((finish() for finish in finishes), step.seg_loss.new_zeros(()))

    def _begin(self, batch: dict, student_taps: dict, teacher_taps: dict) -> list[Callable[[], torch.Tensor]]:
        """Start L_topo of every tap (`TopologyLoss.start`); the functions that join them."""
        finishes = []
        for name in self.taps:
            s, t = student_taps[name], teacher_taps[name]
            points, offset = one_point_per_cell((s, t), batch["offset"])  # (N_cells,), (B,)
            # (N_cells, C_S) and (N_cells, C_T), row-aligned
            student_feat, teacher_feat = s.feat[s.index[points]], t.feat[t.index[points]].detach()
            finishes.append(self.loss.start(student_feat, teacher_feat, offset))
        self._last_clouds = (student_feat.detach(), teacher_feat, offset)
        return finishes

    def diagrams(self) -> tuple[list, list, tuple] | None:
        """Teacher and student diagrams (per dim) of the last step's first scan, for dashboards."""
        if self._last_clouds is None:
            return None
        teacher, student = self.loss.diagrams(*self._last_clouds)[0]
        return teacher, student, self.loss.dims
