"""Evaluate ptdistill: `python evaluate.py ckpt_path=PATH dataset=NAME [task=iou|efficiency|export]`."""

import hydra
from omegaconf import DictConfig

from ptdistill.errors import UserError, exits_on_user_error
from ptdistill.thread_policy import apply_thread_policy

TASKS = ("iou", "efficiency", "export")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@exits_on_user_error
def main(cfg: DictConfig) -> None:
    if cfg.task not in TASKS:
        raise UserError(f"unknown task={cfg.task!r}; choose one of {sorted(TASKS)}")
    apply_thread_policy(None, cfg.omp_spin_count)  # before torch loads: the rest imports it
    from ptdistill.config import check_targets
    from ptdistill.tasks.efficiency import efficiency_report
    from ptdistill.tasks.export import export_student
    from ptdistill.tasks.iou import evaluate_iou

    check_targets(cfg)
    {"iou": evaluate_iou, "efficiency": efficiency_report, "export": export_student}[cfg.task](cfg)


if __name__ == "__main__":
    main()
