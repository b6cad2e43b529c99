"""Pointcept checkpoints (DefaultSegmentorV2 + PT-v3m1): key layout, loading, clear refusals."""

import argparse

import pytest
import torch
from hydra.utils import instantiate

from ptdistill.config import model_config
from ptdistill.errors import UserError
from ptdistill.models.ptv3.checkpoint import (
    CheckpointMismatchError,
    load_pointcept_checkpoint,
)

# Key names and shapes of Pointcept's PT-v3m1 teacher for nuScenes (4 inputs, 16 classes), read
# from Pointcept's model code: spconv weights are (C_out, k, k, k, C_in), PointSequential numbers
# its children, DefaultSegmentorV2 names the Linear head `seg_head`.
POINTCEPT_TEACHER_KEYS = {
    "seg_head.weight": (16, 64),
    "backbone.embedding.stem.conv.weight": (32, 5, 5, 5, 4),
    "backbone.embedding.stem.norm.running_var": (32,),
    "backbone.enc.enc0.block0.cpe.0.weight": (32, 3, 3, 3, 32),
    "backbone.enc.enc0.block0.cpe.0.bias": (32,),
    "backbone.enc.enc0.block0.cpe.1.weight": (32, 32),
    "backbone.enc.enc0.block0.cpe.2.weight": (32,),
    "backbone.enc.enc0.block0.norm1.0.weight": (32,),
    "backbone.enc.enc0.block0.attn.qkv.weight": (96, 32),
    "backbone.enc.enc0.block0.attn.qkv.bias": (96,),
    "backbone.enc.enc0.block0.attn.proj.weight": (32, 32),
    "backbone.enc.enc0.block0.norm2.0.bias": (32,),
    "backbone.enc.enc0.block0.mlp.0.fc1.weight": (128, 32),
    "backbone.enc.enc0.block0.mlp.0.fc2.weight": (32, 128),
    "backbone.enc.enc1.down.proj.weight": (64, 32),
    "backbone.enc.enc1.down.norm.0.num_batches_tracked": (),
    "backbone.enc.enc3.block5.cpe.0.weight": (256, 3, 3, 3, 256),
    "backbone.enc.enc4.block1.attn.qkv.weight": (1536, 512),
    "backbone.dec.dec3.up.proj.0.weight": (256, 512),
    "backbone.dec.dec3.up.proj.1.running_mean": (256,),
    "backbone.dec.dec3.up.proj_skip.0.weight": (256, 256),
    "backbone.dec.dec0.up.proj_skip.0.weight": (64, 32),
    "backbone.dec.dec0.block1.mlp.0.fc2.weight": (64, 256),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def config(name: str, num_classes: int = 5):
    return model_config(name, num_classes=num_classes)


def tiny(role: str = "teacher", checkpoint=None, seed: int = 0):
    torch.manual_seed(seed)
    return instantiate(config("ptv3_tiny").model[role], checkpoint=checkpoint)


def batch(n: int = 200) -> dict:
    g = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.unravel_index(torch.randperm(32**3, generator=g)[:n], (32,) * 3), dim=1)
    coord = grid * 0.05
    return {"coord": coord, "grid_coord": grid, "feat": torch.cat([coord, torch.rand(n, 1, generator=g)], 1),
            "offset": torch.tensor([n])}


def trained_like(model):
    """Perturb every tensor, BatchNorm statistics included, so a load that skipped one would show."""
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(torch.rand_like(value) * 0.1)
    return model.eval()


def test_state_dict_keys_and_shapes_are_pointcepts():
    with torch.device("meta"):
        teacher = instantiate(config("ptv3", num_classes=16).model.teacher)
    shapes = {key: tuple(value.shape) for key, value in teacher.state_dict().items()}
    assert {key: shapes.get(key) for key in POINTCEPT_TEACHER_KEYS} == POINTCEPT_TEACHER_KEYS
    assert all(key.startswith(("seg_head.", "backbone.")) for key in shapes)


@pytest.mark.parametrize("prefix", ["module.", "model.", ""])
@pytest.mark.parametrize("wrapped", [True, False])
def test_pointcept_checkpoint_loads_through_the_config_key(tmp_path, prefix, wrapped):
    source = trained_like(tiny(seed=1))
    state = {prefix + key: value for key, value in source.state_dict().items()}
    path = tmp_path / "model_best.pth"
    torch.save({"epoch": 50, "state_dict": state, "best_metric_value": 0.7} if wrapped else state, path)

    loaded = tiny(checkpoint=str(path)).eval()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(loaded(batch())["logits"], source(batch())["logits"])


def test_mismatching_keys_and_shapes_are_listed(tmp_path):
    state = tiny().state_dict()
    state.pop("backbone.enc.enc2.block0.attn.qkv.bias")
    state["backbone.enc.enc2.block0.attn.rpe.rpe_table"] = torch.zeros(3, 2)
    state["seg_head.weight"] = torch.zeros(7, 32)
    path = tmp_path / "other.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError) as error:
        load_pointcept_checkpoint(tiny(), path)
    message = str(error.value)
    assert str(path) in message
    assert "1 missing in checkpoint:\n    backbone.enc.enc2.block0.attn.qkv.bias" in message
    assert "1 unexpected in checkpoint:\n    backbone.enc.enc2.block0.attn.rpe.rpe_table" in message
    assert "seg_head.weight: checkpoint (7, 32), model (5, 32)" in message


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "student.pth"
    torch.save(tiny("student").state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch:(.|\n)*\.\.\. and \d+ more"):
        load_pointcept_checkpoint(tiny("teacher"), path)


def test_checkpoint_needing_full_unpickling_is_refused_unless_trusted(tmp_path):
    source = trained_like(tiny(seed=2))
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": source.state_dict(), "cfg": argparse.Namespace(lr=0.002)}, path)
    with pytest.raises(UserError, match="needs? full unpickling"):
        load_pointcept_checkpoint(tiny(), path)
    model = tiny()
    load_pointcept_checkpoint(model, path, trust=True)
    assert torch.equal(model.state_dict()["seg_head.weight"], source.state_dict()["seg_head.weight"])


def test_unreadable_checkpoints_get_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_pointcept_checkpoint(tiny(), tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="is not a readable torch file"):
        load_pointcept_checkpoint(tiny(), tmp_path / "text.pth")
    torch.save({"epoch": 3}, tmp_path / "no_state.pth")
    with pytest.raises(UserError, match="holds no state dict"):
        load_pointcept_checkpoint(tiny(), tmp_path / "no_state.pth")
