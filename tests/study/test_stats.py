"""Summaries over seeds (Student-t intervals), never pooling other settings; seed-by-seed comparisons."""

from __future__ import annotations

import json
import math
import pandas as pd
import pytest
from bber_utils.study import registry as study_registry
from bber_utils.study import schedule
from bber_utils.study import stats
from tests.study.common import fake_runner, seed_row, write_run
# ------------------------------------------------------------------------------ sweep values (issue 25)


def _two_settings(ref_by_seed: dict, other_by_seed: dict):
    """A study table of BiFormer and one other setting with the given per-seed WAR (one corpus)."""
    from bber_utils.study.stats import confidence_interval

    rows = []
    for setting, by_seed in (("biformer", ref_by_seed), ("other", other_by_seed)):
        mean, std, half, n = confidence_interval(list(by_seed.values()))
        rows.append({"study": "fusion", "setting": setting, "corpus": "c", "war": mean, "war_ci95": half,
                     "war_by_seed": json.dumps({str(k): v for k, v in by_seed.items()})})
    return pd.DataFrame(rows)



def test_confidence_interval_matches_student_t():
    mean, std, half, n = stats.confidence_interval([0.5, 0.6, 0.7])
    assert (mean, n) == (pytest.approx(0.6), 3) and std == pytest.approx(0.1)
    assert half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert math.isnan(stats.confidence_interval([0.5])[2])


def test_summarize_groups_over_seeds(tmp_path):
    for seed, v in [(1, .5), (2, .7)]:
        write_run(tmp_path, f"b{seed}", {"model": "biformer", "seed": seed}, {("x", "test"): v})
    write_run(tmp_path, "t1", {"model": "text_only", "seed": 1}, {("x", "test"): .2})
    write_run(tmp_path, "t1-again", {"model": "text_only", "seed": 1, "run_name": "other", "progress": False},
               {("x", "test"): .2})  # a rerun: only control keys differ
    write_run(tmp_path, "t1-tug", {"model": "text_only", "seed": 1, "tug_ratio": .5}, {("x", "test"): .4})
    s = stats.summarize(study_registry.load_registry(tmp_path), ["model"])
    bi = s[s["model"] == "biformer"].iloc[0]
    assert bi["mean"] == pytest.approx(.6) and bi["n_seeds"] == 2 and bi["mean_ci95"] > 0
    # the rerun counts once; the augmented run is another setting: its own row, and the column says why
    text = s[s["model"] == "text_only"].set_index("tug_ratio")
    assert len(text) == 2 and list(s.columns[:3]) == ["model", "corpus", "tug_ratio"]
    assert text.loc[0.0, "n_seeds"] == 1 and text.loc[0.0, "mean"] == pytest.approx(.2)
    assert math.isnan(text.loc[0.0, "mean_std"])
    assert text.loc[0.5, "mean"] == pytest.approx(.4)


def test_summarize_never_pools_runs_that_differ_in_any_setting(tmp_path):
    """Two runs that differ only in lr (a key outside the old fixed list) are two rows, each with one seed."""
    base = {"model": "biformer", "seed": 1, "epochs": 3, "device": "cpu"}
    write_run(tmp_path, "lr-a", {**base, "lr": 1e-3}, {("x", "test"): .5})
    write_run(tmp_path, "lr-b", {**base, "lr": 1e-4, "device": "cuda"}, {("x", "test"): .7})  # device: control
    write_run(tmp_path, "lr-b2", {**base, "lr": 1e-4, "seed": 2}, {("x", "test"): .9})
    s = stats.summarize(study_registry.load_registry(tmp_path), ["model"])
    assert len(s) == 2 and "lr" in s.columns and "device" not in s.columns and "seed" not in s.columns
    by_lr = s.set_index("lr")
    assert by_lr.loc[1e-3, "n_seeds"] == 1 and by_lr.loc[1e-3, "mean"] == pytest.approx(.5)
    assert by_lr.loc[1e-4, "n_seeds"] == 2 and by_lr.loc[1e-4, "mean"] == pytest.approx(.8)
    # 0 and 0.0, a list and its comma-joined form, a missing key and its default: one setting
    write_run(tmp_path, "c1", {**base, "lr": 1e-3, "sds_ratio": 0, "train_corpora": ["x"], "seed": 5},
               {("x", "test"): .5})
    write_run(tmp_path, "c2", {**base, "lr": 1e-3, "sds_ratio": 0.0, "train_corpora": "x", "seed": 6},
               {("x", "test"): .5})
    s = stats.summarize(study_registry.load_registry(tmp_path)[lambda r: r["run"].isin(["c1", "c2"])], ["model"])
    assert len(s) == 1 and s["n_seeds"].iloc[0] == 2


