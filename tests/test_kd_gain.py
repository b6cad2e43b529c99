"""The paired-seed KD-gain benchmark: its statistics by hand, the Table 7 paired rows, the teacher-free control
term, and a tiny run end to end."""

import csv
import json
import math
import os
import statistics
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY
from hydra.utils import instantiate
from scipy import stats
from torch.optim.lr_scheduler import OneCycleLR

from ptdistill.bench.adam_transient import OneCycleWithAdamTransient, adam_step_ratio
from ptdistill.bench.label_teacher import LabelDistillation
from ptdistill.config import compose_train
from ptdistill.losses.kd import KLDivergenceLoss
from ptdistill.losses.seg import SegmentationLoss
from ptdistill.losses.term import DistillStep
from ptdistill.tasks.report import paired_difference, write_report


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences():
    kd, baseline = [50.0, 53.0, 49.5, 52.0, 51.0], [48.0, 50.5, 49.0, 49.0, 48.5]
    diffs = [2.0, 2.5, 0.5, 3.0, 2.5]
    mean, sd = sum(diffs) / 5, math.sqrt(sum((d - 2.1) ** 2 for d in diffs) / 4)  # by hand: 2.1, 0.9618
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t_{0.975, 4}
    d = paired_difference(kd, baseline)
    assert d["n"] == 5 and d["diffs"] == diffs
    assert d["mean"] == pytest.approx(mean) and d["low"] == pytest.approx(mean - half) and d["high"] == pytest.approx(mean + half)
    assert stats.t.ppf(0.975, 4) == pytest.approx(2.7764451051977987)
    single = paired_difference([1.0], [0.5])
    assert single["mean"] == 0.5 and math.isnan(single["low"])
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0, 2.0], [1.0])


def test_report_gives_each_row_its_paired_difference_from_kld(tmp_path):
    values = {("kld", 0): 0.50, ("kld", 1): 0.54, ("kld", 2): 0.52, ("topo", 0): 0.55, ("topo", 1): 0.56,
              ("topo", 2): 0.53, ("student", 0): 0.45, ("student", 1): 0.47, ("student", 2): 0.44}
    for i, ((loss, seed), miou) in enumerate(values.items()):
        run = tmp_path / str(i)
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"dataset": "synthetic", "loss": loss, "seed": seed, "val/mIoU": miou}))
    text = write_report(tmp_path)
    rows = {row[0]: row[1] for row in csv.reader((tmp_path / "table7_paired.csv").open())}
    d = paired_difference([100 * values[("topo", s)] for s in range(3)], [100 * values[("kld", s)] for s in range(3)])
    assert rows["topo"] == f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] (n=3)"
    assert rows["student"].startswith(f"{statistics.fmean([-5.0, -7.0, -8.0]):+.2f}")
    assert "L_seg (no KD)" in text and "Paired difference from L_seg + L_KLD" in text


@pytest.mark.slow
def test_kd_gain_table_pairs_every_kd_row_with_the_no_kd_arm_and_with_kld():
    from ptdistill.bench.kd_gain import summary

    test = {("student", 0): 70.0, ("student", 1): 72.5, ("student", 2): 71.0, ("kld", 0): 71.5, ("kld", 1): 73.0,
            ("kld", 2): 72.75, ("topo+grad", 0): 70.5, ("topo+grad", 2): 71.25}  # topo+grad misses seed 1
    results = [{"seed": seed, "arm": arm, "test_mIoU": v, "agreement": 0.9, "kl_teacher_student": 0.1}
               for (arm, seed), v in test.items()]
    row = next(line for line in summary(results, ["kld", "topo+grad"]).splitlines() if line.startswith("| topo+grad |"))
    vs_student = paired_difference([70.5, 71.25], [70.0, 71.0])
    vs_kld = paired_difference([70.5, 71.25], [71.5, 72.75])
    assert row.startswith(f"| topo+grad | {(70.5 + 71.25) / 2:.2f} | {vs_student['mean']:+.2f} "
                          f"| [{vs_student['low']:+.2f}, {vs_student['high']:+.2f}] | 2 | {vs_kld['mean']:+.2f} "
                          f"| [{vs_kld['low']:+.2f}, {vs_kld['high']:+.2f}] | 2 |")


