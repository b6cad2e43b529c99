"""The project's Hydra configs: composed outside a Hydra app (benchmarks, tests, the KD-gain driver), and
checked against the signatures of what they instantiate."""

import difflib
import functools
import inspect
import threading
import typing
from pathlib import Path

import pydantic
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from ptdistill.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
_HYDRA = threading.Lock()  # Hydra's global state holds one initialised config dir at a time


def compose_train(overrides: list[str]) -> DictConfig:
    """The config `train.py <overrides>` would run, without Hydra's runtime keys."""
    with _HYDRA, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def model_config(name: str, in_channels: int = 4, num_classes: int = 16) -> DictConfig:
    """{dataset: {in_channels, num_classes}, model: conf/model/<name>.yaml}: `cfg.model.teacher` and
    `cfg.model.student` instantiate alone, without a dataset config."""
    with _HYDRA, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        model = OmegaConf.to_container(compose(overrides=[f"+model={name}"]).model)
    return OmegaConf.create({"dataset": {"in_channels": in_channels, "num_classes": num_classes}, "model": model})


def check_targets(cfg: DictConfig) -> None:
    """Every `_target_` node's keys against the signature of what it instantiates, before anything runs.

    An unknown key or a value of the wrong type (`trainer.max_epochs=abc`) becomes one `UserError` line
    naming the key and the expected type, rather than a traceback from deep inside a run. Types are
    checked by pydantic against the callables' annotations (lax: 2 passes for a float); annotations that
    cannot be resolved are not checked.
    """
    _check_node(OmegaConf.to_container(cfg, resolve=True), "")


def _check_node(node, path: str) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_node(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("_target_"), str):
        _check_call(node, path)
    for key, value in node.items():
        _check_node(value, f"{path}.{key}" if path else str(key))


def _check_call(node: dict, path: str) -> None:
    try:
        target = get_object(node["_target_"])
        parameters = inspect.signature(target).parameters
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # an import error surfaces at instantiation with its own message; unresolvable hints
        return
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in node.items():
        if key.startswith("_"):
            continue
        where = f"{path}.{key}" if path else key
        if key not in parameters:
            if not open_ended:
                close = difflib.get_close_matches(key, list(parameters), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UserError(f"{where}: unknown key for {node['_target_']}{hint}")
            continue
        if key in hints and _is_plain(value) and not _fits(hints[key], value):
            raise UserError(f"{where}={value!r}: expected {_type_name(hints[key])}")


def _is_plain(value) -> bool:
    """A scalar or a list of them: a config value, not a node that instantiate() will build."""
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


@functools.cache
def _adapter(annotation) -> pydantic.TypeAdapter | None:
    try:
        return pydantic.TypeAdapter(annotation, config=pydantic.ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # an annotation pydantic cannot express: not checked
        return None


def _fits(annotation, value) -> bool:
    adapter = _adapter(annotation)
    if adapter is None:
        return True
    try:
        adapter.validate_python(value)
    except pydantic.ValidationError:
        return False
    except Exception:  # validators of exotic types that cannot take a config value
        return True
    return True


def _type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
