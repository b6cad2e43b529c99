"""Serialized patch attention: Pointcept's padding and attention restricted to curve patches."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.models.ptv3 import attention
from ptdistill.models.ptv3.attention import PatchLayout, SerializedAttention
from ptdistill.models.ptv3.structure import PointBatch


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=5), st.integers(1, 16))
def test_patch_layout_pads_like_pointcept(counts, patch_size):
    layout = PatchLayout.build(counts, patch_size, torch.device("cpu"))
    starts = [sum(counts[:i]) for i in range(len(counts))]
    # Every curve position has one slot that holds it.
    assert torch.equal(layout.gather[layout.scatter], torch.arange(sum(counts)))
    # Full patches first: a sample of n >= K points fills ceil(n/K) patches, its pad slots repeat
    # the points one patch earlier; smaller samples follow as one short patch each.
    full = [(start, n) for start, n in zip(starts, counts) if n >= patch_size]
    expected = [start + (j if j < n else j - patch_size)
                for start, n in full for j in range(math.ceil(n / patch_size) * patch_size)]
    expected += [start + j for start, n in zip(starts, counts) if n < patch_size for j in range(n)]
    assert layout.gather.tolist() == expected
    assert layout.full_patches == sum(math.ceil(n / patch_size) for _, n in full)
    assert layout.short_lengths == tuple(n for n in counts if n < patch_size)
    lengths = layout.cu_seqlens.diff().tolist()
    assert lengths == [patch_size] * layout.full_patches + list(layout.short_lengths)
    # A patch never mixes samples, and never holds a point twice.
    sample = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    for patch in layout.gather.split(lengths):
        assert len(set(sample[patch].tolist())) == 1 and len(set(patch.tolist())) == len(patch)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=5), st.integers(1, 16),
       st.one_of(st.none(), st.integers(1, 80)))
def test_patch_runs_cover_the_padded_sequence_in_whole_patches(counts, patch_size, max_rows):
    layout = PatchLayout.build(counts, patch_size, torch.device("cpu"))
    runs = layout.runs(max_rows)
    bounds = set(layout.cu_seqlens.tolist())  # patch boundaries
    assert runs[0][0] == 0 and runs[-1][1] == len(layout.gather)
    assert all(stop == next_start for (_, stop, _), (next_start, _, _) in zip(runs, runs[1:]))
    for start, stop, length in runs:
        assert start in bounds and stop in bounds and (stop - start) % length == 0
        if length == patch_size:  # full patches: one run, or runs of at most max_rows slots
            assert max_rows is None and stop - start == layout.full_patches * patch_size or \
                max_rows is not None and stop - start <= max(max_rows, patch_size)
        else:  # a short patch: a run of its own
            assert stop - start == length < patch_size


def naive_attention(attn: SerializedAttention, feat: torch.Tensor, order: torch.Tensor, patches: list) -> torch.Tensor:
    """softmax(q k^T * scale) v per head, each point attending to the points of its patch only.

    A pad copy's output is dropped: each point keeps the output of the first patch that holds it.
    """
    heads, d = attn.num_heads, attn.channels // attn.num_heads
    q, k, v = attn.qkv(feat).view(len(feat), 3, heads, d).unbind(1)
    out = torch.empty(len(feat), attn.channels, dtype=feat.dtype)
    for patch in reversed(patches):
        rows = order[patch]
        weights = torch.softmax(torch.einsum("qhd,khd->hqk", q[rows], k[rows]) * attn.scale, dim=-1)
        out[rows] = torch.einsum("hqk,khd->qhd", weights, v[rows]).reshape(len(rows), -1)
    return attn.proj(out)


def point_batch(grid: torch.Tensor, counts: list[int], channels: int, dtype=torch.double) -> PointBatch:
    offset = torch.tensor(counts, device=grid.device).cumsum(0)
    feat = torch.randn(len(grid), channels, dtype=dtype, device=grid.device)
    batch = {"coord": grid.to(dtype), "grid_coord": grid, "feat": feat, "offset": offset}
    return PointBatch.from_batch(batch, channels, ("z", "hilbert"), shuffle=False)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(1, 40), min_size=1, max_size=3), st.integers(2, 12),
       st.integers(0, 1))
def test_attention_equals_softmax_attention_within_each_patch(seed, counts, patch_size, order_index):
    torch.manual_seed(seed)
    grid = torch.cat([torch.randperm(512)[:n, None] // torch.tensor([64, 8, 1]) % 8 for n in counts])
    point = point_batch(grid, counts, channels=8)
    attn = SerializedAttention(8, num_heads=2, patch_size=patch_size, order_index=order_index).double()
    layout = attn.layout(point)
    patches = layout.gather.split(layout.cu_seqlens.diff().tolist())
    expected = naive_attention(attn, point.feat, point.curve(order_index)[0], patches)
    assert torch.allclose(attn(point.feat, point), expected, atol=1e-10)


def test_attention_without_autograd_runs_patches_in_chunks_with_the_same_output(monkeypatch):
    torch.manual_seed(0)
    counts = [37, 5, 21]
    grid = torch.cat([torch.randperm(512)[:n, None] // torch.tensor([64, 8, 1]) % 8 for n in counts])
    point = point_batch(grid, counts, channels=8)
    attn = SerializedAttention(8, num_heads=2, patch_size=4).double()
    with torch.no_grad():
        whole = attn(point.feat, point)
        monkeypatch.setattr(SerializedAttention, "inference_chunk", 8)  # two patches a run
        assert len(attn.layout(point).runs(8)) > len(attn.layout(point).runs()) + 1
        chunked = attn(point.feat, point)
    assert torch.equal(chunked, whole)


def test_layout_is_cached_per_level_and_patch_size():
    point = point_batch(torch.arange(30)[:, None].expand(30, 3), [30], channels=4)
    attn = SerializedAttention(4, 1, patch_size=8)
    assert attn.layout(point) is attn.layout(point.with_feat(point.feat * 2))
    assert attn.layout(point) is not SerializedAttention(4, 1, patch_size=16).layout(point)


@pytest.mark.skipif(not torch.cuda.is_available() or attention.flash_attn is None, reason="needs CUDA and flash-attn")
def test_flash_attention_path_equals_the_sdpa_path():
    counts = [700, 90, 300]
    grid = torch.cat([torch.randperm(64**3)[:n, None] // torch.tensor([4096, 64, 1]) % 64 for n in counts]).cuda()
    point = point_batch(grid, counts, channels=64, dtype=torch.float)
    attn = SerializedAttention(64, num_heads=4, patch_size=128).cuda().eval()
    flash = attn(point.feat, point)
    attn.enable_flash = False
    assert torch.allclose(flash, attn(point.feat, point), atol=5e-3)
