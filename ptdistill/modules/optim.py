"""Pointcept's optimisation recipe: AdamW with a lower lr for transformer blocks, OneCycleLR per step."""

from collections.abc import Callable

import torch
from torch import nn


def block_param_groups(model: nn.Module, lr: float, block_lr_scale: float) -> list[dict]:
    """Two groups, as Pointcept's `param_dicts=[dict(keyword="block", lr=0.0002)]` (0.1 × 0.002)."""
    block, other = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (block if "block" in name else other).append(param)
    groups = [{"params": other, "lr": lr}, {"params": block, "lr": lr * block_lr_scale}]
    return [group for group in groups if group["params"]]


def configure_one_cycle(
    model: nn.Module,
    optimizer: Callable[..., torch.optim.Optimizer],
    scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None,
    block_lr_scale: float,
    total_steps: int,
) -> dict:
    """Lightning's `configure_optimizers` answer: the optimizer and a per-step OneCycleLR."""
    base_lr = optimizer.keywords["lr"]
    opt = optimizer(block_param_groups(model, base_lr, block_lr_scale))
    if scheduler is None:
        return {"optimizer": opt}
    max_lr = [group["lr"] for group in opt.param_groups]
    sched = scheduler(opt, max_lr=max_lr, total_steps=max(int(total_steps), 1))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
