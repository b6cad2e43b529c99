"""Parameter and FLOP counts against the architecture, and the efficiency report end to end."""

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.bench.flops import (
    CPU_SDPA,
    PartCount,
    count_model,
    flop_counter,
    num_params,
    stages,
)
from ptdistill.config import model_config
from ptdistill.models.ptv3.blocks import Block
from ptdistill.models.ptv3.structure import PointBatch
from ptdistill.tasks.efficiency import efficiency_report

pytestmark = pytest.mark.usefixtures("one_thread")


def model(name: str, role: str, num_classes: int = 16) -> torch.nn.Module:
    cfg = model_config(name, num_classes=num_classes)
    torch.manual_seed(0)
    return instantiate(cfg.model[role])


def cube_batch(side: int, channels: int) -> dict:
    """Every voxel of a side³ cube, one sample."""
    grid = torch.cartesian_prod(*[torch.arange(side)] * 3)
    return {"coord": grid * 0.05, "grid_coord": grid, "feat": torch.randn(len(grid), channels),
            "offset": torch.tensor([len(grid)])}


@pytest.mark.parametrize("role, total", [("teacher", 46_159_312), ("student", 2_777_344)])
def test_parameters_split_into_encoder_and_decoder(role, total):
    with torch.device("meta"):
        segmentor = model("ptv3", role)
    encoder, decoder = (sum(num_params(m) for m in part.values()) for part in stages(segmentor))
    assert encoder + decoder == num_params(segmentor) == total
    by_name = {name: p.numel() for name, p in segmentor.named_parameters()}
    assert encoder == sum(n for name, n in by_name.items() if name.startswith(("backbone.embedding", "backbone.enc")))


@pytest.mark.parametrize("channels", [8, 32, 512])
def test_block_parameters_by_hand(channels):
    # CPE: conv 27C² + C, linear C² + C, LayerNorm 2C; two LayerNorms 4C; qkv 3C² + 3C; proj C² + C;
    # MLP 4C² + 4C and 4C² + C.
    with torch.device("meta"):
        block = Block(channels=channels, num_heads=1, patch_size=16)
    assert num_params(block) == 40 * channels**2 + 17 * channels


@settings(max_examples=12, deadline=None)
@given(side=st.integers(2, 5), channels=st.sampled_from([4, 8, 12]), heads=st.sampled_from([1, 2, 4]),
       patch_size=st.sampled_from([8, 16, 27, 1024]))
def test_block_flops_by_hand(side, channels, heads, patch_size):
    """One block on a dense cube: every count follows from N = side³ and the cube's neighbour pairs."""
    batch = cube_batch(side, channels)
    point = PointBatch.from_batch(batch, channels, ("z",), shuffle=False)
    block = Block(channels=channels, num_heads=heads, patch_size=patch_size).eval()
    with torch.inference_mode(), flop_counter() as counter:
        block(point)
    n, c = side**3, channels
    pairs = (3 * side - 2) ** 3  # (site, k3 offset) pairs inside the cube: (Σ_d (side - |d|))³, centre included
    conv = 2 * c * c * pairs
    # Patches of K points, the last one padded to K (a sample shorter than K is one patch of n).
    patches, length = (math.ceil(n / patch_size), patch_size) if n >= patch_size else (1, n)
    # CPE linear, proj, MLP fc1 and fc2 on the n rows; qkv on the padded rows it is gathered into.
    linear = 2 * n * c * c * (1 + 1 + 4 + 4) + 2 * patches * length * c * 3 * c
    attention = 4 * patches * length * length * c  # QKᵀ and AV
    counts = counter.get_flop_counts()["Global"]
    assert counts[CPU_SDPA] == attention
    assert counter.get_total_flops() == conv + linear + attention


def test_model_flops_are_split_without_loss():
    segmentor = model("ptv3_tiny", "student").eval()
    side = 6
    batch = cube_batch(side, 4)
    count = count_model(segmentor, batch)
    with torch.inference_mode(), flop_counter() as counter:
        segmentor(batch)
    assert count.flops == counter.get_total_flops() > 0
    assert count.params == num_params(segmentor)
    for field in ("params", "flops", "attention", "conv"):
        parts = getattr(count.encoder, field) + getattr(count.decoder, field)
        assert parts == sum(getattr(stage, field) for stage in count.per_stage.values())
    # The stem is one k5 conv, 4 -> 8 channels, without bias: 2·4·8 per (site, offset) pair of the cube.
    stem_flops = 2 * 4 * 8 * sum(side - abs(d) for d in range(-2, 3)) ** 3
    assert count.per_stage["embedding"] == PartCount(num_params(segmentor.backbone.embedding), stem_flops, 0,
                                                     stem_flops)
    for part in (count.encoder, count.decoder):
        assert part.attention > 0 and part.conv > 0 and part.linear > 0


@pytest.mark.slow
def test_report_runs_and_writes_markdown_and_json(tiny_config, capsys):
    cfg = tiny_config("task=efficiency", "efficiency.source=synthetic", "efficiency.points=1500",
                      "efficiency.warmup=0", "efficiency.runs=2", "efficiency.threads=1", "efficiency.top_ops=3",
                      config="evaluate")
    report = efficiency_report(cfg)
    printed = capsys.readouterr().out
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "efficiency_synthetic.json").read_text()) == report
    assert (out / "efficiency_synthetic.md").read_text().strip() in printed
    teacher, student = report["models"]["teacher"], report["models"]["student"]
    assert teacher["parameters"]["total"] == num_params(model("ptv3_tiny", "teacher", num_classes=10))
    assert student["parameters"]["total"] == num_params(model("ptv3_tiny", "student", num_classes=10))
    for result in (teacher, student):
        assert len(result["latency_s"]["runs"]) == 2 and result["fps"] == pytest.approx(1 / result["latency_s"]["mean"])
        assert 0 <= result["peak_memory_mib"] < result["process_peak_mib"]
        assert result["flops"]["encoder"]["total"] > result["flops"]["encoder"]["attention"] > 0
        assert "aten::addmm" in {op["name"] for op in result["ops"]}
    assert teacher["flops"]["encoder"]["total"] > student["flops"]["encoder"]["total"]
    ratio = teacher["parameters"]["total"] / student["parameters"]["total"]
    assert f"| parameters (M) | {teacher['parameters']['total'] / 1e6:,.2f} |" in printed
    assert f"{ratio:.2f}×" in printed
