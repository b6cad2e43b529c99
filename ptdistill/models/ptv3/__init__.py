"""Point Transformer V3, faithful to Pointcept's PT-v3m1 and its checkpoints, in plain PyTorch.

The model takes a collated batch (Pointcept's convention, B samples concatenated):
    coord (N, 3) float metres, grid_coord (N, 3) int voxel coords from 0 per sample,
    feat (N, in_channels) float, offset (B,) int cumulative end row of each sample.
"""

from ptdistill.models.ptv3.segmentor import PTv3Segmentor

__all__ = ["PTv3Segmentor"]
