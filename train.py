"""Train ptdistill: `python train.py dataset=semantickitti loss=topo+grad` (see README.md)."""

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from ptdistill.errors import find_user_error
from ptdistill.pipeline import train

log = logging.getLogger("ptdistill")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    if "wandb" in cfg.logger and not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        log.info("No WANDB_API_KEY: W&B runs offline (sync later with `wandb sync`).")
        os.environ["WANDB_MODE"] = "offline"
    try:
        return train(cfg)
    except Exception as error:  # a user's mistake is one clear line; anything else keeps its traceback
        if (user_error := find_user_error(error)) is None:
            raise
        log.error("%s", user_error)
        sys.exit(f"error: {user_error}")


if __name__ == "__main__":
    main()
