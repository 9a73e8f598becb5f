"""bber_utils.train.metrics: the label set is fixed to all 7 classes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _sklearn_score(y_true, y_pred) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    kw = dict(labels=list(range(7)), zero_division=0)
    out = {"uar": float(recall_score(y_true, y_pred, average="macro", **kw)),
           "war": float(recall_score(y_true, y_pred, average="weighted", **kw)),
           "mf1": float(f1_score(y_true, y_pred, average="macro", **kw)),
           "wf1": float(f1_score(y_true, y_pred, average="weighted", **kw))}
    out["mean"] = float(np.mean([out[m] for m in ("uar", "war", "mf1", "wf1")]))
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=list(range(7))).astype(int).tolist()
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
