"""The study tests' runs: a finished run's metrics.json written by hand, a runner that writes them, and
study tables with per-seed values."""

from __future__ import annotations

import json

import pandas as pd

from bber_utils.core.paths import run_dirs
from bber_utils.study import registry as study_registry
from bber_utils.study import stats


def write_run(workdir, name, cfg, scores):
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


def fake_runner(workdir, calls):
    """Dev prefers sds_ratio 0.5 for corpus x; test prefers 1.0 (a search that peeks at test would pick it)."""
    def run(params, wd):
        calls.append(params)
        name = study_registry.run_name_for(params)
        d = run_dirs(wd).train / name
        if (d / "metrics.json").exists():
            return d
        r = params["sds_ratio"]
        dev = 1 - abs(r - 0.5) + 0.01 * params.get("tug_ratio", 0)
        return write_run(wd, name, params, {("x", "dev"): dev, ("x", "test"): r})
    return run


def seed_row(setting: str, by_seed: dict, study: str = "fusion", corpus: str = "c") -> dict:
    """One study-table row with the given per-seed WAR."""
    mean, _, half, n = stats.confidence_interval(list(by_seed.values()))
    return {"study": study, "setting": setting, "corpus": corpus, "n_seeds": n, "war": mean, "war_ci95": half,
            "uar": mean, "uar_ci95": half, "wf1": mean, "wf1_ci95": half,
            "war_by_seed": json.dumps({str(k): v for k, v in by_seed.items()})}


def paired_study():
    """BiFormer, audio only, SDS and TUG on one corpus, per-seed WAR: fusion is 20 points ahead on every seed,
    TUG 1 point behind SDS (within a clip)."""
    import json

    from bber_utils.study.stats import confidence_interval

    base = {42: 0.60, 43: 0.70, 44: 0.80}
    rows = []
    for study, setting, shift in (("modality", "audio_only", -0.20), ("fusion", "biformer", 0.0),
                                  ("augmentation", "+sds_ratio=1.0", 0.02), ("augmentation", "+tug_ratio=0.5", 0.01)):
        values = [v + shift for v in base.values()]
        mean, _, half, _ = confidence_interval(values)
        rows.append({"study": study, "setting": setting, "corpus": "c", "n_seeds": 3, "war": mean, "war_ci95": half,
                     "uar": mean, "uar_ci95": half, "wf1": mean, "wf1_ci95": half,
                     "war_by_seed": json.dumps({str(s): v for s, v in zip(base, values)})})
    return pd.DataFrame(rows)


def cluster_fake_run(params, workdir):
    """A run inside a submitit job (picklable: the job process imports this module). It writes its pid and
    the times it ran to ``train/<run>/``; while ``<workdir>/hold`` exists it waits (at most 60 s); it fails while
    ``<workdir>/fail-s<seed>-<model>`` exists; its first call sleeps until it is preempted while
    ``<workdir>/preempt`` exists; then it writes a metrics.json."""
    import os
    import time
    from pathlib import Path

    wd, name = Path(workdir), params["run_name"]
    d = run_dirs(wd).train / name
    d.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(d / "calls", "a") as f:
        f.write(f"{start}\n")
    (d / "pid").write_text(str(os.getpid()))
    while (wd / "hold").exists() and time.time() - start < 60:
        time.sleep(0.05)
    if (wd / "preempt").exists() and len((d / "calls").read_text().split()) == 1:
        time.sleep(60)  # until SIGUSR2: submitit checkpoints and requeues the call
    if (wd / f"fail-s{params['seed']}-{params['model']}").exists():
        raise RuntimeError(f"run {name}: made to fail\nthe rest of the message")
    write_run(wd, name, params, {("x", "test"): 0.5})
    (d / "times").write_text(f"{start} {time.time()}")
    return d
