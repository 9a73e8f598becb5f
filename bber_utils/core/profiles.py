"""Profile files: the YAML files in ``configs/`` (smoke, demo, paper), found by name or path, read as one mapping;
``key=value`` overrides typed on a command line.

A profile file is a flat YAML mapping of the notebook parameters it changes; ``train.profiles.load_profile``
merges it over every parameter's default (``train.config.TrainConfig``, ``core.parameters``) and that merged
map is what the notebooks, ``bber train``, ``bber sweep`` and ``bber reproduce`` get.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from bber_utils.core.errors import ConfigError, did_you_mean
from bber_utils.core.paths import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"
PROFILES = ("smoke", "demo", "paper")
# Parameters that hold a path: given on the command line (key=value), a relative one is taken from the current
# folder, as every Unix tool does; in a profile file or a notebook it is taken from the repository root.
PATH_KEYS = ("workdir", "meld_root", "resd_root", "soft_labels")


def known_profiles() -> list[str]:
    return sorted({*PROFILES, *(p.stem for p in CONFIG_DIR.glob("*.yaml"))})


def profile_path(profile: str | os.PathLike) -> Path:
    """A file that exists is a file (relative to the current folder); a bare name is a profile in ``configs/``
    (``"demo"`` -> ``configs/demo.yaml``); anything else is a ``ConfigError`` naming both candidates."""
    p = Path(os.path.expanduser(str(profile)))
    if p.is_file():
        return p.resolve()
    bare = str(profile) and os.sep not in str(profile) and "/" not in str(profile) and not p.suffix
    cand = CONFIG_DIR / f"{profile if bare else p.stem}.yaml"
    if bare and cand.is_file():
        return cand
    names = known_profiles()
    hint = did_you_mean(p.stem if not bare else profile, names)
    what = "exists" if bare or not cand.is_file() else "is what you named (give the bare name)"
    raise ConfigError(f"no profile or file {str(profile)!r}: neither the file {p.resolve()} nor the profile {cand} "
                      f"{what}; profiles: {', '.join(names)}{hint}")


def read_profile(profile: str | os.PathLike) -> dict[str, Any]:
    """The mapping a profile file holds (what it changes; ``train.profiles.load_profile`` merges it over every
    key's default): ``ConfigError`` when it is not YAML or not a mapping."""
    path = profile_path(profile)
    try:
        with open(path, encoding="utf-8") as f:
            params = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: a profile must be a mapping of parameter names to values")
    return params


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=3", "model=biformer"]`` -> ``{"epochs": 3, "model": "biformer"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0].strip():
            raise ConfigError(f"{pair!r} is not key=value (e.g. epochs=3)")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{pair!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
    return out


def resolve_cli_paths(overrides: dict[str, Any], cwd: str | os.PathLike | None = None) -> dict[str, Any]:
    """``overrides`` with the relative paths of ``PATH_KEYS`` taken from ``cwd`` (default: the current folder),
    for values typed on the command line; profile and notebook values stay repository-relative."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    out = dict(overrides)
    for k in PATH_KEYS:
        v = out.get(k)
        if isinstance(v, str) and v and not Path(os.path.expanduser(v)).is_absolute():
            out[k] = str((base / os.path.expanduser(v)).resolve())
    return out
