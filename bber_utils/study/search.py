"""Augmentation-ratio search on **dev only** (``greedy_search``, ``grid_search``):
the test score of the chosen setting is reported afterwards, never used to choose.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np

from bber_utils.study import registry
from bber_utils.study.runner import expand_grid, run_sweep


def _dev_score(run_dirs_: list[Path], corpus: str | None) -> float:
    """Mean over seeds of the dev mean (one corpus, or averaged over corpora)."""

    scores = []
    for d in run_dirs_:
        rows = [r for r in registry.read_metrics(d / "metrics.json") if r["split"] == "dev"
                and (corpus is None or r["corpus"] == corpus)]
        if rows:
            scores.append(np.mean([r["mean"] for r in rows]))
    return float(np.mean(scores)) if scores else -math.inf


def grid_search(base: dict, space: dict[str, list], seeds: Iterable[int], workdir, corpus: str | None = None,
                runner=None, study_runner: str = "process") -> tuple[dict, list[dict]]:
    """Try every combination of ``space``; choose by dev score of ``corpus`` (None = averaged)."""
    seeds = list(seeds)
    trials = []
    for setting in expand_grid(space):
        runs = run_sweep(base, [setting], seeds, workdir, runner, progress=False, study_runner=study_runner)
        trials.append({**setting, "dev_score": _dev_score(runs, corpus)})
    best = max(trials, key=lambda t: t["dev_score"])
    return {k: best[k] for k in space}, trials


def greedy_search(base: dict, space: dict[str, list], seeds: Iterable[int], workdir, corpus: str | None = None,
                  runner=None, study_runner: str = "process") -> tuple[dict, list[dict]]:
    """Coordinate ascent: tune one key at a time (in ``space`` order), keeping the best value on dev."""
    seeds = list(seeds)
    current = {k: base.get(k, values[0]) for k, values in space.items()}
    trials: list[dict] = []
    seen: dict[str, float] = {}

    def evaluate(setting: dict) -> float:
        key = json.dumps(setting, sort_keys=True, default=str)
        if key not in seen:
            runs = run_sweep(base, [setting], seeds, workdir, runner, progress=False, study_runner=study_runner)
            seen[key] = _dev_score(runs, corpus)
            trials.append({**setting, "dev_score": seen[key]})
        return seen[key]

    best_score = evaluate(current)
    for key, values in space.items():
        for value in values:
            cand = {**current, key: value}
            s = evaluate(cand)
            if s > best_score:
                best_score, current = s, cand
    return current, trials
