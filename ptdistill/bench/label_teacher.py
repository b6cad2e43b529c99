"""A teacher-free control for `bench.kd_gain`: the KD term with the teacher's logits replaced by the labels.

    python train.py loss=labels ...        (conf/loss/labels.yaml: the kld row with this term)
    python -m ptdistill.bench.kd_gain --rows kld labels "kld loss.terms.kd.loss.class_balance=1" \
        "labels loss.terms.kd.loss.class_balance=1"

The row keeps everything of the KD row it copies (λ_kd, T, the epochs it is on, class_balance) but the
teacher's knowledge: whatever it gains over the no-KD student, a teacher did not give.
"""

import torch
import torch.nn.functional as F

from ptdistill.losses.kd import LogitDistillation
from ptdistill.losses.term import DistillStep

# Logit margin of the label "teacher": at T = 1 its softmax puts e^-30 ≈ 1e-13 on each wrong class, so its
# L_kd is the cross-entropy with the labels to ~1e-12.
LABEL_MARGIN = 30.0


class LabelDistillation(LogitDistillation):
    """λ_kd·L_kd (Eq. 8) against p_T = softmax(LABEL_MARGIN · one_hot(label)), in place of the teacher's."""

    def forward(self, step: DistillStep) -> torch.Tensor:
        logits, target = step.student["logits"], step.batch["segment"]  # (N, K), (N,)
        label = target.masked_fill(target == self.loss.ignore_index, 0)  # (N,) L_kd drops the ignored points
        label_logits = F.one_hot(label, logits.shape[1]).to(logits.dtype) * LABEL_MARGIN  # (N, K)
        return self.loss(logits, label_logits, target)
