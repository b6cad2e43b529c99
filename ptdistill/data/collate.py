"""Collate samples into one batch by concatenation with an `offset` vector (the Pointcept convention)."""

import numpy as np
import torch

BATCH_KEYS = {"coord": torch.float32, "grid_coord": torch.int64, "feat": torch.float32, "segment": torch.int64}


def collate(samples: list[dict]) -> dict:
    """Concatenate transformed samples; no padding.

    Returns coord (N, 3), grid_coord (N, 3), feat (N, C), segment (N,), offset (B,) (cumulative end
    of each sample) and name (list of B str). Samples from the evaluation transform also give
    inverse (N_full,) (shifted to index the concatenated batch), origin_segment (N_full,) and origin_offset (B,).
    """
    batch = {
        key: torch.from_numpy(np.concatenate([s[key] for s in samples])).to(dtype) for key, dtype in BATCH_KEYS.items()
    }
    counts = np.array([len(s["coord"]) for s in samples])
    batch["offset"] = torch.from_numpy(np.cumsum(counts))
    if "inverse" in samples[0]:
        starts = np.cumsum(counts) - counts
        batch["inverse"] = torch.from_numpy(np.concatenate([s["inverse"] + start for s, start in zip(samples, starts)]))
        batch["origin_segment"] = torch.from_numpy(np.concatenate([s["origin_segment"] for s in samples])).long()
        batch["origin_offset"] = torch.from_numpy(np.cumsum([len(s["origin_segment"]) for s in samples]))
    batch["name"] = [s["name"] for s in samples]
    return batch
