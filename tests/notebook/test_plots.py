"""The figures: byte-identical for the same numbers, labelled axes and units, the findings forest."""

from __future__ import annotations

import pandas as pd
import pytest
from bber_utils.study import registry as study_registry
from bber_utils.study import stats
# ------------------------------------------------------------------------------ sweep values (issue 25)
from bber_utils.notebook import plots
from tests.study.common import paired_study, write_run



def test_result_figures_are_written(tmp_path):
    from bber_utils.notebook import plots

    for seed, v in [(1, .5), (2, .7)]:
        write_run(tmp_path, f"b{seed}", {"model": "biformer", "seed": seed}, {("x", "test"): v, ("y", "test"): .4})
    s = stats.summarize(study_registry.load_registry(tmp_path), ["model"])
    fig = plots.metric_bars(s, "model", "wf1", save_to=tmp_path / "bars.png")
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [40.0, 60.0] and (tmp_path / "bars.png").stat().st_size > 1000
    plots.confusion_matrices({"x": [[1] * 7] * 7}, save_to=tmp_path / "cm.png")
    assert (tmp_path / "cm.png").exists()



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


def test_findings_forest_plots_each_difference_with_its_interval(tmp_path):
    from bber_utils.study import findings

    table = findings.study_findings(paired_study(), {"c": 100})
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


def test_a_confusion_figure_shows_the_corpus_own_classes():
    """A three-class corpus's 7x7 confusion (the other classes never true, never predicted) is drawn over its
    three classes; a seven-class one over seven; an explicit label set wins."""
    import numpy as np

    from bber_utils.core.labels import CLASSES

    cm = np.zeros((7, 7), int)
    own = [CLASSES.index(c) for c in ("neutral", "anger", "fear")]
    cm[np.ix_(own, own)] = [[5, 1, 0], [2, 3, 1], [4, 0, 2]]
    fig = plots.confusion_matrices({"pl": cm.tolist(), "demo": np.ones((7, 7), int).tolist()})
    labels = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    assert labels[0] == ["neutral", "anger", "fear"] and labels[1] == list(CLASSES)
    fig = plots.confusion_matrices({"pl": cm.tolist()}, classes={"pl": ["neutral", "anger", "fear", "sad"]})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["neutral", "sad", "anger", "fear"]
