"""The PTv3 segmentor end to end: sizes, taps, determinism, equivariance, gradients, bad input."""


import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from ptdistill.config import model_config
from ptdistill.models.ptv3 import PTv3Segmentor
from ptdistill.models.ptv3.blocks import MLP
from ptdistill.points import one_point_per_cell

NUM_CLASSES = 5
TAPS = ("enc0", "enc1", "enc2", "enc3", "enc4", "dec3", "dec2", "dec1", "dec0")



pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(role: str = "teacher", **overrides) -> PTv3Segmentor:
    torch.manual_seed(0)
    return instantiate(model_config("ptv3_tiny", num_classes=NUM_CLASSES).model[role], **overrides)


def sample(seed: int, n: int, side: int = 64) -> dict:
    """n distinct voxels of a side^3 grid; one sits at side-1 so every sample has the same depth."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.cat([torch.tensor([side**3 - 1]), torch.randperm(side**3 - 1, generator=g)[: n - 1]])
    grid = torch.stack(torch.unravel_index(cells, (side,) * 3), dim=1)
    coord = (grid + torch.rand(n, 3, generator=g)) * 0.05
    feat = torch.cat([coord, torch.rand(n, 1, generator=g)], dim=1)
    segment = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return {"coord": coord, "grid_coord": grid, "feat": feat, "segment": segment}


def collate(*samples: dict) -> dict:
    batch = {key: torch.cat([s[key] for s in samples]) for key in samples[0]}
    batch["offset"] = torch.tensor([len(s["feat"]) for s in samples]).cumsum(0)
    return batch


@pytest.mark.parametrize("role, expected", [("teacher", 46_159_312), ("student", 2_777_344)])
def test_parameter_counts_are_the_papers(role, expected):
    # nuScenes: 4 input channels, 16 classes; the seg head is included.
    with torch.device("meta"):
        model = instantiate(model_config("ptv3", num_classes=16).model[role])
    assert sum(p.numel() for p in model.parameters()) == expected


def test_taps_map_every_input_point_to_its_cell_at_each_stage():
    model = tiny().eval()
    batch = collate(sample(0, 300), sample(1, 200))
    with torch.no_grad():
        out = model(batch, taps=TAPS)
    assert out["logits"].shape == (500, NUM_CLASSES)
    channels = dict(zip(TAPS, [16, 16, 32, 48, 64, 48, 32, 32, 32]))
    sample_of = torch.repeat_interleave(torch.arange(2), torch.tensor([300, 200]))
    for name, tap in out["taps"].items():
        level = int(name[3:])
        assert tap.per_point().shape == (500, channels[name])
        # Two points share a row exactly when they share the stage's cell (stride 2 per level).
        cell = torch.cat([sample_of[:, None], batch["grid_coord"] >> level], dim=1)
        _, cell_id = torch.unique(cell, dim=0, return_inverse=True)
        pairs = torch.unique(torch.stack([cell_id, tap.index], dim=1), dim=0)
        assert len(pairs) == len(cell_id.unique()) == len(tap.index.unique()) == len(tap.feat)
    assert torch.equal(out["taps"]["dec0"].index, torch.arange(500))
    assert torch.allclose(model.seg_head(out["taps"]["dec0"].feat), out["logits"])


def test_one_point_per_cell_picks_each_shared_cell_once_sample_by_sample():
    teacher, student = tiny("teacher").train(), tiny("student").train()  # training shuffles the curve orders
    batch = collate(sample(6, 300), sample(7, 200))
    with torch.no_grad():
        taps = (student(batch, taps=("enc3",))["taps"]["enc3"], teacher(batch, taps=("enc3",))["taps"]["enc3"])
    points, offset = one_point_per_cell(taps, batch["offset"])
    sample_of = torch.repeat_interleave(torch.arange(2), torch.tensor([300, 200]))
    cell = torch.stack([sample_of, *(tap.index for tap in taps)], dim=1)  # (N, 3): sample, student row, teacher row
    assert len(cell[points].unique(dim=0)) == len(points) == len(cell.unique(dim=0))  # every cell, once
    assert torch.equal(sample_of[points], torch.sort(sample_of[points]).values)  # sample by sample
    assert offset.tolist() == torch.bincount(sample_of[points]).cumsum(0).tolist()
    # Same stride in both models: their cells coincide, one row of each tap per cell.
    assert len(points) == len(taps[0].feat) == len(taps[1].feat)


def test_eval_is_deterministic_and_equivariant_to_point_order():
    model = tiny().eval()
    batch = collate(sample(2, 400), sample(3, 250))
    perm = torch.cat([torch.randperm(400), 400 + torch.randperm(250)])
    permuted = {key: value[perm] if key != "offset" else value for key, value in batch.items()}
    with torch.no_grad():
        out = model(batch, taps=("enc3",))
        again = model(batch, taps=("enc3",))
        shuffled = model(permuted, taps=("enc3",))
    assert torch.equal(out["logits"], again["logits"])
    assert torch.allclose(shuffled["logits"], out["logits"][perm], atol=1e-5)
    assert torch.allclose(shuffled["taps"]["enc3"].per_point(), out["taps"]["enc3"].per_point()[perm], atol=1e-5)


def test_samples_do_not_influence_each_other():
    model = tiny().eval()
    a, b = sample(4, 350), sample(5, 500)
    with torch.no_grad():
        alone = model(collate(a))["logits"]
        first = model(collate(a, b))["logits"][:350]
        last = model(collate(b, a))["logits"][500:]
    assert torch.allclose(first, alone, atol=1e-5) and torch.allclose(last, alone, atol=1e-5)


def test_training_shuffles_serialization_orders_only_when_asked():
    batch = collate(sample(6, 300))
    outputs = {}
    for shuffle in (True, False):
        model = tiny(shuffle_orders=shuffle, drop_path=0.0).train()
        torch.manual_seed(1)
        first = model(batch)["logits"]
        second = model(batch)["logits"]
        outputs[shuffle] = torch.allclose(first, second, atol=1e-6)
    assert outputs == {True: False, False: True}


def test_gradients_reach_every_parameter():
    model = tiny(drop_path=0.0).train()
    batch = collate(sample(7, 300), sample(8, 200))
    F.cross_entropy(model(batch)["logits"], batch["segment"]).backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


@pytest.mark.parametrize("frozen", [False, True])
def test_taps_lie_on_the_autograd_path_to_the_logits(frozen):
    model = tiny().eval().requires_grad_(not frozen)
    batch = collate(sample(9, 300))
    out = model(batch, taps=TAPS, tap_grad=frozen)
    loss = F.cross_entropy(out["logits"], batch["segment"])
    grads = torch.autograd.grad(loss, [tap.feat for tap in out["taps"].values()])
    assert all(g.abs().sum() > 0 for g in grads)


def test_first_decoder_block_convolves_the_skip_branch_like_pointcept():
    # Pointcept does not refresh its sparse tensor after the unpooling sum, so the CPE conv of the
    # next block sees proj_skip(skip) alone; Pointcept checkpoints were trained that way.
    model = tiny().eval()
    seen = {}
    stage = model.backbone.dec.dec1
    stage.up.proj_skip.register_forward_hook(lambda m, i, o: seen.setdefault("skip", o))
    stage.block0.cpe[0].register_forward_hook(lambda m, i, o: seen.setdefault("conv_input", i[0]))
    with torch.no_grad():
        model(collate(sample(10, 300)))
    assert torch.equal(seen["conv_input"], seen["skip"])


def test_tiny_student_is_several_times_smaller_than_tiny_teacher():
    teacher, student = (sum(p.numel() for p in tiny(role).parameters()) for role in ("teacher", "student"))
    assert 3 < teacher / student < 10


def corrupt(batch: dict, key: str, value) -> dict:
    return {**batch, key: value}


GOOD = collate(sample(11, 50), sample(12, 40))
BAD_INPUTS = {
    "NaN coordinate": (corrupt(GOOD, "coord", GOOD["coord"].index_fill(0, torch.tensor([3]), float("nan"))),
                       r"batch\['coord'\] holds NaN or Inf"),
    "Inf feature": (corrupt(GOOD, "feat", GOOD["feat"].index_fill(0, torch.tensor([7]), float("inf"))),
                    r"batch\['feat'\] holds NaN or Inf"),
    "wrong feat width": (corrupt(GOOD, "feat", GOOD["feat"][:, :3]), r"expected \(N, 4\) \(in_channels\)"),
    "empty batch": ({"coord": torch.zeros(0, 3), "grid_coord": torch.zeros(0, 3, dtype=torch.long),
                     "feat": torch.zeros(0, 4), "offset": torch.zeros(0, dtype=torch.long)}, "batch is empty"),
    "empty sample": (corrupt(GOOD, "offset", torch.tensor([50, 50, 90])), r"empty samples \[1\]"),
    "offset not ending at N": (corrupt(GOOD, "offset", torch.tensor([50, 80])), "ending at 90"),
    "missing key": ({k: v for k, v in GOOD.items() if k != "grid_coord"}, r"batch lacks \['grid_coord'\]"),
    "negative voxel": (corrupt(GOOD, "grid_coord", GOOD["grid_coord"] - 1), "negative voxel coordinates"),
    "duplicate voxel": (corrupt(GOOD, "grid_coord", GOOD["grid_coord"].index_copy(
        0, torch.tensor([1]), GOOD["grid_coord"][2:3])), "same voxel twice"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_clear_error(case):
    batch, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        tiny().eval()(batch)


def test_unknown_tap_is_refused():
    with pytest.raises(ValueError, match=r"unknown taps \['enc9'\]"):
        tiny()(GOOD, taps=("enc9",))


def test_inconsistent_stage_lists_are_refused():
    with pytest.raises(ValueError, match="enc_channels has 4 entries"):
        PTv3Segmentor(in_channels=4, num_classes=3, enc_channels=(16, 32, 64, 128))
    with pytest.raises(ValueError, match="must equal enc_patch_size"):
        PTv3Segmentor(in_channels=4, num_classes=3, enc_patch_size=(64,) * 5, dec_patch_size=(32,) * 4)


def test_mlp_in_row_chunks_without_autograd_gives_the_same_rows(monkeypatch):
    mlp = MLP(8, 32).eval()
    monkeypatch.setattr(MLP, "inference_chunk", 7)
    x = torch.randn(50, 8)
    whole = mlp(x)  # autograd on: one pass
    with torch.inference_mode():
        chunked = mlp(x)
    torch.testing.assert_close(chunked, whole.detach(), rtol=1e-6, atol=1e-6)
