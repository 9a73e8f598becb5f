"""UAR, WAR, MF1, WF1 over the seven classes, as the paper reports them.

The label set is fixed to all seven classes (``labels=range(7)``): a class absent from both ``y_true`` and
``y_pred`` still counts in the macro averages with recall/F1 0 (``zero_division=0``). The reference lets such
classes drop out of the averages, which inflates scores on small or skewed splits (tests/train/test_metrics.py).

WAR is recall weighted by support, which equals plain accuracy; it is kept under its paper name.

Owns: ``score``, ``score_logits``, ``mean_over_corpora``, ``METRIC_NAMES``.
Must not import: any other module of ``bber_utils.train`` (scores are pure functions of labels).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bber_utils.core.labels import NUM_CLASSES

METRIC_NAMES: tuple[str, ...] = ("uar", "war", "mf1", "wf1")


def score(y_true, y_pred) -> dict[str, Any]:
    """Score integer class predictions.

    Args:
        y_true: (N,) true class indices in ``labels.CLASSES`` order.
        y_pred: (N,) predicted class indices.

    Returns:
        ``{"uar", "war", "mf1", "wf1", "mean"}`` as floats in [0, 1] (``mean`` = their average) and
        ``"confusion"``: a 7x7 list of ints, rows = true class, columns = predicted class.

    The numbers are scikit-learn's ``recall_score`` / ``f1_score`` (``labels=range(7)``, ``zero_division=0``,
    macro and weighted) to the last bit — the same counts, divisions and averages, without its input checks,
    which cost more than the model's evaluation on a small dev set (every epoch scores dev);
    tests/train/test_metrics.py compares them on random and edge cases.
    """
    y_true = np.asarray(y_true, dtype=int).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=int).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"score: y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        bad = (arr < 0) | (arr >= NUM_CLASSES)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"score: {name}[{i}] = {arr[i]} is not a class index 0..{NUM_CLASSES - 1}")
    confusion = np.bincount(y_true * NUM_CLASSES + y_pred, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES,
                                                                                            NUM_CLASSES)
    if y_true.size == 0:
        out = {m: 0.0 for m in METRIC_NAMES}
        out["mean"] = 0.0
        out["confusion"] = confusion.astype(int).tolist()
        return out
    tp, true, pred = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    recall = _divide(tp.astype(np.float64), true)
    f1 = _divide(2.0 * tp.astype(np.float64), 1.0 * true.astype(np.float64) + pred.astype(np.float64))
    out = {
        "uar": float(np.nanmean(recall)),
        "war": float(np.average(recall, weights=true)),
        "mf1": float(np.nanmean(f1)),
        "wf1": float(np.average(f1, weights=true)),
    }
    out["mean"] = float(np.mean([out[m] for m in METRIC_NAMES]))
    out["confusion"] = confusion.astype(int).tolist()
    return out


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` in float64, 0 where the denominator is 0 (scikit-learn's ``_prf_divide`` with
    ``zero_division=0``)."""
    mask = denominator == 0
    denominator = np.array(denominator, dtype=np.float64)
    denominator[mask] = 1
    result = np.asarray(numerator, dtype=np.float64) / denominator
    result[mask] = 0.0
    return result


def score_logits(y_true, logits) -> dict[str, Any]:
    """``score`` of the argmax of ``logits`` (N, 7)."""
    logits = np.asarray(logits)
    return score(y_true, logits.argmax(axis=-1) if logits.size else np.zeros(0, dtype=int))


def mean_over_corpora(per_corpus: dict[str, dict[str, Any]], key: str = "mean") -> float:
    """The selection score: the average over corpora of each corpus's ``key`` (default: its 4-metric mean)."""
    if not per_corpus:
        raise ValueError("mean_over_corpora: no corpus scores to average")
    return float(np.mean([s[key] for s in per_corpus.values()]))
