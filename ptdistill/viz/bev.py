"""Bird's-eye-view images of point-wise labels, for dashboards (ground truth vs teacher vs student)."""

import matplotlib
import numpy as np

# A fixed, distinct colour per class; the ignore label (-1) is drawn black.
PALETTE = (matplotlib.colormaps["tab20"](np.arange(20))[:, :3] * 255).astype(np.uint8)


def bev_image(coord: np.ndarray, labels: np.ndarray, extent: float = 40.0, resolution: float = 0.2) -> np.ndarray:
    """Rasterise points seen from above: coord (N, 3) metres, labels (N,) -> RGB (H, W, 3) uint8.

    The image covers [-extent, extent]² around the sensor; where points overlap, the highest wins.
    """
    size = int(round(2 * extent / resolution))
    image = np.zeros((size, size, 3), dtype=np.uint8)
    cols = ((coord[:, 0] + extent) / resolution).astype(np.int64)
    rows = ((extent - coord[:, 1]) / resolution).astype(np.int64)
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    order = np.argsort(coord[inside, 2])  # paint low points first, so high ones stay visible
    rows, cols, labels = rows[inside][order], cols[inside][order], labels[inside][order]
    colours = np.where(labels[:, None] >= 0, PALETTE[np.maximum(labels, 0) % len(PALETTE)], 0)
    image[rows, cols] = colours
    return image


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Concatenate equally sized images horizontally with a white gap."""
    spacer = np.full((images[0].shape[0], gap, 3), 255, dtype=np.uint8)
    parts = [part for image in images for part in (image, spacer)][:-1]
    return np.concatenate(parts, axis=1)
