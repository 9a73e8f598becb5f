"""Run registry, summaries with confidence intervals, resumable sweeps and dev-only ratio search."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from bber_utils.study import cli

from bber_utils.study import design

from bber_utils.study import registry as study_registry

from bber_utils.study import runner as study_runner

from bber_utils.study import schedule

from bber_utils.study import search as study_search

from bber_utils.study import stats
from bber_utils.core.paths import run_dirs


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


def test_registry_is_tidy_and_skips_internal_stages(tmp_path):
    _write_run(tmp_path, "a", {"model": "biformer", "seed": 1, "sds_ratio": 0.5, "train_corpora": ["x", "y"]},
               {("x", "dev"): .5, ("x", "test"): .4, ("y", "test"): .3})
    _write_run(tmp_path, "_unimodal", {"model": "audio_only"}, {("x", "test"): .9})
    reg = study_registry.load_registry(tmp_path)
    assert len(reg) == 3 and set(reg["run"]) == {"a"}
    row = reg[(reg["corpus"] == "y") & (reg["split"] == "test")].iloc[0]
    assert row["wf1"] == pytest.approx(.3) and row["sds_ratio"] == 0.5 and row["train_corpora"] == "x,y"


def test_unreadable_metrics_are_reported_not_fatal(tmp_path):
    d = run_dirs(tmp_path).train / "broken"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken"):
        study_registry.load_registry(tmp_path)
    skipped = []
    assert study_registry.load_registry(tmp_path, skipped=skipped).empty and skipped[0][0].endswith("metrics.json")


def _two_runs_one_corrupt(workdir):
    _write_run(workdir, "good", {"model": "biformer", "seed": 1}, {("x", "dev"): .5, ("x", "test"): .4})
    for name, text in [("truncated", '{"run": "t", "metrics": {"x"'), ("a_list", "[1, 2]"),
                       ("bad_splits", '{"config": {}, "metrics": {"x": [0.5]}}')]:
        d = run_dirs(workdir).train / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(text)


def test_results_skip_a_corrupt_metrics_json_and_name_it(tmp_path, capsys):
    """One truncated metrics.json used to hide every run behind a traceback."""
    from bber_utils import cli

    _two_runs_one_corrupt(tmp_path)
    rc = cli.main(["results", "--workdir", str(tmp_path), "--by", "model"])
    out, err = capsys.readouterr()
    assert rc == 0 and "biformer" in out, err
    assert err.count("\n") == 1 and "skipped 2 unreadable metrics.json" in err, err
    assert "truncated" in err and "a_list" in err and "Traceback" not in err
    assert "bad_splits" not in err  # an odd split entry is ignored, the file's other rows are read


def test_results_on_a_missing_workdir_create_nothing(tmp_path, capsys):
    from bber_utils import cli

    missing = tmp_path / "no" / "such"
    for argv in (["results"], ["results", "--env", "a", "b"]):
        rc = cli.main([*argv, "--workdir", str(missing)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and f"no such work folder {missing}" in err, err
    assert not (tmp_path / "no").exists()
    (tmp_path / "empty").mkdir()
    assert cli.main(["results", "--workdir", str(tmp_path / "empty")]) == 1
    assert list((tmp_path / "empty").iterdir()) == []  # no train/ made by a reader


@pytest.mark.parametrize("argv, needles", [
    (["--split", "tset"], ["unknown --split 'tset'", "did you mean 'test'", "'dev'"]),
    (["--by", "nosuchcol"], ["unknown --by column 'nosuchcol'", "'model'", "'sds_ratio'"]),
    (["--by", "model", "tug_ration"], ["'tug_ration'", "did you mean 'tug_ratio'"]),
])
def test_results_refuse_an_unknown_split_or_column(tmp_path, capsys, argv, needles):
    """``--split tset`` printed an empty table and ``--by nosuchcol`` was a KeyError traceback."""
    from bber_utils import cli

    _write_run(tmp_path, "good", {"model": "biformer", "seed": 1}, {("x", "dev"): .5, ("x", "test"): .4})
    rc = cli.main(["results", "--workdir", str(tmp_path), *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err and out == "", err
    for n in needles:
        assert n in err, err


def test_confidence_interval_matches_student_t():
    mean, std, half, n = stats.confidence_interval([0.5, 0.6, 0.7])
    assert (mean, n) == (pytest.approx(0.6), 3) and std == pytest.approx(0.1)
    assert half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert math.isnan(stats.confidence_interval([0.5])[2])


def test_summarize_groups_over_seeds(tmp_path):
    for seed, v in [(1, .5), (2, .7)]:
        _write_run(tmp_path, f"b{seed}", {"model": "biformer", "seed": seed}, {("x", "test"): v})
    _write_run(tmp_path, "t1", {"model": "text_only", "seed": 1}, {("x", "test"): .2})
    _write_run(tmp_path, "t1-again", {"model": "text_only", "seed": 1, "run_name": "other", "progress": False},
               {("x", "test"): .2})  # a rerun: only control keys differ
    _write_run(tmp_path, "t1-tug", {"model": "text_only", "seed": 1, "tug_ratio": .5}, {("x", "test"): .4})
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
    _write_run(tmp_path, "lr-a", {**base, "lr": 1e-3}, {("x", "test"): .5})
    _write_run(tmp_path, "lr-b", {**base, "lr": 1e-4, "device": "cuda"}, {("x", "test"): .7})  # device: control
    _write_run(tmp_path, "lr-b2", {**base, "lr": 1e-4, "seed": 2}, {("x", "test"): .9})
    s = stats.summarize(study_registry.load_registry(tmp_path), ["model"])
    assert len(s) == 2 and "lr" in s.columns and "device" not in s.columns and "seed" not in s.columns
    by_lr = s.set_index("lr")
    assert by_lr.loc[1e-3, "n_seeds"] == 1 and by_lr.loc[1e-3, "mean"] == pytest.approx(.5)
    assert by_lr.loc[1e-4, "n_seeds"] == 2 and by_lr.loc[1e-4, "mean"] == pytest.approx(.8)
    # 0 and 0.0, a list and its comma-joined form, a missing key and its default: one setting
    _write_run(tmp_path, "c1", {**base, "lr": 1e-3, "sds_ratio": 0, "train_corpora": ["x"], "seed": 5},
               {("x", "test"): .5})
    _write_run(tmp_path, "c2", {**base, "lr": 1e-3, "sds_ratio": 0.0, "train_corpora": "x", "seed": 6},
               {("x", "test"): .5})
    s = stats.summarize(study_registry.load_registry(tmp_path)[lambda r: r["run"].isin(["c1", "c2"])], ["model"])
    assert len(s) == 1 and s["n_seeds"].iloc[0] == 2


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


@pytest.mark.parametrize("search", [study_search.grid_search, study_search.greedy_search])
def test_ratio_search_selects_on_dev_only(tmp_path, search):
    calls = []
    best, trials = search({"model": "biformer", "sds_ratio": 0.0, "tug_ratio": 0.0},
                          {"sds_ratio": [0.0, 0.5, 1.0], "tug_ratio": [0.0, 1.0]}, [1, 2], tmp_path,
                          corpus="x", runner=_fake_runner(tmp_path, calls))
    assert best == {"sds_ratio": 0.5, "tug_ratio": 1.0}
    assert all("dev_score" in t for t in trials)


def test_sweep_is_resumable(tmp_path):
    calls = []
    runner = _fake_runner(tmp_path, calls)
    first = study_runner.run_sweep({"model": "m"}, [{"sds_ratio": 0.5}], [1, 2], tmp_path, runner, progress=False)
    assert len(first) == 2 and all((d / "metrics.json").exists() for d in first)
    stamp = [(d / "metrics.json").stat().st_mtime_ns for d in first]
    again = study_runner.run_sweep({"model": "m"}, [{"sds_ratio": 0.5}], [1, 2], tmp_path, runner, progress=False)
    assert again == first and stamp == [(d / "metrics.json").stat().st_mtime_ns for d in again]


def test_run_one_skips_finished_runs_without_executing(tmp_path, monkeypatch):
    params = {"model": "m", "seed": 3}
    _write_run(tmp_path, study_registry.run_name_for(params), params, {("x", "test"): .1})
    monkeypatch.setattr("bber_utils.core.papermill.run_notebook", lambda *a, **k: pytest.fail("re-ran a finished run"))
    assert study_runner.run_one(params, tmp_path).name == study_registry.run_name_for(params)


def test_paper_table_marks_reported_numbers(tmp_path):
    _write_run(tmp_path, "r", {"model": "biformer", "seed": 1}, {("meld", "dev"): .5, ("meld", "test"): .42})
    t = design.paper_table(study_registry.load_registry(tmp_path))
    meld_wf1 = t[(t["corpus"] == "meld") & (t["metric"] == "wf1")].iloc[0]
    assert meld_wf1["paper (reported)"] == 68.31 and meld_wf1["ours (test, %)"] == 42.0
    assert t[t["corpus"] == "resd"]["ours (test, %)"].isna().all()


def test_result_figures_are_written(tmp_path):
    from bber_utils.notebook import plots

    for seed, v in [(1, .5), (2, .7)]:
        _write_run(tmp_path, f"b{seed}", {"model": "biformer", "seed": seed}, {("x", "test"): v, ("y", "test"): .4})
    s = stats.summarize(study_registry.load_registry(tmp_path), ["model"])
    fig = plots.metric_bars(s, "model", "wf1", save_to=tmp_path / "bars.png")
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [40.0, 60.0] and (tmp_path / "bars.png").stat().st_size > 1000
    plots.confusion_matrices({"x": [[1] * 7] * 7}, save_to=tmp_path / "cm.png")
    assert (tmp_path / "cm.png").exists()


def test_paper_study_covers_the_questions_and_joins_runs(tmp_path):
    settings = design.paper_study(["x", "y"], fusion_models=["biformer", "bimamba"],
                              augment={"sds_ratio": 0.5, "tug_ratio": 0, "ls_llm_p": 0.2})
    studies = {(s["study"], s["setting"]) for s in settings}
    assert {("modality", "audio_only"), ("modality", "text_only"), ("fusion", "bimamba"),
            ("augmentation", "+sds_ratio=0.5"), ("augmentation", "+all"), ("corpora", "single: y")} <= studies
    assert not any("tug" in s for _, s in studies)
    for i, s in enumerate(settings):
        cfg = {k: v for k, v in s.items() if k not in ("study", "setting")}
        cfg.setdefault("sds_ratio", 0.0)
        _write_run(tmp_path, f"r{i}", {**cfg, "seed": 1}, {("x", "test"): i / 100, ("x", "dev"): 0.1})
    table = stats.study_table(study_registry.load_registry(tmp_path), settings)
    assert len(table) == len(settings)  # each setting found exactly its own run (corpus x)
    plain = table[(table["study"] == "fusion") & (table["setting"] == "biformer")].iloc[0]
    assert plain["mean"] == pytest.approx(2 / 100)  # not mixed with the +sds / +ls runs of biformer


def _two_settings(ref_by_seed: dict, other_by_seed: dict):
    """A study table of BiFormer and one other setting with the given per-seed WAR (one corpus)."""
    from bber_utils.study.stats import confidence_interval

    rows = []
    for setting, by_seed in (("biformer", ref_by_seed), ("other", other_by_seed)):
        mean, std, half, n = confidence_interval(list(by_seed.values()))
        rows.append({"study": "fusion", "setting": setting, "corpus": "c", "war": mean, "war_ci95": half,
                     "war_by_seed": json.dumps({str(k): v for k, v in by_seed.items()})})
    return pd.DataFrame(rows)


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
    _write_run(tmp_path, "stale-biformer-s1", {"model": "biformer", "seed": 1, "sds_ratio": 0.5, "lr": 0.1},
               {("x", "dev"): .9, ("x", "test"): .99})
    calls = []
    settings = [{"study": "augmentation", "setting": "+sds_ratio=0.5", "model": "biformer", "sds_ratio": 0.5}]
    table = schedule.run_study({"model": "biformer", "lr": 0.01}, settings, [1, 2], tmp_path,
                         runner=_fake_runner(tmp_path, calls))
    assert len(calls) == 2 and len(table) == 1
    assert table.iloc[0]["n_seeds"] == 2 and table.iloc[0]["war"] == pytest.approx(0.5)
    assert "stale" not in table.iloc[0]["runs"]


# ------------------------------------------------------------------------------ sweep values (issue 25)
from hypothesis import given, strategies as st  # noqa: E402

_PLAIN = st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True)
_ITEM = st.one_of(
    _PLAIN,
    st.lists(_PLAIN, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),            # a YAML flow list
    st.lists(_PLAIN, min_size=1, max_size=3).map(lambda xs: "'" + ",".join(xs) + "'"),  # a quoted string
    st.lists(_PLAIN, min_size=1, max_size=2).map(lambda xs: "{a: [" + ",".join(xs) + "]}"),
)


@given(st.lists(_ITEM, min_size=1, max_size=5))
def test_sweep_values_split_on_the_commas_outside_brackets_and_quotes(items):
    assert cli.split_sweep_values(",".join(items)) == items


@pytest.mark.parametrize("text, values", [
    ("biformer,bimamba", ["biformer", "bimamba"]),
    ("[a,b],[c]", ["[a,b]", "[c]"]),
    ("[a, b]", ["[a, b]"]),
    ('"x,y",z', ['"x,y"', "z"]),
    ("it's,b", ["it's", "b"]),                # an apostrophe inside a plain value is not a quote
    ("1,2,", ["1", "2"]),
])
def test_sweep_values_examples(text, values):
    assert cli.split_sweep_values(text) == values


@pytest.mark.parametrize("text", ["[a,b", "a]", "'a,b", "{a: [1}"])
def test_unbalanced_sweep_values_are_refused(text):
    from bber_utils.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unbalanced"):
        cli.split_sweep_values(text)
