"""L_kd of Eq. 8: KL divergence between temperature-softened teacher and student distributions."""

import torch
import torch.nn.functional as F
from torch import nn

from ptdistill.losses.class_balance import checked_power, class_balanced_mean
from ptdistill.losses.term import DistillationTerm, DistillStep


class KLDivergenceLoss(nn.Module):
    """T² · KL(softmax(z_T / T) ‖ softmax(z_S / T)), averaged over the points that are not ignored.

    The T² factor keeps the gradient scale independent of the temperature (Hinton et al., 2015).

    class_balance (α, an option beyond the paper, whose L_kd is the plain point average α = 0): each point
    weighs n_c^(-α), n_c the batch's points of its label (`class_balanced_mean`).
    """

    def __init__(self, temperature: float = 4.0, ignore_index: int = -1, class_balance: float = 0.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"KD temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.ignore_index = ignore_index
        self.class_balance = checked_power(class_balance)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """student_logits (N, K), teacher_logits (N, K), target (N,) -> scalar."""
        keep = target != self.ignore_index  # (N,)
        if not keep.any():
            return student_logits.sum() * 0.0
        t = self.temperature
        log_p_student = F.log_softmax(student_logits[keep] / t, dim=1)  # (N', K)
        log_p_teacher = F.log_softmax(teacher_logits[keep].detach() / t, dim=1)  # (N', K)
        if self.class_balance == 0.0:  # the paper's point average, the same reduction as before the option
            kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
            return kl * t * t
        kl_per_point = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(1)  # (N',)
        return class_balanced_mean(kl_per_point, target[keep], self.class_balance) * t * t


class LogitDistillation(DistillationTerm):
    """λ_kd·L_kd of Eq. 8 on the final logits of every point."""

    def __init__(self, weight: float, loss: KLDivergenceLoss, start_epoch: int = 0, stop_epoch: int | None = None):
        super().__init__(weight, start_epoch=start_epoch, stop_epoch=stop_epoch)
        self.loss = loss

    def forward(self, step: DistillStep) -> torch.Tensor:
        return self.loss(step.student["logits"], step.teacher["logits"], step.batch["segment"])
