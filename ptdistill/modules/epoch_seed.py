"""Reseed every random source at the start of each epoch, so a resumed run replays what an uninterrupted
one would have done (data order, augmentation, serialization-order shuffling)."""

import lightning as L
from lightning.fabric.utilities.seed import seed_everything


class EpochSeed(L.Callback):
    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Distinct per epoch and per rank; the DataLoader iterator, created after this hook, follows.
        seed_everything(self.seed + 1000 * trainer.current_epoch + trainer.global_rank, workers=True, verbose=False)
