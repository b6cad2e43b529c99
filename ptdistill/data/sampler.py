"""Epoch-keyed shuffling, so a run resumed from a checkpoint replays the data of an uninterrupted one."""

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """Yields `(index, epoch_seed)` keys: a permutation drawn from epoch_seed = f(seed, epoch) alone.

    The dataset derives each sample's augmentation from the same key, so neither depends on the
    global RNG. `epoch` counts the iterations begun; `LidarDataModule` saves and restores it with
    the checkpoint. Under DDP, Lightning wraps this sampler so that each rank takes its share.
    """

    def __init__(self, num_samples: int, seed: int, epoch: int = 0):
        self.num_samples, self.seed, self.epoch = num_samples, seed, epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        epoch_seed = self.seed * 100_003 + epoch
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(epoch_seed))
        return iter([(index, epoch_seed) for index in order.tolist()])
