"""The config contract that outside tools rely on (docs/architecture.md): groups, instantiable models, sizes."""

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

TABLE7_TERMS = {"kld": {"kd"}, "topo": {"kd", "topo"}, "grad": {"kd", "grad"}, "topo+grad": {"kd", "topo", "grad"}}
PAPER_COUNTS = {"teacher": 46_159_312, "student": 2_777_344}  # Pointcept's PT-v3m1, paper: 46.16M / 2.78M


def test_nuscenes_models_have_the_papers_parameter_counts():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=nuscenes", "model=ptv3", "paths.root_dir=."])
    assert (cfg.dataset.in_channels, cfg.dataset.num_classes) == (4, 16)
    for role, expected in PAPER_COUNTS.items():
        model = instantiate(cfg.model[role])
        assert sum(p.numel() for p in model.parameters()) == expected, role


def test_train_config_composes_every_group(tiny_config):
    cfg = tiny_config()
    for group in ("dataset", "model", "loss", "stage", "trainer", "logger", "callbacks"):
        assert group in cfg, group
    assert cfg.stage.name == "distill" and cfg.dataset.name == "synthetic"


@pytest.mark.parametrize("experiment", ["demo", "kd_gain", "table7_cpu", "table7", "table7_authors"])
def test_every_table7_row_builds_under_every_experiment(tiny_config, experiment):
    """An experiment's settings must not leave a half-defined term when `loss=` leaves its term out."""
    for loss, terms in TABLE7_TERMS.items():
        cfg = tiny_config(f"experiment={experiment}", f"loss={loss}")
        module = instantiate(cfg.stage.module)
        assert set(module.terms) == terms, (experiment, loss)
        if "topo" in terms:
            assert module.terms["topo"].loss.num_samples == cfg.topo_samples


def test_distill_start_epoch_starts_every_term_and_a_terms_own_key_wins(tiny_config):
    module = instantiate(tiny_config("loss=topo+grad", "distill_start_epoch=6").stage.module)
    assert {name: term.start_epoch for name, term in module.terms.items()} == {"kd": 6, "topo": 6, "grad": 6}
    assert not any(term.active(5) for term in module.terms.values()) and all(t.active(6) for t in module.terms.values())
    cfg = tiny_config("loss=topo+grad", "distill_start_epoch=6", "loss.terms.kd.start_epoch=2")
    module = instantiate(cfg.stage.module)
    assert {name: term.start_epoch for name, term in module.terms.items()} == {"kd": 2, "topo": 6, "grad": 6}
    module = instantiate(tiny_config("loss=grad").stage.module)  # the default: every epoch, as Eq. 8
    assert {name: term.start_epoch for name, term in module.terms.items()} == {"kd": 0, "grad": 0}


def test_configs_compose_from_several_threads_at_once():
    """The KD-gain driver composes configs from its worker threads; Hydra's global state allows one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from ptdistill.config import compose_train

    with ThreadPoolExecutor(4) as pool:
        configs = list(pool.map(lambda seed: compose_train([f"seed={seed}"]), range(8)))
    assert [cfg.seed for cfg in configs] == list(range(8))
