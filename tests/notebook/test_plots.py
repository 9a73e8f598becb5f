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


# ------------------------------------------------------------------------------ the figures of 01-06
def _data_figures():
    """(name, call) for every data figure of notebooks 01-05 and the model figures of 06, on small tables."""
    import numpy as np

    from bber_utils.core.labels import CLASSES

    counts = pd.DataFrame([{"corpus": "demo_en", "language": "en", "split": s, **{c: n for c in CLASSES}}
                           for s, n in (("train", 4), ("test", 2))])
    utts = pd.DataFrame({"corpus": ["demo_en"] * 3 + ["demo_ru"] * 3, "language": ["en"] * 3 + ["ru"] * 3,
                         "duration_s": [1.0, 3.0, 5.0, 2.0, 4.5, 6.0]})
    coords = pd.DataFrame({"modality": ["audio"] * 7 + ["text"] * 7, "encoder": ["logmel"] * 7 + ["e5"] * 7,
                           "label": list(CLASSES) * 2, "language": (["en", "ru"] * 7)[:14],
                           "pc1": np.arange(14.0), "pc2": np.arange(14.0) % 3, "pc1_share": .3, "pc2_share": .1})
    sds = {"demo_en": pd.DataFrame({"source": ["original", "original", "sds"], "duration_s": [1.0, 2.0, 6.0]})}
    tug = pd.DataFrame({"language": ["en", "en", "ru"], "label": ["sad", "anger", "sad"],
                        "duration_s": [5.0, 3.0, 4.0], "text": ["a b c d e", "a b c d e f", "a b c d e f g"]})
    mean = pd.DataFrame(np.eye(7) * .7 + .05, index=CLASSES, columns=CLASSES)
    examples = pd.DataFrame([{"utt_id": "u1", "label": "sad", **{c: 1 / 7 for c in CLASSES}}])
    from bber_utils.notebook import walkthrough

    nodes = pd.DataFrame({"modality": ["audio", "text"], "summarises": ["mean of all audio steps",
                                                                         "mean of all text steps"]})
    edges = pd.DataFrame({"from": [0, 1, 0, 1], "to": [1, 0, 0, 1], "edge": ["a", "a", "self", "self"]})
    return [
        ("class_counts", lambda tag, out: plots.class_counts(counts, tag=tag, save_to=out)),
        ("durations", lambda tag, out: plots.durations(utts, 4.0, tag=tag, save_to=out)),
        ("sequence_lengths", lambda tag, out: plots.sequence_lengths(
            pd.DataFrame({"audio frames": [100, 200], "text steps": [5, 9]}), tag=tag, save_to=out)),
        ("feature_frames", lambda tag, out: plots.feature_frames(np.zeros((50, 80)), "u1", tag=tag, save_to=out)),
        ("pca_scatter", lambda tag, out: plots.pca_scatter(coords, tag=tag, save_to=out)),
        ("sds_durations", lambda tag, out: plots.sds_durations(sds, tag=tag, save_to=out)),
        ("waveform", lambda tag, out: plots.waveform(np.zeros(1600), 16000, [0.05], "m = a + b", tag=tag,
                                                     save_to=out)),
        ("tug_corpus", lambda tag, out: plots.tug_corpus(tug, tag=tag, save_to=out)),
        ("mean_soft_labels", lambda tag, out: plots.mean_soft_labels(mean, "lexicon", tag=tag, save_to=out)),
        ("soft_label_entropy", lambda tag, out: plots.soft_label_entropy(
            pd.Series([.5, 1.0, 1.2]), pd.Series(["a", "a", "b"]), tag=tag, save_to=out)),
        ("soft_label_examples", lambda tag, out: plots.soft_label_examples(examples, tag=tag, save_to=out)),
        ("cross_attention", lambda tag, out: plots.cross_attention(np.full((4, 3), 1 / 3), ["(sentence)", "a", "b"],
                                                                   0.08, "u1", tag=tag, save_to=out)),
        ("gate_values", lambda tag, out: plots.gate_values(np.linspace(.2, .8, 8), "gate", tag=tag, save_to=out)),
        ("modality_graph", lambda tag, out: plots.modality_graph(nodes, edges, "graph", tag=tag, save_to=out)),
        ("probability_bars", lambda tag, out: plots.probability_bars(pd.DataFrame(
            [{"path": "x.wav", "label": "sad", "text": "t", "error": None,
              **{f"{s}_{c}": 1 / 7 for s in ("audio", "text", "fused") for c in CLASSES}}]), tag=tag, save_to=out)),
    ], walkthrough


@pytest.mark.parametrize("index", range(15))
def test_every_data_figure_labels_its_axes_with_units_and_says_synthetic_demo(tmp_path, index):
    import matplotlib.pyplot as plt

    figures, _ = _data_figures()
    name, draw = figures[index]
    fig = draw(plots.SYNTHETIC_TAG, tmp_path / f"{name}.png")
    titles = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
    assert any("synthetic demo" in t for t in titles), (name, titles)
    drawn = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
    bars = " ".join(ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>")
    for ax in drawn:
        assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())
        # a unit in brackets on an axis, or (class by class heat maps) on the colour bar
        assert "(" in ax.get_ylabel() + ax.get_xlabel() + bars, (name, "no unit")
    assert (tmp_path / f"{name}.png").stat().st_size > 3000
    plain = draw("", None)
    assert not any("synthetic" in t for t in [ax.get_title() for ax in plain.axes]), name
    plt.close("all")


def test_synthetic_tag_only_for_the_demo_corpus(tmp_path):
    from bber_utils.core.paths import run_dirs

    manifests = run_dirs(tmp_path / "wd").manifests
    manifests.mkdir(parents=True, exist_ok=True)
    assert plots.synthetic_tag(tmp_path / "wd") == ""
    (manifests / "demo_en_train.parquet").write_bytes(b"")
    assert plots.synthetic_tag(tmp_path / "wd") == " — synthetic demo"
    (manifests / "meld_train.parquet").write_bytes(b"")
    assert plots.synthetic_tag(tmp_path / "wd") == ""


def test_the_architecture_figure_shows_encoders_fusion_and_head(tmp_path):
    fig = plots.architecture(save_to=tmp_path / "a.png")
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for needle in ("audio encoder", "text encoder", "cross-modal layers", "fusion", "head", "(B, 7)", "stage 1"):
        assert needle in texts, needle
    again = tmp_path / "b.png"
    plots.architecture(save_to=again)
    assert again.read_bytes() == (tmp_path / "a.png").read_bytes()


def test_the_repository_architecture_figure_is_the_one_the_package_draws(tmp_path):
    """figures/architecture.png (README) is exactly what ``plots.architecture()`` draws, not a hand-made picture."""
    from bber_utils.core.paths import REPO_ROOT

    plots.architecture(save_to=tmp_path / "a.png")
    assert (REPO_ROOT / "figures" / "architecture.png").read_bytes() == (tmp_path / "a.png").read_bytes()


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
