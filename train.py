"""Train ptdistill: `python train.py dataset=semantickitti loss=topo+grad` (see README.md)."""

import logging
import os

import hydra
from omegaconf import DictConfig, OmegaConf

from ptdistill.errors import exits_on_user_error
from ptdistill.thread_policy import apply_thread_policy

log = logging.getLogger("ptdistill")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exits_on_user_error
def main(cfg: DictConfig) -> float:
    if "wandb" in cfg.logger and not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        log.info("No WANDB_API_KEY: W&B runs offline (sync later with `wandb sync`).")
        os.environ["WANDB_MODE"] = "offline"
    apply_thread_policy(cfg.threads, cfg.omp_spin_count)  # before torch loads: the rest imports it
    from ptdistill.config import check_targets
    from ptdistill.tasks.train import train

    check_targets(cfg)
    log.info("Data loading: %d loader workers", cfg.dataset.datamodule.num_workers)
    if cfg.get("print_config"):
        log.info("Config (also saved as %s/.hydra/config.yaml):\n%s", cfg.paths.output_dir, OmegaConf.to_yaml(cfg))
    return train(cfg)


if __name__ == "__main__":
    main()
