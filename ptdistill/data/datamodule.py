"""The LightningDataModule of every LiDAR dataset, built by Hydra from `conf/dataset/<name>.yaml`."""

from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from ptdistill.data.collate import collate
from ptdistill.data.dataset import LidarDataset, Transform
from ptdistill.data.sampler import EpochShuffleSampler
from ptdistill.data.tta import TestTimeAugmentation


class LidarDataModule(L.LightningDataModule):
    """Loaders of the train, val and test splits of one dataset.

    Args:
        dataset: the reader with everything but the split and the transform bound
            (a Hydra `_partial_: true` node), called as dataset(split=..., transform=...).
        train_transform: augmentation and grid sampling for the train split.
        eval_transform: grid sampling that keeps the inverse map, for val and test.
        batch_size, eval_batch_size: scans per training / evaluation batch.
        num_workers: DataLoader worker processes.
        prepare: called once, on one process, before setup; e.g. generates the synthetic scans.
        seed: the training order and augmentation of epoch e come from (seed, e) alone, and the epoch
            counter is saved in checkpoints, so a resumed run sees the data an uninterrupted one would.
        tta: evaluate val and test under every view of `tta_views` (`ptdistill.data.tta.View` arguments).
    """

    def __init__(
        self,
        dataset: Callable[..., LidarDataset],
        train_transform: Transform,
        eval_transform: Transform,
        batch_size: int = 2,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        prepare: Callable[[], None] | None = None,
        seed: int = 0,
        tta: bool = False,
        tta_views: Sequence[Mapping] = (),
    ):
        super().__init__()
        self.dataset = dataset
        self.train_transform, self.eval_transform = train_transform, eval_transform
        if tta:
            self.eval_transform = TestTimeAugmentation(eval_transform, tta_views)
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.prepare = prepare
        self.seed = seed
        self.train_epochs = 0  # training epochs begun, restored from checkpoints
        self.splits: dict[str, LidarDataset] = {}

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted[stage] if stage else ("train", "val", "test"):
            if split not in self.splits:
                transform = self.train_transform if split == "train" else self.eval_transform
                self.splits[split] = self.dataset(split=split, transform=transform)

    @property
    def num_skipped(self) -> int:
        """Bad samples skipped so far by this process and its DataLoader workers, over all splits (under DDP:
        this rank's count; the files are named in the warnings)."""
        return sum(len(dataset.skipped) for dataset in self.splits.values())

    def state_dict(self) -> dict:
        sampler = getattr(self, "_train_sampler", None)
        return {"train_epochs": sampler.epoch if sampler else self.train_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.train_epochs = state["train_epochs"]

    def _loader(self, split: str, batch_size: int, sampler: EpochShuffleSampler | None = None) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            # Not persistent: workers restart each epoch from the epoch's keys. A private generator keeps
            # loader start-up from drawing on the global RNG.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        self._train_sampler = EpochShuffleSampler(len(self.splits["train"]), self.seed, self.train_epochs)
        return self._loader("train", self.batch_size, self._train_sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
