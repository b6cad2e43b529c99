"""Stage 2 (Eq. 8): the frozen teacher, the loss terms' gradient flow, the guards and the config options."""

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from ptdistill.checkpoint_io import load_checkpoint
from ptdistill.models.ptv3 import sparse_conv
from ptdistill.modules.distill import DistillModule
from ptdistill.tasks.train import fit


@pytest.fixture(scope="module")
def distill_setup(tmp_path_factory):
    from conftest import compose_config

    cfg = compose_config(tmp_path_factory.mktemp("distill"), "loss=topo+grad", "loss.terms.topo.loss.num_samples=48")
    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    return cfg, batch


def _module(cfg) -> DistillModule:
    torch.manual_seed(0)
    return instantiate(cfg.stage.module)


def test_topo_grad_option_enables_exactly_both_terms_with_their_lambdas(tiny_config):
    for name, terms in {"kld": {"kd"}, "topo": {"kd", "topo"}, "grad": {"kd", "grad"}, "topo+grad": {"kd", "topo", "grad"}}.items():
        cfg = tiny_config(f"loss={name}", "loss.terms.kd.weight=0.7")
        assert set(cfg.loss.terms) == terms and cfg.loss.name == name
        module = instantiate(cfg.stage.module)
        assert set(module.terms) == terms
        assert module.terms["kd"].weight == 0.7
        assert all(module.terms[t].weight == cfg.loss.terms[t].weight for t in terms)


def test_teacher_is_frozen_and_unchanged_by_training_steps(distill_setup):
    cfg, batch = distill_setup
    module = _module(cfg)
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    module.train()
    assert not module.teacher.training and module.model.training
    assert all(not p.requires_grad for p in module.teacher.parameters())
    for _ in range(2):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for key, value in module.teacher.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(a, b) for a, b in zip(module.model.state_dict().values(), _module(cfg).model.state_dict().values()))


@pytest.mark.parametrize("term", ["kd", "topo", "grad"])
def test_each_term_sends_gradient_only_to_the_student(distill_setup, term):
    cfg, batch = distill_setup
    module = _module(cfg).train()
    module.teacher.requires_grad_(True)  # so that a leak into the teacher would show up as a gradient
    step = module.distill_step(batch)
    value = module.terms[term](step)
    assert torch.isfinite(value) and value.item() > 0
    module.zero_grad()
    value.backward()
    assert all(p.grad is None or not p.grad.any() for p in module.teacher.parameters())
    assert sum(p.grad.abs().sum().item() for p in module.model.parameters() if p.grad is not None) > 0


def test_non_finite_term_is_skipped_counted_and_never_applied(distill_setup, monkeypatch):
    cfg, batch = distill_setup
    module = _module(cfg).train()
    monkeypatch.setattr(module.terms["topo"], "forward", lambda step: torch.tensor(math.nan))
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    assert module.skipped["topo"] == 1 and module.skipped["grad"] == 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in module.model.parameters() if p.grad is not None)


def test_checkpoint_holds_the_student_only(distill_setup):
    cfg, _ = distill_setup
    module = _module(cfg)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])  # strict: the teacher keys are put back


@pytest.mark.slow
def test_resumed_distillation_reaches_the_uninterrupted_state(tiny_config):
    """Interrupted after epoch 1 and resumed from last.ckpt, topo+grad distillation ends bit-identical
    (student weights, optimizer and skip counters), since the teacher, TPS and sampler are all replayed."""
    overrides = ("loss=topo+grad", "loss.terms.topo.loss.num_samples=48", "trainer.deterministic=true")
    uninterrupted = tiny_config(*overrides)
    fit(uninterrupted)
    first = tiny_config(*overrides)
    with open_dict(first):
        first.callbacks.interrupt = {"_target_": "test_train_stage1.Interrupt"}
    fit(first)
    resumed = tiny_config(*overrides, f"ckpt_path={first.paths.output_dir}/checkpoints/last.ckpt")
    fit(resumed)
    expected, final = (load_checkpoint(f"{c.paths.output_dir}/checkpoints/last.ckpt") for c in (uninterrupted, resumed))
    assert final["global_step"] == expected["global_step"] and final["skipped_terms"] == expected["skipped_terms"]
    assert not any(key.startswith("teacher.") for key in final["state_dict"])
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=0, atol=0, msg=key)
    torch.testing.assert_close(final["optimizer_states"], expected["optimizer_states"], rtol=0, atol=0)


