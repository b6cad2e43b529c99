"""Train ptdistill: `python train.py dataset=semantickitti loss=topo+grad` (see README.md)."""

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from ptdistill.errors import UserError
from ptdistill.pipeline import train

log = logging.getLogger("ptdistill")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    if "wandb" in cfg.logger and not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        log.info("No WANDB_API_KEY: W&B runs offline (sync later with `wandb sync`).")
        os.environ["WANDB_MODE"] = "offline"
    try:
        return train(cfg)
    except UserError as error:
        log.error("%s", error)
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
