"""The pip route (pyproject.toml) and the conda route (environment.yml) install the same things."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_pins_what_pyproject_requires():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    conda_requirements = {_name(r): r.split("#")[0].strip() for r in pip if not r.startswith("-")}
    required = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in required:
        assert _name(requirement) in conda_requirements, f"{requirement} missing from environment.yml"
        assert conda_requirements[_name(requirement)] == requirement, f"{requirement} differs in environment.yml"
    assert "python=3.11" in environment["dependencies"]
    for cuda_only in ("spconv-cu120", "flash-attn"):
        assert cuda_only in conda_requirements and cuda_only not in map(_name, required)


def test_giotto_is_never_a_hard_dependency():
    # giotto-ph is AGPL-3: an optional extra only.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert all("giotto" not in r for r in project["dependencies"])
