"""Run registry, summaries with confidence intervals, resumable sweeps and dev-only ratio search."""

from __future__ import annotations

import json
import pytest
from bber_utils.study import registry as study_registry
from bber_utils.study import search as study_search
from bber_utils.core.paths import run_dirs
# ------------------------------------------------------------------------------ sweep values (issue 25)


def _fake_runner(workdir, calls):
    """Dev prefers sds_ratio 0.5 for corpus x; test prefers 1.0 (a search that peeks at test would pick it)."""
    def run(params, wd):
        calls.append(params)
        name = study_registry.run_name_for(params)
        d = run_dirs(wd).train / name
        if (d / "metrics.json").exists():
            return d
        r = params["sds_ratio"]
        dev = 1 - abs(r - 0.5) + 0.01 * params.get("tug_ratio", 0)
        return _write_run(wd, name, params, {("x", "dev"): dev, ("x", "test"): r})
    return run


def _write_run(workdir, name, cfg, scores):
    """scores: {(corpus, split): mean} -> a metrics.json in the trainer's schema."""
    d = run_dirs(workdir).train / name
    d.mkdir(parents=True, exist_ok=True)
    metrics = {}
    for (corpus, split), v in scores.items():
        metrics.setdefault(corpus, {})[split] = {"uar": v, "war": v, "mf1": v, "wf1": v, "mean": v,
                                                 "confusion": [[0] * 7] * 7}
    (d / "metrics.json").write_text(json.dumps({"run": name, "model": cfg.get("model"), "seed": cfg.get("seed"),
                                                "config": cfg, "metrics": metrics}))
    return d


@pytest.mark.parametrize("search", [study_search.grid_search, study_search.greedy_search])
def test_ratio_search_selects_on_dev_only(tmp_path, search):
    calls = []
    best, trials = search({"model": "biformer", "sds_ratio": 0.0, "tug_ratio": 0.0},
                          {"sds_ratio": [0.0, 0.5, 1.0], "tug_ratio": [0.0, 1.0]}, [1, 2], tmp_path,
                          corpus="x", runner=_fake_runner(tmp_path, calls))
    assert best == {"sds_ratio": 0.5, "tug_ratio": 1.0}
    assert all("dev_score" in t for t in trials)
