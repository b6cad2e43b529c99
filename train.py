"""Train ptdistill: `python train.py dataset=semantickitti loss=topo+grad` (see README.md)."""

import logging
import os

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ptdistill.config import check_targets
from ptdistill.errors import exits_on_user_error
from ptdistill.tasks.train import train

log = logging.getLogger("ptdistill")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exits_on_user_error
def main(cfg: DictConfig) -> float:
    if "wandb" in cfg.logger and not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        log.info("No WANDB_API_KEY: W&B runs offline (sync later with `wandb sync`).")
        os.environ["WANDB_MODE"] = "offline"
    check_targets(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log.info("Thread policy: %d torch threads, OMP_WAIT_POLICY=%s, %d loader workers", torch.get_num_threads(),
             os.environ.get("OMP_WAIT_POLICY", "unset"), cfg.dataset.datamodule.num_workers)
    if cfg.get("print_config"):
        log.info("Config (also saved as %s/.hydra/config.yaml):\n%s", cfg.paths.output_dir, OmegaConf.to_yaml(cfg))
    return train(cfg)


if __name__ == "__main__":
    main()
