"""Golden test: a Pointcept PT-v3m1 checkpoint loaded through `model.student.checkpoint=` gives the logits
that Pointcept's own code gave for it (the fixture in ../shared/fixtures/pointcept_golden, made as its
README says: eval mode, fixed serialization orders, no flash attention)."""

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

FIXTURE = ROOT.parent / "shared" / "fixtures" / "pointcept_golden" / "student.pt"

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not FIXTURE.exists(), reason=f"the Pointcept golden fixture is not at {FIXTURE}"),
]


@pytest.fixture(scope="module")
def golden():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def student(golden, tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("golden") / "model_best.pth"
    torch.save(golden["checkpoint"], checkpoint)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=ptv3", "dataset=nuscenes", f"model.student.checkpoint={checkpoint}",
                                          "model.student.enable_flash=false"])
    spec = golden["spec"]
    assert tuple(cfg.model.student.enc_channels) == tuple(spec["enc_channels"])  # the paper's student, as the fixture's
    assert cfg.model.student.enc_patch_size[0] == spec["patch_size"]
    return instantiate(cfg.model.student).eval()


@pytest.mark.parametrize("case", ["a", "b", "c", "s"])
def test_logits_equal_pointcepts_own(golden, student, case):
    with torch.no_grad():
        logits = student(dict(golden["inputs"][case]))["logits"]  # (N, 16)
    expected = golden["logits"][case]
    relative = float((logits - expected).abs().max() / expected.abs().max())
    assert relative <= 1e-5, f"case {case}: relative max difference {relative:.2e}"
    assert torch.equal(logits.argmax(1), expected.argmax(1)), f"case {case}: argmax disagrees"
