"""The LightningDataModule of every LiDAR dataset, built by Hydra from `conf/dataset/<name>.yaml`."""

from collections.abc import Callable

import lightning as L
from torch.utils.data import DataLoader

from ptdistill.data.collate import collate
from ptdistill.data.dataset import LidarDataset, Transform


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
    ):
        super().__init__()
        self.dataset = dataset
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.prepare = prepare
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

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
