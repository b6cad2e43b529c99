"""Evaluate ptdistill: `python evaluate.py ckpt_path=PATH dataset=NAME [task=iou|efficiency|export]`."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from ptdistill.bench.efficiency import efficiency_report
from ptdistill.errors import UserError, find_user_error
from ptdistill.evaluation import evaluate_iou
from ptdistill.export import export_student

TASKS = {"iou": evaluate_iou, "efficiency": efficiency_report, "export": export_student}

log = logging.getLogger("ptdistill")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        if cfg.task not in TASKS:
            raise UserError(f"unknown task={cfg.task!r}; choose one of {sorted(TASKS)}")
        TASKS[cfg.task](cfg)
    except Exception as error:  # a user's mistake is one clear line; anything else keeps its traceback
        if (user_error := find_user_error(error)) is None:
            raise
        log.error("%s", user_error)
        sys.exit(f"error: {user_error}")


if __name__ == "__main__":
    main()
