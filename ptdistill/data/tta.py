"""Test-time augmentation (as in Pointcept's test configs): each scan is evaluated under several fixed
views, and the softmax of the views is summed at full resolution, through each view's own
grid-sampling inverse (`ptdistill.scoring.full_resolution_scores`).

nuScenes: 5 scales x {identity, flip}; Waymo and SemanticKITTI: 4 rotations of 90 degrees about z.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from ptdistill.data.dataset import Transform


class View:
    """A fixed view: rotate about z by `degrees`, scale by `scale`, then mirror x and y if `flip`."""

    def __init__(self, degrees: float = 0.0, scale: float = 1.0, flip: bool = False):
        cos, sin = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        rotation = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]) * scale
        self.matrix = (np.diag([-1, -1, 1]) if flip else np.eye(3)) @ rotation  # (3, 3)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        sample["coord"] = (sample["coord"] @ self.matrix.T).astype(np.float32)
        return sample


class TestTimeAugmentation:
    """The evaluation `transform` applied to every view of a scan (`LidarDataModule(tta=True)`).

    A sample becomes `{"views": [transformed view, ...], "name": ...}`, each view with its own inverse
    (N_full,); `collate` puts the views of a batch side by side and stacks their inverses into
    inverse (V, N_full).

    Args:
        transform: the evaluation transform (grid sampling that keeps the inverse, features).
        views: keyword arguments of each `View`, e.g. [{"degrees": 0}, {"degrees": 90}, ...].
    """

    def __init__(self, transform: Transform, views: Sequence[Mapping]):
        if not views:
            raise ValueError("dataset.tta.views: test-time augmentation is enabled but lists no views")
        self.transform = transform
        self.views = [View(**view) for view in views]

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        views = [self.transform(view(dict(sample), rng), rng) for view in self.views]
        return {"views": views, "name": sample["name"]}