def test_kd_gain_report_gives_the_val_split_after_the_test_split():
    from ptdistill.bench.kd_gain import report

    val = {0: (66.0, 65.5), 1: (69.0, 68.25), 2: (70.5, 70.0)}  # seed: (student, kld)
    results = [{"seed": seed, "arm": arm, "test_mIoU": 70.0 + seed, "val_mIoU": v, "agreement": 0.9,
                "kl_teacher_student": 0.1} for seed, pair in val.items() for arm, v in zip(("student", "kld"), pair)]
    test_part, val_part = report(results, ["kld"]).split("On val:")
    assert "| kld | 71.00 | +0.00 |" in test_part  # equal test mIoU in both arms
    d = paired_difference([pair[1] for pair in val.values()], [pair[0] for pair in val.values()])
    mean = statistics.fmean(pair[1] for pair in val.values())
    assert f"| kld | {mean:.2f} | {d['mean']:+.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | 3 |" in val_part
    assert "| 1 | 69.00 | 68.25 | -0.75 |" in val_part


def test_kd_gain_per_class_table_pairs_each_class_iou_with_the_no_kd_arm():
    from ptdistill.bench.kd_gain import class_summary, report

    person = {("student", 0): 30.0, ("student", 1): 34.0, ("student", 2): 32.5, ("kld", 0): 33.0, ("kld", 1): 35.5,
              ("kld", 2): 36.0}
    results = [{"seed": seed, "arm": arm, "test_mIoU": 70.0, "val_mIoU": 66.0, "agreement": 0.9,
                "kl_teacher_student": 0.1, "test_IoU/person": v, "test_IoU/road": 95.0}
               for (arm, seed), v in person.items()]
    lines = class_summary(results, ["kld"]).splitlines()
    assert lines[0] == "| class | student | kld − student |"
    d = paired_difference([33.0, 35.5, 36.0], [30.0, 34.0, 32.5])  # by hand: +3.0, +1.5, +3.5
    assert d["mean"] == pytest.approx(8.0 / 3)
    interval = f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
    assert lines[2] == f"| person | {(30.0 + 34.0 + 32.5) / 3:.2f} | {interval} |"
    assert lines[3].startswith("| road | 95.00 | +0.00 [")
    assert "Per class, test IoU:" in report(results, ["kld"]).split("On val:")[0]
    no_classes = [{k: v for k, v in r.items() if not k.startswith("test_IoU/")} for r in results]
    assert class_summary(no_classes, ["kld"]) == "" and "Per class" not in report(no_classes, ["kld"])
    mixed = no_classes[:1] + results[1:]  # seed 0's no-KD run came from a version without class columns
    person = next(line for line in class_summary(mixed, ["kld"]).splitlines() if line.startswith("| person |"))
    d = paired_difference([35.5, 36.0], [34.0, 32.5])
    assert person == f"| person | {(34.0 + 32.5) / 2:.2f} | {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] |"


def test_kd_gain_csv_reads_back_a_row_with_empty_class_columns(tmp_path):
    from ptdistill.bench.kd_gain import read_results

    path = tmp_path / "kd_gain.csv"
    path.write_text("seed,arm,test_mIoU,test_IoU/person\n0,student,70.5,\n0,kld,71.0,33.25\n")
    assert read_results(path) == [{"seed": 0, "arm": "student", "test_mIoU": 70.5},
                                  {"seed": 0, "arm": "kld", "test_mIoU": 71.0, "test_IoU/person": 33.25}]


