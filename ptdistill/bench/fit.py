"""How well models fit the scans they were trained on, against new ones: `python -m ptdistill.bench.fit CKPT... [OVERRIDE...]`.

Distillation usually helps a student generalise: where a model fits its training scans better than new
ones, a teacher's soft targets regularise it. This prints, for each checkpoint (arguments ending in
`.ckpt`; the others are `train.py` overrides that choose the dataset) and each split, every scan
voxelised as evaluation does, without augmentation, at the grid the checkpoint was trained at:
- mIoU on the original points, as training reports val/mIoU and test/mIoU;
- point accuracy;
- mean p(label), the softmax probability (T = 1) of the true class: how far the model's soft output, the
  KD target when the model is a teacher, is from the labels.
A train row no better than val and test means there is no generalisation gap for KD to close.
"""

import sys

import torch
from hydra.utils import instantiate

from ptdistill.checkpoint_io import trained_grid_size
from ptdistill.config import compose_train
from ptdistill.data.collate import collate
from ptdistill.data.dataset import LidarDataset
from ptdistill.modules.metrics import FullResolutionIoU
from ptdistill.modules.segmentation import SegmentationModule
from ptdistill.scoring import full_resolution_scores
from ptdistill.tasks.iou import module_from_checkpoint

SPLITS = ("train", "val", "test")


@torch.no_grad()
def split_fit(module: SegmentationModule, dataset: LidarDataset, ignore_index: int = -1) -> dict:
    """mIoU (%), point accuracy (%) and mean p(label) of `module` over the original points of `dataset`,
    whose transform must keep the inverse map (the eval transform)."""
    iou = FullResolutionIoU(module.hparams.num_classes, ignore_index)
    correct = p_label = points = 0.0
    for i in range(len(dataset)):
        batch = collate([dataset[i]])
        scores = full_resolution_scores(module(batch), batch["inverse"])  # (N_full, K)
        prediction, labels = scores.argmax(dim=1), batch["origin_segment"]  # (N_full,), (N_full,)
        iou.update(prediction, labels)
        labelled = labels != ignore_index
        correct += float((prediction[labelled] == labels[labelled]).sum())
        p_label += float(scores[labelled].gather(1, labels[labelled, None]).sum())
        points += int(labelled.sum())
    return {"mIoU": 100 * float(FullResolutionIoU.mean(iou.compute())), "accuracy": 100 * correct / points,
            "p_label": p_label / points}


def fit_table(checkpoints: list[str], overrides: list[str]) -> str:
    """Markdown: one row per checkpoint and split."""
    lines = ["| checkpoint | split | mIoU (%) | point accuracy (%) | mean p(label) |", "|---|---|---|---|---|"]
    cfg = compose_train(overrides)
    configured_grid = cfg.dataset.grid_size
    for checkpoint in checkpoints:
        module = module_from_checkpoint(checkpoint)
        cfg.dataset.grid_size = trained_grid_size(module.hparams, configured_grid, checkpoint)
        datamodule = instantiate(cfg.dataset.datamodule, num_workers=0, tta=False)
        datamodule.prepare_data()
        for split in SPLITS:
            fit = split_fit(module, datamodule.dataset(split=split, transform=datamodule.eval_transform),
                            cfg.dataset.ignore_index)
            lines.append(f"| {checkpoint} | {split} | {fit['mIoU']:.2f} | {fit['accuracy']:.2f} | {fit['p_label']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    checkpoints = [arg for arg in sys.argv[1:] if arg.endswith(".ckpt")]
    if not checkpoints:
        sys.exit(__doc__.splitlines()[0])
    print(fit_table(checkpoints, [arg for arg in sys.argv[1:] if not arg.endswith(".ckpt")]))


if __name__ == "__main__":
    main()
