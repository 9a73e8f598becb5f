"""bber_utils.train.metrics: scores over a fixed label set (all seven classes, or a corpus's own), scikit-learn's to the last bit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bber_utils.core.labels import CLASSES
from bber_utils.train.metrics import mean_over_corpora, score, score_logits


def test_perfect_predictions_on_all_classes_score_one():
    y = np.arange(7).repeat(3)
    s = score(y, y)
    for k in ("uar", "war", "mf1", "wf1", "mean"):
        assert s[k] == pytest.approx(1.0)
    assert np.array_equal(np.array(s["confusion"]), np.diag([3] * 7))


def test_absent_classes_count_in_macro_averages():
    # Only classes 0 and 1 occur; both perfectly predicted. The reference (labels not fixed) reports UAR 1.0;
    # with all 7 classes fixed, the 5 absent classes count with recall 0.
    y = np.array([0, 0, 1, 1])
    s = score(y, y)
    assert s["uar"] == pytest.approx(2 / 7)
    assert s["mf1"] == pytest.approx(2 / 7)
    assert s["war"] == pytest.approx(1.0)  # support-weighted: absent classes weigh 0
    assert s["wf1"] == pytest.approx(1.0)
    assert s["mean"] == pytest.approx((2 / 7 + 2 / 7 + 1 + 1) / 4)


def test_known_values_and_confusion_orientation():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 1, 0]
    s = score(y_true, y_pred)
    # recalls: class0 1/3, class1 1, class2 0 -> macro over 7
    assert s["uar"] == pytest.approx((1 / 3 + 1) / 7)
    assert s["war"] == pytest.approx(3 / 6)  # accuracy
    conf = np.array(s["confusion"])
    assert conf.shape == (7, 7)
    assert conf[0, 1] == 2 and conf[2, 0] == 1 and conf.sum() == 6  # rows = truth


def test_score_logits_uses_argmax():
    logits = np.eye(7)[[3, 4]] * 5
    s = score_logits([3, 0], logits)
    assert s["war"] == pytest.approx(0.5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="y_pred\\[1\\] = 7"):
        score([0, 1], [0, 7])
    with pytest.raises(ValueError, match="2 labels"):
        score([0, 1], [0])


def test_mean_over_corpora():
    assert mean_over_corpora({"a": {"mean": 0.2}, "b": {"mean": 0.6}}) == pytest.approx(0.4)


def test_a_corpus_is_scored_over_its_own_label_set():
    """Three classes (neutral, anger, fear), 30 clips each: averaged over the seven classes the UAR was 3/7 of
    the truth (the issue's 24.3 against 56.7); over the corpus's own classes it is the truth."""
    from bber_utils.core.labels import CLASSES

    own = [CLASSES.index(c) for c in ("neutral", "anger", "fear")]
    y = np.repeat(own, 30)
    pred = y.copy()
    pred[30:45] = own[0]  # half of anger predicted neutral
    pred[60:90] = own[0]  # every fear clip predicted neutral
    s = score(y, pred, classes=own)
    assert s["uar"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert s["war"] == pytest.approx(45 / 90)
    assert s["classes"] == ["neutral", "anger", "fear"]
    assert np.asarray(s["confusion"]).shape == (7, 7)
    assert score(y, pred)["uar"] == pytest.approx(1.5 / 7)  # the seven-class average (no label set)
    assert "classes" not in score(y, pred, classes=range(7))


def test_logits_of_classes_outside_the_allowed_set_are_never_predicted():
    from bber_utils.train.metrics import masked_argmax

    logits = np.zeros((4, 7), np.float32)
    logits[:, 1] = 5.0  # "happy" is the argmax of every row, but no training corpus has it
    logits[np.arange(4), [0, 3, 6, 3]] = 1.0
    assert masked_argmax(logits, (0, 3, 6)).tolist() == [0, 3, 6, 3]
    assert masked_argmax(logits).tolist() == [1, 1, 1, 1]
    s = score_logits(np.array([0, 3, 6, 3]), logits, allowed=(0, 3, 6), classes=(0, 3, 6))
    assert s["uar"] == 1.0


def _sklearn_score(y_true, y_pred, labels=None) -> dict:
    import warnings

    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    kw = dict(labels=sorted(labels) if labels else list(range(7)), zero_division=0)
    warnings.simplefilter("ignore")  # scikit-learn warns where a weighted average has no support
    out = {"uar": float(recall_score(y_true, y_pred, average="macro", **kw)),
           "war": float(recall_score(y_true, y_pred, average="weighted", **kw)),
           "mf1": float(f1_score(y_true, y_pred, average="macro", **kw)),
           "wf1": float(f1_score(y_true, y_pred, average="weighted", **kw))}
    out["mean"] = float(np.mean([out[m] for m in ("uar", "war", "mf1", "wf1")]))
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=list(range(7))).astype(int).tolist()
    if labels and len(labels) < 7:
        out["classes"] = [CLASSES[i] for i in sorted(labels)]
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=300))
def test_scores_are_scikit_learns_to_the_last_bit(pairs):
    """Every epoch scores dev: ``score`` computes what scikit-learn's recall_score / f1_score give, bit for bit
    (early stopping compares these numbers, so any last-bit difference could change a run)."""
    y_true, y_pred = (np.array(v) for v in zip(*pairs))
    assert score(y_true, y_pred) == _sklearn_score(y_true, y_pred)


@pytest.mark.parametrize("y_true, y_pred", [([3] * 40, [3] * 40), ([0, 1, 2], [4, 5, 6]), (list(range(7)) * 16,
                                                                                         [0] * 112)])
def test_scores_match_scikit_learn_on_edge_cases(y_true, y_pred):
    assert score(y_true, y_pred) == _sklearn_score(y_true, y_pred)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=200),
       st.sets(st.integers(0, 6), min_size=2, max_size=6))
def test_scores_over_a_label_set_are_scikit_learns_to_the_last_bit(pairs, labels):
    """The same over a corpus's label set (``labels`` = its classes), whatever the rows outside it."""
    y_true, y_pred = (np.array(v) for v in zip(*pairs))
    assert score(y_true, y_pred, classes=labels) == _sklearn_score(y_true, y_pred, labels)