def test_kd_gain_runs_paired_arms_end_to_end(tmp_path):
    overrides = [*TINY, "trainer.max_epochs=1", f"paths.data_dir={tmp_path.parent}/data", "trainer.check_val_every_n_epoch=1"]
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "ptdistill.bench.kd_gain", "--seeds", "2", "--rows", "kld",
         "kld loss.terms.kd.weight=0.5", "--out", str(out), *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "PTDISTILL_ROOT": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = list(csv.DictReader((out / "kd_gain.csv").open()))
    weighted = "kld loss.terms.kd.weight=0.5"  # a row with an override of its own
    assert sorted((int(r["seed"]), r["arm"]) for r in rows) == sorted(
        (s, arm) for s in (0, 1) for arm in ("kld", "student", weighted))
    given = (out / "seed1" / "kld_loss.terms.kd.weight_0.5" / ".hydra" / "overrides.yaml").read_text()
    assert "loss.terms.kd.weight=0.5" in given
    classes = compose_train(overrides).dataset.class_names
    assert {key for key in rows[0] if key.startswith("test_IoU/")} == {f"test_IoU/{name}" for name in classes}
    assert "Per class, test IoU:" in result.stdout
    for r in rows:
        assert 0 <= float(r["test_mIoU"]) <= 100 and 0 <= float(r["agreement"]) <= 1 and float(r["kl_teacher_student"]) >= 0
    by = {(int(r["seed"]), r["arm"]): float(r["test_mIoU"]) for r in rows}
    d = paired_difference([by[(s, "kld")] for s in (0, 1)], [by[(s, "student")] for s in (0, 1)])
    mean = (by[(0, "kld")] + by[(1, "kld")]) / 2
    assert f"| kld | {mean:.2f} | {d['mean']:+.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | 2 |" in result.stdout
    assert (out / "kd_gain.png").stat().st_size > 1000 and (out / "kd_gain.md").exists()
    trained = {path: path.stat().st_mtime_ns for path in out.glob("seed*/*/metrics.json")}
    again = subprocess.run(  # the same benchmark into the same --out trains nothing again
        [sys.executable, "-m", "ptdistill.bench.kd_gain", "--seeds", "2", "--rows", "kld", weighted, "--out", str(out),
         *overrides], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PTDISTILL_ROOT": str(tmp_path)},
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert again.stdout.count("Reusing the finished run") == 6
    assert {path: path.stat().st_mtime_ns for path in out.glob("seed*/*/metrics.json")} == trained
    reread = {(int(r["seed"]), r["arm"]): float(r["test_mIoU"]) for r in csv.DictReader((out / "kd_gain.csv").open())}
    assert reread == by


def test_a_run_is_reused_only_when_it_finished_with_the_same_overrides(tmp_path):
    from ptdistill.bench.kd_gain import finished_run

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- loss=kld\n- seed=1\n")
    assert not finished_run(run, ["loss=kld", "seed=1"])  # no metrics.json: it did not finish
    (run / "metrics.json").write_text("{}")
    assert finished_run(run, ["loss=kld", "seed=1"])
    assert not finished_run(run, ["loss=kld", "seed=2"]) and not finished_run(run, ["loss=kld"])
    assert not finished_run(tmp_path / "elsewhere", ["loss=kld", "seed=1"])


def test_kd_gain_teacher_per_seed_distils_each_seed_from_its_own_teacher(tmp_path):
    from ptdistill.bench.kd_gain import teacher_agreement

    overrides = [*TINY, "trainer.max_epochs=1", "teacher_epochs=1", f"paths.data_dir={tmp_path.parent}/data"]
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "ptdistill.bench.kd_gain", "--seeds", "2", "--rows", "kld", "--teacher-per-seed",
         "--out", str(out), *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "PTDISTILL_ROOT": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    teachers = {s: json.loads((out / f"seed{s}" / "teacher" / "metrics.json").read_text()) for s in (0, 1)}
    assert [teachers[s]["seed"] for s in (0, 1)] == [0, 1] and teachers[0]["checkpoint"] != teachers[1]["checkpoint"]
    assert not (tmp_path / "outputs" / "teachers").exists()  # the project's registry is left alone
    for s in (0, 1):  # the KD arm of each seed was given that seed's teacher
        given = (out / f"seed{s}" / "kld" / ".hydra" / "overrides.yaml").read_text()
        assert f"stage.teacher_checkpoint={teachers[s]['checkpoint']}" in given
    kld = {int(r["seed"]): r for r in csv.DictReader((out / "kd_gain.csv").open()) if r["arm"] == "kld"}
    student = json.loads((out / "seed1" / "kld" / "metrics.json").read_text())["checkpoint"]
    cfg = compose_train([*overrides, f"paths.root_dir={tmp_path}"])
    scores = teacher_agreement(student, teachers[1]["checkpoint"], cfg)  # the row is scored against its teacher
    assert float(kld[1]["agreement"]) == pytest.approx(scores["agreement"])


def test_demo_table_puts_the_kd_gain_beside_the_models():
    from ptdistill.tasks.train import comparison_table

    rows = {"teacher": {"val/mIoU": 0.8},
            "student (no KD)": {"val/mIoU": 0.60, "test/mIoU": 0.55},
            "student (KD, loss=kld)": {"val/mIoU": 0.6525, "test/mIoU": 0.5812}}
    lines = comparison_table(rows).splitlines()
    assert lines[0] == "| model | val mIoU | test mIoU |"
    assert lines[2] == "| teacher | 80.00 | n/a |"
    assert lines[-1] == f"| KD − no KD | {100 * (0.6525 - 0.60):+.2f} | {100 * (0.5812 - 0.55):+.2f} |"


def test_a_kd_row_may_carry_overrides_of_its_own(tmp_path):
    from ptdistill.bench.kd_gain import BASELINE, arm_dir, arm_overrides, short_label

    teacher = tmp_path / "teacher.ckpt"
    assert arm_overrides(BASELINE, teacher) == ["stage=student"]
    assert arm_overrides("topo+grad", teacher) == ["loss=topo+grad", f"stage.teacher_checkpoint={teacher}"]
    row = "kld loss.terms.kd.stop_epoch=6 recipe.kd.temperature=2"
    assert arm_overrides(row, teacher) == ["loss=kld", f"stage.teacher_checkpoint={teacher}",
                                           "loss.terms.kd.stop_epoch=6", "recipe.kd.temperature=2"]
    assert short_label(row) == "kld\nstop_epoch=6\ntemperature=2"
    assert short_label("topo+grad loss.terms.kd.start_epoch=6 loss.terms.grad.start_epoch=6") == "topo+grad\nstart_epoch=6"
    assert arm_dir("topo+grad") == "topo_grad"
    assert arm_dir(row) == "kld_loss.terms.kd.stop_epoch_6_recipe.kd.temperature_2"


@pytest.mark.parametrize("class_balance", [0.0, 0.5, 1.0])
def test_the_label_teacher_control_is_the_cross_entropy_weighed_as_kd_weighs_points(class_balance):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 6, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(-1, 6, (50,), generator=g)
    term = LabelDistillation(1.0, KLDivergenceLoss(1.0, class_balance=class_balance))
    step = DistillStep({"segment": target}, {"logits": logits}, None, logits.sum() * 0, None)
    control = term(step)
    cross_entropy = SegmentationLoss(ignore_index=-1, class_balance=class_balance)(logits, target)
    assert torch.isclose(control, cross_entropy, rtol=0, atol=1e-10)
    control_grad, = torch.autograd.grad(control, logits)
    ce_grad, = torch.autograd.grad(cross_entropy, logits)
    assert torch.allclose(control_grad, ce_grad, atol=1e-10)


def test_loss_labels_is_the_kld_row_with_the_labels_in_the_teacher_s_place(tiny_config):
    kld, labels = (tiny_config("experiment=kd_gain", f"loss={loss}", "loss.terms.kd.loss.class_balance=1")
                   for loss in ("kld", "labels"))
    assert labels.loss.terms.kd._target_ == "ptdistill.bench.label_teacher.LabelDistillation"
    kld.loss.terms.kd._target_, kld.loss.name = labels.loss.terms.kd._target_, labels.loss.name
    assert labels.loss == kld.loss  # the same λ_kd, T, epochs and weighting, whatever the overrides
    module = instantiate(labels.stage.module)
    assert type(module.terms["kd"]) is LabelDistillation and module.terms["kd"].loss.class_balance == 1.0


@pytest.mark.parametrize("steps_before", [5, 240])
def test_the_adam_transient_ratio_is_adamw_s_step_after_the_loss_doubles(steps_before):
    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.AdamW([param], lr=1.0, betas=(0.9, 0.999), eps=0.0, weight_decay=0.0)
    for step in range(steps_before + 300):
        before = param.detach().clone()
        param.grad = torch.full_like(param, 1.0 if step < steps_before else 2.0)
        optimizer.step()
        taken = (before - param.detach()).item()  # the unscaled step is 1 at lr 1
        after = step - steps_before + 1
        expected = adam_step_ratio(steps_before, after, 2.0, (0.9, 0.999)) if after > 0 else 1.0
        assert taken == pytest.approx(expected, rel=1e-9)


def test_the_adam_transient_schedule_is_one_cycle_times_the_ratio_from_the_jump():
    def optimizer():
        return torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.1)

    kwargs = {"max_lr": 0.1, "total_steps": 40, "pct_start": 0.1}
    transient = OneCycleWithAdamTransient(optimizer(), jump_at=0.5, **kwargs)
    one_cycle = OneCycleLR(optimizer(), **kwargs)
    for step in range(40):
        ratio = 1.0 if step < 20 else adam_step_ratio(20, step - 19, 2.0, (0.9, 0.999))
        assert transient.get_last_lr()[0] == pytest.approx(one_cycle.get_last_lr()[0] * ratio, rel=1e-12)
        assert (ratio > 1.0) == (step >= 20)
        for schedule in (transient, one_cycle):
            schedule.optimizer.step()
            schedule.step()