def test_an_empty_tap_list_is_a_one_line_config_error(tiny_config):
    from ptdistill.errors import UserError, find_user_error

    cfg = tiny_config("loss=topo", "loss.terms.topo.taps=[]")
    with pytest.raises(Exception) as caught:
        instantiate(cfg.stage.module)
    error = find_user_error(caught.value)
    assert isinstance(error, UserError) and str(error).startswith("loss.terms.topo: taps is empty")


def test_non_finite_seg_loss_skips_the_step_before_any_term_runs(distill_setup, monkeypatch):
    cfg, batch = distill_setup
    module = _module(cfg).train()
    monkeypatch.setattr(module.criterion, "forward", lambda logits, target: logits.sum() * math.nan)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    for term in module.terms.values():
        monkeypatch.setattr(term, "forward", lambda step: pytest.fail("a term ran after a non-finite L_seg"))
    assert module.training_step(batch, 0) is None
    assert module.skipped["seg"] == 1


def test_gradient_norms_of_every_term_are_logged_beside_seg(distill_setup, monkeypatch):
    cfg, batch = distill_setup
    module = _module(cfg).train()
    module.grad_norm_every_n_steps = 1
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kwargs: logged.__setitem__(name, float(value)))
    torch.manual_seed(5)  # the same drop-path and serialization shuffles in both forwards
    module.training_step(batch, 0)
    norms = {name.split("/")[-1]: v for name, v in logged.items() if name.startswith("train/grad_norm/")}
    assert set(norms) == {"seg", "kd", "topo", "grad"}
    assert all(math.isfinite(v) and v > 0 for v in norms.values())
    # The seg norm by hand: the gradient of L_seg alone at the student's parameters.
    module.zero_grad()
    torch.manual_seed(5)
    module.distill_step(batch).seg_loss.backward()
    expected = torch.stack([p.grad.norm() for p in module.model.parameters() if p.grad is not None]).norm()
    assert norms["seg"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("share", [True, False])
def test_teacher_and_student_taps_are_the_same_cells_row_for_row(distill_setup, share):
    """Same grid and strides: every tapped level pools the input points into the same cells in both models,
    and numbers them alike, whether they share the structure or build it apart (the shuffled student too)."""
    cfg, batch = distill_setup
    module = _module(cfg).train()
    module.share_structure = share
    step = module.distill_step(batch)
    for name in ("enc4",):
        s, t = step.student["taps"][name].index, step.teacher["taps"][name].index  # (N,) cell of each point
        assert torch.equal(s, t)


def test_a_shared_structure_gives_the_outputs_of_separate_builds(distill_setup, monkeypatch):
    """The teacher reusing the student's levels (serialization, pooling cells, kernel maps, patch layouts)
    gives the same logits and taps, to the bit, as both models building their own, with half the builds."""
    cfg, batch = distill_setup
    module = _module(cfg).train()
    assert module.share_structure  # the tiny teacher and student have the same curve orders
    builds = []
    build = sparse_conv.build_kernel_map
    monkeypatch.setattr(sparse_conv, "build_kernel_map", lambda *args: builds.append(args[2]) or build(*args))
    outputs, kernel_maps = {}, {}
    for share in (True, False):
        module.share_structure = share
        builds.clear()
        torch.manual_seed(11)  # the same drop-path draws and order shuffles in both steps
        outputs[share] = module.distill_step(batch)
        kernel_maps[share] = len(builds)
    assert 0 < kernel_maps[True] and 2 * kernel_maps[True] == kernel_maps[False]
    for model in ("student", "teacher"):
        shared, separate = getattr(outputs[True], model), getattr(outputs[False], model)
        assert torch.equal(shared["logits"], separate["logits"])
        for name, tap in shared["taps"].items():
            assert torch.equal(tap.feat, separate["taps"][name].feat) and torch.equal(tap.index, separate["taps"][name].index)


def test_topo_starts_its_persistence_inside_the_teachers_forward_and_equals_the_synchronous_loss(
    distill_setup, tiny_config, monkeypatch
):
    """loss=topo (the teacher then runs without grad), overlap on: L_topo starts once per step, at the
    teacher's enc4 tap, before its decoder and head have run, and joins to the loss and student gradients
    of a synchronous L_topo."""
    _, batch = distill_setup
    module = _module(tiny_config("loss=topo", "loss.terms.topo.loss.num_samples=48", "loss.terms.topo.overlap=true"))
    module.train()
    term = module.terms["topo"]
    params = [p for p in module.model.parameters() if p.requires_grad]
    head_ran, started = [], []
    module.teacher.seg_head.register_forward_hook(lambda *args: head_ran.append(True))
    start = term.start
    monkeypatch.setattr(term, "start", lambda *args: started.append(bool(head_ran)) or start(*args))
    results = {}
    for overlapped in (True, False):
        if not overlapped:
            monkeypatch.setattr(term, "start", lambda *args: None)  # forward then computes it in place
        torch.manual_seed(3)  # the same order shuffles and drop-path draws
        value = term(module.distill_step(batch))
        results[overlapped] = (value, torch.autograd.grad(value, params, allow_unused=True))
    assert started == [False]
    (value, grads), (expected, expected_grads) = results[True], results[False]
    assert value > 0 and torch.equal(value, expected)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    for g, e in zip(grads, expected_grads):
        assert (g is None and e is None) or torch.equal(g, e)


def test_topo_overlaps_by_default_only_on_a_gpu(distill_setup, tiny_config):
    _, batch = distill_setup
    module = _module(tiny_config("loss=topo", "loss.terms.topo.loss.num_samples=48")).train()
    term = module.terms["topo"]
    assert term.overlap == "auto"
    module.distill_step(batch)
    assert term._started is None  # on the CPU: computed in forward
    term.overlap = True
    step = module.distill_step(batch)
    assert term._started is not None and term._started[0] is step.batch
    with pytest.raises(ValueError, match="overlap"):
        type(term)(1.0, ["enc4"], term.loss, overlap="sometimes")


def test_a_term_is_on_only_in_its_epochs_and_off_costs_no_teacher_forward(distill_setup, tiny_config, monkeypatch):
    """kd on in epoch 1 only: epochs 0 and 2 give L_seg alone without running the teacher; epoch 1 gives
    L_seg + λ·T²·KL(p_T ‖ p_S), computed here from both models' logits."""
    _, batch = distill_setup
    cfg = tiny_config("loss=kld", "loss.terms.kd.start_epoch=1", "loss.terms.kd.stop_epoch=2",
                      "loss.terms.kd.weight=0.7", "recipe.kd.temperature=2.0")
    module = _module(cfg).eval()  # eval: the student's forward is the same on every call
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    teacher_calls = []
    module.teacher.register_forward_hook(lambda *args: teacher_calls.append(1))
    with torch.no_grad():
        student, teacher = module.model(batch)["logits"], module.teacher(batch)["logits"]  # (N, K) each
    teacher_calls.clear()
    seg = module.criterion(student, batch["segment"])
    keep = batch["segment"] != cfg.dataset.ignore_index
    p_teacher = torch.softmax(teacher[keep] / 2.0, 1)  # (N', K)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student[keep] / 2.0, 1))).sum(1).mean()
    for epoch, expected, teacher_runs in [(0, seg, 0), (1, seg + 0.7 * 4.0 * kl, 1), (2, seg, 0)]:
        monkeypatch.setattr(DistillModule, "current_epoch", property(lambda self: epoch))
        assert list(module.active_terms()) == (["kd"] if epoch == 1 else [])
        torch.testing.assert_close(module.training_step(batch, 0).detach(), expected, rtol=1e-5, atol=1e-6)
        assert len(teacher_calls) == teacher_runs
        teacher_calls.clear()


@pytest.mark.parametrize("window", [("-1", "null"), ("3", "3"), ("4", "2")])
def test_a_term_on_in_no_epoch_is_a_one_line_config_error(tiny_config, window):
    from ptdistill.errors import UserError, find_user_error

    start, stop = window
    cfg = tiny_config("loss=kld", f"loss.terms.kd.start_epoch={start}", f"loss.terms.kd.stop_epoch={stop}")
    with pytest.raises(Exception) as caught:
        instantiate(cfg.stage.module)
    error = find_user_error(caught.value)
    assert isinstance(error, UserError) and str(error).startswith(f"loss.terms.kd: start_epoch={start}, stop_epoch=")


def test_a_run_whose_epochs_no_term_is_on_in_is_refused_before_its_first_step(distill_setup, tiny_config):
    import lightning as L

    from ptdistill.errors import UserError

    _, batch = distill_setup
    module = _module(tiny_config("loss=kld", "distill_start_epoch=2"))
    steps = []  # the steps run; None from training_step skips the optimizer, which is not under test here
    module.training_step = lambda batch, batch_idx: steps.append(batch_idx)

    def fit_epochs(epochs: int) -> None:
        trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0)
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))

    with pytest.raises(UserError, match=r"in any of this run's 2 epochs \(0-based start epochs: kd 2\)"):
        fit_epochs(2)
    assert steps == []
    fit_epochs(3)  # kd is on in epoch 2
    assert steps == [0, 0, 0]


