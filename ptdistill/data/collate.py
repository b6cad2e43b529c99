"""Collate samples into one batch by concatenation with an `offset` vector (the Pointcept convention)."""

import numpy as np
import torch

BATCH_KEYS = {"coord": torch.float32, "grid_coord": torch.int64, "feat": torch.float32, "segment": torch.int64}


def collate(samples: list[dict]) -> dict:
    """Concatenate transformed samples; no padding.

    Returns coord (N, 3), grid_coord (N, 3), feat (N, C), segment (N,), offset (B,) (cumulative end
    of each sample) and name (list of B str). Samples from the evaluation transform also give
    inverse (N_full,) (shifted to index the concatenated batch), origin_segment (N_full,) and origin_offset (B,).

    Samples with test-time views (`ptdistill.data.tta`) give their V views as V consecutive samples each
    (offset (B * V,)) and inverse (V, N_full): row v maps every original point to view v.
    """
    names = [s["name"] for s in samples]
    num_views = len(samples[0]["views"]) if "views" in samples[0] else 1
    if "views" in samples[0]:
        samples = [{**view, "name": s["name"]} for s in samples for view in s["views"]]
    batch = {
        key: torch.from_numpy(np.concatenate([s[key] for s in samples])).to(dtype) for key, dtype in BATCH_KEYS.items()
    }
    counts = np.array([len(s["coord"]) for s in samples])
    batch["offset"] = torch.from_numpy(np.cumsum(counts))
    if "inverse" in samples[0]:
        starts = np.cumsum(counts) - counts
        inverse = [s["inverse"] + start for s, start in zip(samples, starts)]  # view v of scan b at b * V + v
        batch["inverse"] = torch.from_numpy(np.stack([np.concatenate(inverse[v::num_views]) for v in range(num_views)]))
        originals = samples[::num_views]
        batch["origin_segment"] = torch.from_numpy(np.concatenate([s["origin_segment"] for s in originals])).long()
        batch["origin_offset"] = torch.from_numpy(np.cumsum([len(s["origin_segment"]) for s in originals]))
        if num_views == 1:
            batch["inverse"] = batch["inverse"][0]
    batch["name"] = names
    return batch
