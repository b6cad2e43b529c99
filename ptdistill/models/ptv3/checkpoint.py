"""Loading Pointcept checkpoints (`DefaultSegmentorV2` around PT-v3m1) into a `PTv3Segmentor`.

Accepted files: Pointcept's training checkpoint (`{"state_dict": ..., "epoch": ...}`), a bare
state dict, with or without DDP's `module.` prefix, or a stage-1 checkpoint of train.py (`model.`).
They are untrusted: `checkpoint_io.read_torch_file` reads them weights-only, and refuses a file that
needs full unpickling unless `trust=True`.
Keys and shapes must match exactly; otherwise the error lists every difference.
"""

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from ptdistill.checkpoint_io import read_torch_file
from ptdistill.errors import UserError

PREFIXES = ("module.", "model.")  # DDP's wrapper; the LightningModule's attribute in train.py checkpoints
MAX_LISTED = 20  # differences listed per kind before "... and N more"


class CheckpointMismatchError(UserError):
    """The checkpoint's keys or shapes are not those of the model."""


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, Tensor]:
    """The state dict stored in a checkpoint or bare state-dict file, without its `PREFIXES`."""
    content = read_torch_file(path, trust=trust, trust_option="trust_checkpoint")
    state = content.get("state_dict", content) if isinstance(content, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path} holds no state dict (a mapping of names to tensors)")
    for prefix in PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return dict(state)


def load_pointcept_checkpoint(model: nn.Module, path: str | Path, trust: bool = False) -> None:
    """Copy the checkpoint's weights into `model`; raise CheckpointMismatchError listing what differs."""
    state = read_state_dict(path, trust)
    differences = state_dict_differences(model.state_dict(), state)
    if differences:
        raise CheckpointMismatchError(f"checkpoint {path} does not fit {type(model).__name__}:\n" + differences)
    model.load_state_dict(state)


def state_dict_differences(expected: Mapping[str, Tensor], found: Mapping[str, Tensor]) -> str:
    """A readable list of missing keys, unexpected keys and shape mismatches; empty when they agree."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [
        f"{key}: checkpoint {tuple(found[key].shape)}, model {tuple(expected[key].shape)}"
        for key in expected
        if key in found and found[key].shape != expected[key].shape
    ]
    sections = []
    for title, items in (("missing in checkpoint", missing), ("unexpected in checkpoint", unexpected),
                         ("shape mismatch", shapes)):
        if items:
            listed = [f"    {item}" for item in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                listed.append(f"    ... and {len(items) - MAX_LISTED} more")
            sections.append(f"  {len(items)} {title}:\n" + "\n".join(listed))
    return "\n".join(sections)