def test_compare_to_uses_the_seed_by_seed_difference():
    """Seeds move both settings together (same encoders, same data order): the paired difference is what counts.
    Here the other setting is 0.10 better on every seed while each setting's own interval is wide."""
    ref = {42: 0.55, 43: 0.70, 44: 0.85}
    consistent = _two_settings(ref, {s: v + 0.10 for s, v in ref.items()})
    row = stats.compare_to(consistent, ("fusion", "biformer"), {"c": 100}).iloc[0]
    assert row["verdict"] == "better" and row["diff_pts"] == 10.0
    assert consistent["war_ci95"].iloc[0] * 2 > 0.10  # the two intervals overlap: the unpaired rule would flag it
    # the same mean difference, but its sign changes with the seed: not a finding
    noisy = _two_settings(ref, {42: 0.75, 43: 0.60, 44: 1.05})
    row = stats.compare_to(noisy, ("fusion", "biformer"), {"c": 100}).iloc[0]
    assert row["verdict"] == "paired 95 % interval includes 0"
    # without per-seed values (an older study.csv) the two intervals decide, as before
    old = consistent.drop(columns="war_by_seed")
    assert stats.compare_to(old, ("fusion", "biformer"), {"c": 100}).iloc[0]["verdict"] == \
        "95 % intervals overlap"


def test_study_table_keeps_each_seeds_value(tmp_path):
    from bber_utils.study.stats import paired_difference

    registry = pd.DataFrame([{"run": f"{m}-s{s}", "model": m, "seed": s, "corpus": "c", "split": "test",
                              "uar": v, "war": v, "mf1": v, "wf1": v, "mean": v}
                             for m, base in (("biformer", 0.6), ("audio_only", 0.4)) for s, v in
                             ((42, base), (43, base + 0.05), (44, base + 0.1))])
    settings = [{"study": "fusion", "setting": "biformer", "model": "biformer"},
                {"study": "modality", "setting": "audio_only", "model": "audio_only"}]
    table = stats.study_table(registry, settings)
    by_seed = dict(zip(table["setting"], table["war_by_seed"]))
    assert json.loads(by_seed["biformer"]) == {"42": 0.6, "43": 0.65, "44": 0.7}
    mean, half, n = paired_difference(by_seed["biformer"], by_seed["audio_only"])
    assert n == 3 and mean == pytest.approx(0.2) and half == pytest.approx(0.0)


def test_study_table_summarises_only_the_runs_of_this_study(tmp_path):
    """A work folder may hold an older run of a setting made under other settings (e.g. before a default
    changed): the study's table must not pool it with, or split the setting over, the study's own runs."""
    write_run(tmp_path, "stale-biformer-s1", {"model": "biformer", "seed": 1, "sds_ratio": 0.5, "lr": 0.1},
               {("x", "dev"): .9, ("x", "test"): .99})
    calls = []
    settings = [{"study": "augmentation", "setting": "+sds_ratio=0.5", "model": "biformer", "sds_ratio": 0.5}]
    table = schedule.run_study({"model": "biformer", "lr": 0.01}, settings, [1, 2], tmp_path,
                         runner=fake_runner(tmp_path, calls))
    assert len(calls) == 2 and len(table) == 1
    assert table.iloc[0]["n_seeds"] == 2 and table.iloc[0]["war"] == pytest.approx(0.5)
    assert "stale" not in table.iloc[0]["runs"]



def test_paired_interval_only_where_both_settings_ran_the_same_seeds():
    """The footer: the paired interval, "or the two rows' own intervals where the seeds differ". Here BiMamba's
    11-point lead comes from its third seed alone (1 point ahead on the two shared seeds): not a finding."""
    study = pd.DataFrame([seed_row("biformer", {42: .59, 43: .59}), seed_row("bimamba", {42: .60, 43: .602, 44: .90})])
    row = stats.compare_to(study, ("fusion", "biformer"), {"c": 1000}).iloc[0]
    assert row["diff_pts"] == pytest.approx(11.1)
    assert row["verdict"] == "95 % intervals overlap"
    # the same seeds: the paired interval decides (unchanged)
    same = pd.DataFrame([seed_row("biformer", {42: .59, 43: .59, 44: .60}), seed_row("bimamba", {42: .60, 43: .602, 44: .612})])
    assert stats.compare_to(same, ("fusion", "biformer"), {"c": 1000}).iloc[0]["verdict"] == "better"
