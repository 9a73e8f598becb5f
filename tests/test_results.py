"""The README's study table, the published figures and notebook 08's results file cannot drift apart; PNGs are
byte-identical for the same numbers; the course helpers (walk-through, widgets) work on their own."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bber_utils.notebook import plots
from bber_utils.study import design
from bber_utils.study import readme as study_readme
from bber_utils.study import report as study_report
from bber_utils.core.paths import REPO_ROOT


def test_readme_block_is_the_published_study_table():
    """`make reproduce` writes figures/study_table.md and copies it into the README; a hand edit of either fails."""
    table = (REPO_ROOT / "figures" / study_readme.TABLE_FILE).read_text(encoding="utf-8")
    assert study_readme.readme_block(REPO_ROOT / "README.md") == table.strip("\n"), "run `bber readme`"


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{study_readme.BEGIN}\nold\n{study_readme.END}\nafter\n", encoding="utf-8")
    assert study_readme.update_readme(readme, "| a |\n|---|\n")
    assert readme.read_text(encoding="utf-8") == f"# x\nbefore\n{study_readme.BEGIN}\n| a |\n|---|\n{study_readme.END}\nafter\n"
    assert not study_readme.update_readme(readme, "| a |\n|---|\n")  # unchanged: not rewritten
    with pytest.raises(ValueError, match="markers"):
        study_readme.update_readme(_write(tmp_path / "no_markers.md", "nothing"), "x")


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _study():
    rows = []
    for setting, study, war in (("biformer", "fusion", .700), ("+tug_ratio=0.5", "augmentation", .715),
                                ("+sds_ratio=1.0", "augmentation", .800), ("audio_only", "modality", .400)):
        for corpus in ("demo_en", "demo_ru"):
            rows.append({"study": study, "setting": setting, "corpus": corpus, "n_seeds": 3,
                         **{m: war for m in ("uar", "war", "mf1", "wf1", "mean")},
                         **{f"{m}_ci95": .01 for m in ("uar", "war", "mf1", "wf1", "mean")}})
    return pd.DataFrame(rows)


def test_study_markdown_flags_differences_within_a_few_test_clips():
    md = study_report.study_markdown(_study(), {"demo_en": 112, "demo_ru": 112})
    lines = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| ")}
    assert "within 3 test clips" in lines["BiFormer + TUG (0.5)"]  # 1.5 points = 1.7 clips of 112
    assert "within" not in lines["BiFormer + SDS (1.0)"] and "overlap" not in lines["BiFormer + SDS (1.0)"]
    assert "70.0 ± 1.0" in lines["BiFormer"] and "reference" in lines["BiFormer"]
    assert "synthetic demo" in md and "3 seed(s)" in md


def test_paper_table_shows_a_dash_not_none():
    from bber_utils.study import design
    from bber_utils.study import readme as study_readme
    from bber_utils.study import report as study_report
    view = study_report.paper_table_view(design.paper_table(pd.DataFrame(
        [{"run": "r", "corpus": "meld", "split": s, "uar": .4, "war": .4, "mf1": .4, "wf1": .4, "mean": .4}
         for s in ("dev", "test")])))
    resd = view[view["corpus"] == "resd"]
    assert (resd["ours (test, %)"] == "–").all() and (resd["ours: best run by dev"] == "–").all()
    assert not view.isna().any().any()


def test_figures_are_byte_identical_for_the_same_numbers(tmp_path):
    hist = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, .8, .7], "dev_mean": [.3, .5, .4]})
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plots.learning_curves(hist, title="t", save_to=a)
    plots.learning_curves(hist, title="t", save_to=b)
    assert a.read_bytes() == b.read_bytes()
    assert b"Matplotlib" not in a.read_bytes(), "software metadata makes PNGs differ between versions"


def test_learning_curves_mark_the_best_epoch_and_label_units():
    hist = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, .8, .7], "dev_mean": [.3, .5, .4]})
    fig = plots.learning_curves(hist)
    for ax in fig.axes:
        assert ax.get_ylabel() and "(" in ax.get_ylabel() and ax.get_xlabel() == "epoch"
        assert any("best dev epoch (2)" in t.get_text() for t in ax.get_legend().get_texts())


def test_publish_only_from_the_default_workdir(tmp_path):
    assert study_readme.is_default_workdir(REPO_ROOT / "runs" / "demo", "demo")
    assert not study_readme.is_default_workdir(tmp_path, "demo")


def test_publish_leaves_unchanged_files_alone(tmp_path):
    (tmp_path / "README.md").write_text(f"{study_readme.BEGIN}\n{study_readme.END}\n", encoding="utf-8")
    src = _write(tmp_path / "08_study_table.md", "| t |\n")
    fig = tmp_path / "08_x.png"
    fig.write_bytes(b"png")
    out = study_readme.publish([src, fig], tmp_path)
    stamp = (out / "x.png").stat().st_mtime_ns
    study_readme.publish([src, fig], tmp_path)
    assert (out / "x.png").stat().st_mtime_ns == stamp and (out / "study_table.md").exists()
    assert study_readme.readme_block(tmp_path / "README.md") == "| t |"


def test_walkthrough_traces_shapes_and_metrics():
    from bber_utils.notebook import walkthrough
    from bber_utils.models import build_model

    model = build_model("bigraphformer", {"hidden_dim": 16, "num_heads": 2, "num_layers": 1, "mamba_layers": 1,
                                          "out_features": 8}, 10, 12)
    trace = walkthrough.shape_trace(model, walkthrough.example_batch(10, 12))
    out = dict(zip(trace["module"], trace["output"]))
    assert out["(model)"] == "(2, 7)" and out["cross"] == "(2, 48, 16), (2, 11, 16)" and "graph" in out
    m = walkthrough.metrics_example()
    bal, imb = m.iloc[0], m.iloc[1]
    assert bal["uar"] == bal["war"] and bal["mf1"] == bal["wf1"]
    assert imb["war"] > imb["uar"] + 30  # MELD's gap: WAR/WF1 high, UAR low
    ex = walkthrough.validator_examples()
    assert {"ok", "repaired", "rejected"} <= set(ex["status"])
    assert set(walkthrough.FUSION_GLOSSARY) >= {"biformer", "bigraphformer", "bimamba", "predictions_fusion"}


def test_ratio_explorer_shows_the_mix_and_follows_the_slider():
    pytest.importorskip("ipywidgets")
    from bber_utils.notebook import widgets

    seen = []
    box = widgets.ratio_explorer(lambda r: seen.append(r) or pd.DataFrame({"rows": [round(100 * r)]}), 0.5)
    slider = box.children[0]
    slider.value = 0.8
    assert seen == [0.5, 0.8] and not math.isnan(slider.value)


def test_convergence_table_says_whether_early_stopping_or_the_cap_ended_a_run():
    import pandas as pd

    from bber_utils.notebook import walkthrough

    rising = pd.DataFrame({"epoch": range(10), "dev_mean": [0.1 * i for i in range(10)]})
    flat = pd.DataFrame({"epoch": range(8), "dev_mean": [0.1, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]})
    table = walkthrough.convergence_table({"rising": rising, "flat": flat}, {"rising": 10, "flat": 10})
    assert table.loc["rising", "ended by"] == "the epoch cap"
    assert table.loc["flat", "ended by"] == "early stopping (cap 10)"
    gain = table["gain in the last 5 epochs"]
    assert gain["rising"] > 0.4 and gain["flat"] == 0
    assert "ended by" not in walkthrough.convergence_table({"flat": flat}).columns


def _paired_study():
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


def test_findings_are_computed_seed_by_seed_and_name_the_control():
    from bber_utils.study import findings

    study = _paired_study()
    questions = [(q, a[1], b[1]) for q, a, b in findings.study_comparisons(study)]
    assert ("what fusion adds", "biformer", "audio_only") in questions
    assert ("synthetic emotional rows or just more rows", "+tug_ratio=0.5", "+sds_ratio=1.0") in questions
    table = findings.study_findings(study, {"c": 100}).set_index("comparison")
    fusion = table.loc["BiFormer − audio only"]
    assert fusion["diff_pts"] == 20.0 and fusion["seeds_ahead"] == 3 and fusion["verdict"] == "better"
    assert study.set_index("setting").loc["biformer", "war_ci95"] > 0.10  # the unpaired intervals overlap
    control = table.loc["BiFormer + TUG (0.5) − BiFormer + SDS (1.0)"]
    assert control["diff_pts"] == -1.0 and control["verdict"] == "within 3 test clips"
    text = findings.conclusions_markdown(findings.study_findings(study, {"c": 100}))
    assert "**What fusion adds.** BiFormer − audio only: c +20.0 points, ahead on 3 of 3 seeds, a finding" in text
    assert "not a finding (within 3 test clips)" in text
    report = findings.study_report(study, {"c": 100})
    assert report.startswith("| study | setting |") and "**Findings**" in report and "+20.0 (3/3 seeds ahead" in report


def test_findings_forest_plots_each_difference_with_its_interval(tmp_path):
    from bber_utils.study import findings

    table = findings.study_findings(_paired_study(), {"c": 100})
    fig = plots.findings_forest(table, {"c": 3.0}, save_to=tmp_path / "f.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(table["comparison"])
    points = ax.containers[0].lines[0]  # the errorbar's markers, one per comparison of corpus "c"
    assert list(points.get_xdata()) == table["diff_pts"].tolist()
    left, right = (cap.get_xdata() for cap in ax.containers[0].lines[1])  # the interval ends
    ci = table["diff_ci95"].fillna(0)
    assert list(left) == pytest.approx((table["diff_pts"] - ci).tolist())
    assert list(right) == pytest.approx((table["diff_pts"] + ci).tolist())
    assert "percentage points" in ax.get_xlabel() and (tmp_path / "f.png").stat().st_size > 5000
