"""Summaries over seeds and comparisons of settings.

- ``summarize`` gives mean ± std and a 95 % confidence interval (Student t) over seeds. Runs are pooled only
  when their whole configuration is the same except the seed (and the control keys that do not change the
  numbers, ``train.CONTROL_KEYS``); the table shows every setting in which its rows differ.
- ``study_table`` keeps each seed's value (``{metric}_by_seed``); ``compare_rows`` / ``paired_difference``
  compare two settings seed by seed (the runs of a seed share their unimodal encoders and data order).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bber_utils.study.registry import METRICS

# Heavy libraries (scipy) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


def confidence_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, std, half-width of the Student-t interval, n); half-width is NaN for n < 2."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, 1
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))
    return mean, std, half, n


def summarize(registry, by: list[str], split: str = "test", metrics: Iterable[str] = METRICS):
    """Mean, std and 95 % CI over seeds for each group of ``by`` (+ corpus) on ``split``.

    Only runs with the same whole setting (``run_settings``: the configuration minus seed and control keys)
    are pooled, so two runs that differ in, e.g., lr alone are two rows, each with its own seeds. Every setting
    in which the rows differ and that ``by`` does not show gets a column (after the ``by`` columns), so the
    table says what tells its rows apart. A registry without the ``settings`` column (hand-made) groups by
    ``by`` alone.
    """

    df = registry[registry["split"] == split].copy()
    if "settings" not in df:
        df["settings"] = "{}"
    df["settings"] = df["settings"].fillna("{}").astype(str)
    keys = list(dict.fromkeys([*by, "corpus"]))
    # the same settings and seed run twice (e.g. by notebook 06 and by a sweep) are one sample, not two
    df = df.drop_duplicates(list(dict.fromkeys([*keys, "settings", "seed"])))
    rows = []
    for group, part in df.groupby([*keys, "settings"], dropna=False, sort=True):
        row = dict(zip([*keys, "settings"], group if isinstance(group, tuple) else (group,)))
        for m in metrics:
            mean, std, half, n = confidence_interval(part[m])
            row.update({m: mean, f"{m}_std": std, f"{m}_ci95": half})
        row["n_seeds"] = int(part["seed"].nunique())
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    settings = [json.loads(s) for s in table.pop("settings")]
    names = sorted({k for s in settings for k in s} - set(keys))
    differing = [k for k in names if len({json.dumps(s.get(k), sort_keys=True, default=str)
                                          for s in settings}) > 1]
    for pos, k in enumerate(differing):
        table.insert(len(keys) + pos, k, [s.get(k) for s in settings])
    return table


def study_table(registry, settings: list[dict[str, Any]], split: str = "test"):
    """Join each run of the study to its (study, setting) label and summarise over seeds."""

    labelled = []
    for s in settings:
        keys = {k: v for k, v in s.items() if k not in ("study", "setting")}
        mask = pd.Series(True, index=registry.index)
        for k, v in keys.items():
            if k not in registry:
                mask &= False
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                mask &= pd.to_numeric(registry[k], errors="coerce").fillna(0) == float(v)
            else:
                want = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                mask &= registry[k].astype(str) == str(want)
        for k in ("sds_ratio", "tug_ratio", "ls_llm_p"):  # an augmentation left out means 0
            if k not in keys and k in registry:
                mask &= registry[k].fillna(0).astype(float) == 0
        labelled.append(registry[mask].assign(study=s["study"], setting=s["setting"]))
    df = pd.concat(labelled, ignore_index=True) if labelled else registry.iloc[0:0]
    if df.empty:
        return df
    order = {(s["study"], s["setting"]): i for i, s in enumerate(settings)}
    table = summarize(df, ["study", "setting"], split=split)
    # which runs each row summarises, and their dev score (what model selection may look at)
    keys = ["study", "setting", "corpus"]
    runs = df[df["split"] == split].groupby(keys)["run"].agg(lambda r: ";".join(sorted(set(r))))
    dev = df[df["split"] == "dev"].drop_duplicates(["run", "corpus"]).groupby(keys)["mean"]
    extra = pd.DataFrame({"runs": runs, "dev_mean": dev.mean(), "dev_mean_std": dev.std()}).reset_index()
    table = table.merge(extra, on=keys, how="left").merge(_by_seed(df[df["split"] == split], keys), on=keys,
                                                          how="left")
    table["_order"] = [order[(a, b)] for a, b in zip(table["study"], table["setting"])]
    return table.sort_values(["_order", "corpus"]).drop(columns="_order").reset_index(drop=True)


def _by_seed(df, keys: list[str]):
    """Per group of ``keys``: each metric's value per seed, as JSON ``{"42": 0.71, ...}`` (``{metric}_by_seed``),
    so that two settings can be compared seed by seed (``compare_to``)."""

    df = df.drop_duplicates([*keys, "seed"])
    out = {}
    for group, part in df.groupby(keys, sort=False):
        out[group] = {f"{m}_by_seed": json.dumps({str(int(s)): float(v) for s, v in zip(part["seed"], part[m])},
                                                 sort_keys=True) for m in METRICS}
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=keys)
    return frame.reset_index()


def _seed_values(v: str | dict | None) -> dict:
    """``{seed: value}`` from a ``{metric}_by_seed`` cell (JSON, a mapping, or missing: ``{}``)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return {}
    return json.loads(v) if isinstance(v, str) else dict(v)


