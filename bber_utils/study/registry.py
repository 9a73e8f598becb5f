"""The run registry: every ``<workdir>/train/<run>/metrics.json`` as one tidy
table (``load_registry``: one row per run, corpus and split, with the four metrics, their mean and the run's
settings), and the run name a parameter set gets (``run_name_for``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from bber_utils.core.paths import workdir_path
from bber_utils.train import CONTROL_KEYS, TrainConfig, default_run_name
from bber_utils.train.config import AUGMENT_KEYS, UNIMODAL_MODELS


METRICS = ("uar", "war", "mf1", "wf1", "mean")

# Settings shown as registry columns (whatever is present in its config). Grouping uses the whole configuration
# (``run_settings``), not only these.
SETTING_KEYS = ("model", "train_corpora", "sds_ratio", "tug_ratio", "tug_mode", "ls_llm_p", "label_smoothing",
                "audio_encoder", "text_encoder", "hidden_dim", "num_layers", "epochs")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Flatten one ``metrics.json`` into rows ``{run, corpus, split, uar, …, setting keys…}``."""
    path = Path(path)
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
        raise ValueError(f"{path}: not a readable metrics.json ({exc})") from exc
    if not isinstance(m, dict) or not isinstance(m.get("config", {}), dict) \
            or not isinstance(m.get("metrics") or {}, dict):
        raise ValueError(f"{path}: not a metrics.json of bber train (no object with config and metrics)")
    cfg = m.get("config", {})
    base = {"run": m.get("run", path.parent.name), "seed": m.get("seed", cfg.get("seed")),
            "wall_time_s": m.get("wall_time_s"), "best_epoch": m.get("best_epoch"),
            "git_commit": m.get("git_commit"), "path": str(path.parent)}
    base["model"] = m.get("model", cfg.get("model"))
    for key in SETTING_KEYS:
        if key != "model":
            val = cfg.get(key)
            base[key] = ",".join(map(str, val)) if isinstance(val, (list, tuple)) else val
    if m.get("corpora"):  # the corpora the trainer resolved ("all" -> the list)
        base["train_corpora"] = ",".join(map(str, m["corpora"]))
    base["settings"] = json.dumps(run_settings({**cfg, **({"train_corpora": list(m["corpora"])}
                                                          if m.get("corpora") else {})}),
                                  sort_keys=True, default=str)
    rows = []
    for corpus, splits in (m.get("metrics") or {}).items():
        for split, vals in (splits.items() if isinstance(splits, dict) else ()):
            if not isinstance(vals, dict):
                continue
            rows.append({**base, "corpus": corpus, "split": split, **{k: vals.get(k) for k in METRICS}})
    return rows


def run_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run's setting: its whole training configuration (missing keys take ``TrainConfig``'s
    defaults) minus the seed and the control keys (``train.CONTROL_KEYS``: run name, device, progress ...).
    Numbers are compared as floats (``0`` and ``0.0`` are one setting), lists as comma-joined strings."""

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    if "augment_unimodal" not in cfg:  # an augmented fusion run from before the key trained stage 1 on the
        cfg = {**cfg, "augment_unimodal": _old_stage1_augmented(cfg)}  # augmented rows; elsewhere it changes nothing
    out = {}
    for key, val in {**defaults, **cfg}.items():
        if key in CONTROL_KEYS or key == "seed":
            continue
        if isinstance(val, (list, tuple)):
            val = ",".join(map(str, val))
        elif isinstance(val, (int, float)) and not isinstance(val, bool):
            val = float(val)
        out[key] = val
    return out


def _old_stage1_augmented(cfg: dict[str, Any]) -> bool:
    """``TrainConfig.stage1_choice_matters`` of a config without ``augment_unimodal``: an augmented fusion model."""

    return cfg.get("model") not in UNIMODAL_MODELS and any(_augment_values(cfg))


def _augment_values(params: dict[str, Any]) -> tuple[float, ...]:
    """The values of ``AUGMENT_KEYS`` in a parameter dict (missing or unreadable: 0)."""

    def num(v) -> float:
        try:
            return float(v or 0)
        except (TypeError, ValueError):
            return 0.0

    return tuple(num(params.get(k)) for k in AUGMENT_KEYS)


def load_registry(workdir: str | os.PathLike, skipped: list | None = None):
    """Every run of ``<workdir>/train`` as a tidy DataFrame; creates nothing. With a list ``skipped``, an
    unreadable ``metrics.json`` is appended to it as ``(path, reason)`` and skipped; without, it raises."""

    rows: list[dict[str, Any]] = []
    for path in sorted((workdir_path(workdir) / "train").glob("*/metrics.json")):
        if path.parent.name.startswith("_"):  # internal stages (e.g. cached unimodal encoders)
            continue
        try:
            rows.extend(read_metrics(path))
        except ValueError as exc:
            if skipped is None:
                raise
            skipped.append((str(path), str(exc)))
    cols = ["run", "model", "seed", "corpus", "split", *METRICS]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


def best_run(registry, split: str = "dev") -> str | None:
    """The run with the highest ``mean`` (of UAR, WAR, MF1, WF1) on ``split``, averaged over its corpora: the run
    notebook 08 reports as "best by dev" and notebook 09 predicts with. Chosen on dev, never on test; ties go
    to the first run name. None when no run has that split."""

    scores = registry[registry["split"] == split].groupby("run")["mean"].mean() if len(registry) else []
    return str(scores.idxmax()) if len(scores) else None


def run_name_for(params: dict[str, Any], workdir: str | os.PathLike | None = None) -> str:
    """The name notebook 06 (``train``) gives a run of ``params``: model, the non-default augmentations, seed and
    a hash of every key that changes the numbers, with ``train_corpora="all"`` resolved against ``workdir``'s
    manifests first (one name for "all" and the same corpora listed)."""

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in params.items() if k in names}
    if workdir is not None:
        values["workdir"] = str(workdir)
    return default_run_name(TrainConfig(**values), resolve=workdir is not None)
