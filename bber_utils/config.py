"""Profiles: the papermill parameter files in ``configs/`` (smoke, demo, paper).

A profile is a flat YAML mapping of notebook parameters. Every notebook receives all of them and uses the
ones its ``parameters`` cell declares, so ``papermill nb.ipynb out.ipynb -f configs/demo.yaml`` works for
any single notebook too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .paths import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"
PROFILES = ("smoke", "demo", "paper")


def profile_path(profile: str | os.PathLike) -> Path:
    """``"demo"`` -> ``configs/demo.yaml``; an existing path is returned as it is."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = CONFIG_DIR / f"{profile}.yaml"
    if not cand.exists():
        raise FileNotFoundError(f"no profile {profile!r}: expected {cand} (known: {', '.join(PROFILES)})")
    return cand


def load_profile(profile: str | os.PathLike, **overrides: Any) -> dict[str, Any]:
    """The profile's parameters with ``overrides`` applied on top."""
    path = profile_path(profile)
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: a profile must be a mapping of parameter names to values")
    params.update(overrides)
    return params


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=3", "model=biformer"]`` -> ``{"epochs": 3, "model": "biformer"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} is not key=value")
        k, v = pair.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out