def paired_difference(values: str | dict | None, reference: str | dict | None) -> tuple[float, float, int]:
    """Seed-by-seed difference of two settings (``{seed: value}`` or its JSON): ``(mean, 95 % half-width, n)``
    over the seeds both have (Student t with n - 1 degrees of freedom; NaN half-width below 2 seeds). The runs of
    one seed share their data order and, for a fusion model, their unimodal encoders, so the paired difference
    leaves out what the seeds change in both and is the sharper test of the two settings' difference."""
    a, b = _seed_values(values), _seed_values(reference)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return math.nan, math.nan, 0
    mean, _std, half, n = confidence_interval([a[s] - b[s] for s in seeds])
    return mean, half, n


def compare_rows(row, base, metric: str = "war", n: int | None = None, clips: int = 3) -> dict[str, Any]:
    """The difference of two study rows (one setting and corpus each; mappings or pandas rows) on ``metric``:
    ``diff_pts``, ``diff_clips`` (``n`` test clips: one clip moves WAR by ``100 / n`` points), ``diff_ci95``,
    ``seeds_ahead`` / ``seeds_paired`` and ``verdict``. A difference smaller than ``clips`` test clips is
    flagged, and so is one whose 95 % interval includes 0: the interval of the paired, seed-by-seed difference
    where both settings ran the same seeds (``paired_difference``), else the two settings' own intervals
    overlapping; with one seed on each side there is no interval ("one seed: no interval"). A flagged difference
    is not a finding on this test set; the others are "better" / "worse"."""
    get = (lambda r, k: r.get(k, math.nan)) if hasattr(row, "get") else (lambda r, k: getattr(r, k, math.nan))
    diff = 100 * (get(row, metric) - get(base, metric))
    diff_clips = diff * n / 100 if n else math.nan
    a, b = _seed_values(get(row, f"{metric}_by_seed")), _seed_values(get(base, f"{metric}_by_seed"))
    _, half, paired = paired_difference(a, b)
    ahead = sum(a[s] > b[s] for s in set(a) & set(b))
    same_seeds = paired > 0 and {s for s, v in a.items() if v == v} == {s for s, v in b.items() if v == v}
    own = [get(row, f"{metric}_ci95"), get(base, f"{metric}_ci95")]
    if paired >= 2 and same_seeds:  # diff is then the mean of the paired differences
        ci, overlap = 100 * half, "paired 95 % interval includes 0"
    elif any(x is not None and x == x for x in own):  # the seeds differ: the two rows' own intervals decide
        ci, overlap = 100 * (_nz(own[0]) + _nz(own[1])), "95 % intervals overlap"
    else:  # one seed on each side: no interval, so no finding either way
        ci, overlap = math.nan, "one seed: no interval"
    if n and abs(diff_clips) < clips:
        verdict = f"within {clips} test clips"
    elif ci != ci or abs(diff) <= ci:
        verdict = overlap
    else:
        verdict = "better" if diff > 0 else "worse"
    return {"diff_pts": round(diff, 1), "diff_clips": round(diff_clips, 1), "diff_ci95": round(ci, 1),
            "seeds_ahead": ahead, "seeds_paired": paired, "verdict": verdict}


def compare_to(table, reference: tuple[str, str], n_test: dict[str, int], metric: str = "war", clips: int = 3):
    """Each setting's difference to ``reference`` (study, setting) per corpus (``compare_rows``): columns
    ``study, setting, corpus, diff_pts, diff_clips, diff_ci95, verdict``."""

    ref = table[(table["study"] == reference[0]) & (table["setting"] == reference[1])].set_index("corpus")
    rows = []
    for r in table.itertuples(index=False):
        if (r.study, r.setting) == reference or r.corpus not in ref.index:
            continue
        c = compare_rows(r, ref.loc[r.corpus], metric, n_test.get(r.corpus), clips)
        rows.append({"study": r.study, "setting": r.setting, "corpus": r.corpus,
                     **{k: c[k] for k in ("diff_pts", "diff_clips", "diff_ci95", "verdict")}})
    return pd.DataFrame(rows, columns=["study", "setting", "corpus", "diff_pts", "diff_clips", "diff_ci95",
                                       "verdict"])


def _nz(x) -> float:
    """NaN (one seed: no interval) -> 0."""
    return 0.0 if x is None or x != x else float(x)
