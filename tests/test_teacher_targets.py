"""bench.teacher_targets: L_kd's gradient beside the cross-entropy's, by hand and over a tiny split."""

import math
import sys

import pytest
import torch
from conftest import TINY

from ptdistill.bench import teacher_targets
from ptdistill.bench.teacher_targets import summarise, target_sums
from ptdistill.tasks.train import fit


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_the_statistics_are_those_of_the_gradients_cell_by_cell():
    g = torch.Generator().manual_seed(3)
    student, teacher = (torch.randn(40, 5, generator=g, dtype=torch.float64) for _ in range(2))
    target = torch.randint(0, 5, (40,), generator=g)
    stats = summarise(target_sums(student, teacher, target))
    right = p_t_label = p_s_label = dot = kd_sq = ce_sq = extra_sq = extra_wrong = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), target.tolist()):
        p_s, p_t = softmax(s_row), softmax(t_row)
        wrong = max(range(5), key=lambda k: p_t[k]) != y
        right += not wrong
        p_t_label, p_s_label = p_t_label + p_t[y], p_s_label + p_s[y]
        for k in range(5):
            kd, ce, extra = p_s[k] - p_t[k], p_s[k] - (k == y), (k == y) - p_t[k]
            dot, kd_sq, ce_sq, extra_sq = dot + kd * ce, kd_sq + kd * kd, ce_sq + ce * ce, extra_sq + extra * extra
            extra_wrong += wrong * extra * extra
    assert 0 < right < 40  # both kinds of cell occur
    assert stats["teacher = label"] == right / 40
    assert stats["p_T(y)"] == pytest.approx(p_t_label / 40) and stats["p_S(y)"] == pytest.approx(p_s_label / 40)
    assert stats["cos(KD, CE)"] == pytest.approx(dot / math.sqrt(kd_sq * ce_sq))
    assert stats["teacher's share"] == pytest.approx(math.sqrt(extra_sq / kd_sq))
    assert stats["of it, where T ≠ y"] == pytest.approx(extra_wrong / extra_sq)


def test_a_teacher_that_is_the_labels_gives_the_cross_entropy_s_gradient():
    g = torch.Generator().manual_seed(4)
    student, target = torch.randn(30, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (30,), generator=g)
    stats = summarise(target_sums(student, 40.0 * torch.nn.functional.one_hot(target, 4).double(), target))
    assert stats["teacher = label"] == 1.0 and stats["p_T(y)"] == pytest.approx(1.0)
    assert stats["cos(KD, CE)"] == pytest.approx(1.0) and stats["teacher's share"] == pytest.approx(0.0, abs=1e-12)


def test_the_benchmark_reads_both_splits_of_a_tiny_dataset(tiny_config, tmp_path, monkeypatch, capsys, one_thread):
    cfg = tiny_config("stage=student", "trainer.max_epochs=1")
    student = fit(cfg)["checkpoint"]
    checkpoint = torch.load(student, weights_only=False)
    torch.nn.init.normal_(checkpoint["state_dict"]["model.seg_head.weight"], std=3.0)  # another model: the "teacher"
    torch.save(checkpoint, tmp_path / "teacher.ckpt")
    overrides = [*TINY, f"paths.data_dir={cfg.paths.data_dir}"]
    args = ["--teacher", str(tmp_path / "teacher.ckpt"), "--student", student, *overrides]
    monkeypatch.setattr(sys, "argv", ["teacher_targets", *args])
    teacher_targets.main()
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[0] for row in rows] == ["| train", "| val"]
    for row in rows:
        agreement, p_t, p_s, cos, share, where_wrong = (float(v) for v in row[2:7] + [row[7].rstrip(" |")])
        assert 0 <= agreement <= 1 and 0 < p_t < 1 and 0 < p_s < 1 and -1 <= cos <= 1 and share > 0
        assert 0 <= where_wrong <= 1
    monkeypatch.setattr(sys, "argv", ["teacher_targets", *args, "--student", str(tmp_path / "teacher.ckpt")])
    with pytest.raises(SystemExit):
        teacher_targets.main()
    assert "as the teacher and as a student" in capsys.readouterr().err