def test_the_step_benchmark_times_every_term_of_its_row_although_the_demo_distils_late():
    from ptdistill.bench.distill_step import row_config

    module = instantiate(row_config("topo+grad", []).stage.module)
    assert module.current_epoch == 0
    assert set(module.active_terms()) == {"kd", "topo", "grad"}


def test_the_step_benchmark_splits_the_terms_into_their_own_work_and_restores_what_it_times(distill_setup):
    from ptdistill.bench.distill_step import training_step
    from ptdistill.losses import saliency, topo
    from ptdistill.topology.persistence import PendingDiagrams

    cfg, batch = distill_setup
    originals = (saliency.channel_weights, topo.tps, PendingDiagrams.result)
    parts = training_step(cfg)(batch)
    # One backward per model for Eq. 4, told apart, and both inside L_grad; the wait for the diagrams inside L_topo.
    assert 0 < parts["∂L_seg/∂F_S"] and 0 < parts["∂L_seg/∂F_T"]
    assert parts["∂L_seg/∂F_S"] + parts["∂L_seg/∂F_T"] <= parts["L_grad"]
    assert 0 < parts["TPS"] + parts["persistence wait"] <= parts["L_topo"]
    assert (saliency.channel_weights, topo.tps, PendingDiagrams.result) == originals


def test_l_grad_over_two_taps_is_the_sum_of_its_one_tap_terms_with_one_backward_per_model(
    distill_setup, tiny_config, monkeypatch
):
    from ptdistill.losses.saliency import SaliencyDistillation

    _, batch = distill_setup
    # Not in forward order: the teacher's leaf (its first tap, enc3) comes second.
    module = _module(tiny_config("loss=grad", "loss.terms.grad.taps=[enc4,enc3]"))
    step = module.distill_step(batch)
    grad = module.terms["grad"]
    inputs_per_backward = []
    autograd_grad = torch.autograd.grad

    def counted_grad(outputs, inputs, **kwargs):
        inputs_per_backward.append(len(inputs))
        return autograd_grad(outputs, inputs, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted_grad)
    both = grad(step)
    assert inputs_per_backward == [2, 2]  # Eq. 4: one backward for the student and one for the teacher
    monkeypatch.undo()
    one_tap = [SaliencyDistillation(grad.weight, [name], grad.loss, grad.resolution)(step) for name in grad.taps]
    torch.testing.assert_close(both, sum(one_tap))
