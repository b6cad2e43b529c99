"""A teacher-free, loss-free control for `bench.kd_gain`: the label control's AdamW transient as an lr schedule.

    python train.py experiment=kd_gain stage=student \
        scheduler._target_=ptdistill.bench.adam_transient.OneCycleWithAdamTransient +scheduler.jump_at=0.5

At T = 1 the labels-for-teacher control (`bench.label_teacher`) multiplies the loss by 1 + λ_kd from the
step it starts. AdamW's first moment follows the new scale within ~10 steps, its second (β₂ 0.999) within
~1000, so for a while every step is larger. This schedule gives the no-KD student that larger step as a
multiplier of OneCycle's learning rate (which AdamW's decoupled weight decay follows too), and nothing
else: if it gains what the control gains, the control's gain is this optimiser effect.
"""

import math

import torch
from torch.optim.lr_scheduler import OneCycleLR


def adam_step_ratio(steps_before: int, steps_after: int, loss_scale: float, betas: tuple[float, float]) -> float:
    """|AdamW step| after the loss is scaled by loss_scale, over the unscaled step, for a steady gradient.

    With a gradient of 1 for steps_before steps, then loss_scale for steps_after, the bias-corrected moments
    are m̂ = Σ_i w1_i g_i and v̂ = Σ_i w2_i g_i² (w the exponential weights over the steps so far), and the step
    is m̂ / √v̂ against 1 without the jump (ε neglected).
    """
    total = steps_before + steps_after
    first, second = [
        (beta**steps_after * (1 - beta**steps_before) + (1 - beta**steps_after) * scale) / (1 - beta**total)
        for beta, scale in zip(betas, (loss_scale, loss_scale**2))
    ]
    return first / math.sqrt(second)


class OneCycleWithAdamTransient(OneCycleLR):
    """OneCycleLR, times adam_step_ratio from the step at jump_at (a fraction of the run) on."""

    def __init__(self, optimizer: torch.optim.Optimizer, *args, jump_at: float, loss_scale: float = 2.0, **kwargs):
        # Set before OneCycleLR.__init__, which takes the first step.
        self.jump_step = round(jump_at * kwargs["total_steps"])
        self.loss_scale = loss_scale
        self.betas = optimizer.param_groups[0]["betas"]
        super().__init__(optimizer, *args, **kwargs)

    def get_lr(self) -> list[float]:
        step = self.last_epoch  # optimizer steps taken so far
        ratio = 1.0 if step < self.jump_step else adam_step_ratio(self.jump_step, step - self.jump_step + 1,
                                                                  self.loss_scale, self.betas)
        return [lr * ratio for lr in super().get_lr()]
