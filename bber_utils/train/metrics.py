"""UAR, WAR, MF1, WF1 over a corpus's label set (the seven classes unless the corpus declares fewer).

The label set is fixed (all seven classes, ``labels=range(7)``, or the corpus's own ``classes``): a class of the
set absent from both ``y_true`` and ``y_pred`` still counts in the macro averages with recall/F1 0
(``zero_division=0``). The reference lets such classes drop out of the averages, which inflates scores on small or
skewed splits (tests/train/test_metrics.py). A prediction outside the set is a wrong prediction. ``allowed``
(the classes the model may predict: those of its training corpora) restricts the argmax of ``score_logits``.

WAR is recall weighted by support, which equals plain accuracy; it is kept under its paper name.

Owns: ``score``, ``score_logits``, ``mean_over_corpora``, ``METRIC_NAMES``.
Must not import: any other module of ``bber_utils.train`` (scores are pure functions of labels).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bber_utils.core.labels import CLASSES, NUM_CLASSES

METRIC_NAMES: tuple[str, ...] = ("uar", "war", "mf1", "wf1")


def score(y_true, y_pred, classes=None) -> dict[str, Any]:
    """Score integer class predictions.

    Args:
        y_true: (N,) true class indices in ``labels.CLASSES`` order.
        y_pred: (N,) predicted class indices.
        classes: the label set averaged over (class indices; None = all seven).

    Returns:
        ``{"uar", "war", "mf1", "wf1", "mean"}`` as floats in [0, 1] (``mean`` = their average) and
        ``"confusion"``: a 7x7 list of ints, rows = true class, columns = predicted class; with a label set of
        fewer than seven classes also ``"classes"``: their names.

    The numbers are scikit-learn's ``recall_score`` / ``f1_score`` (``labels`` = the label set,
    ``zero_division=0``, macro and weighted) to the last bit — the same counts, divisions and averages, without its
    input checks, which cost more than the model's evaluation on a small dev set (every epoch scores dev);
    tests/train/test_metrics.py compares them on random and edge cases.
    """
    y_true = np.asarray(y_true, dtype=int).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=int).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"score: y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    subset = classes is not None and len(set(classes)) < NUM_CLASSES
    labels = sorted(set(int(c) for c in classes)) if subset else list(range(NUM_CLASSES))
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
        return _with_classes(out, labels, subset)
    tp, true, pred = (np.diag(confusion)[labels], confusion.sum(axis=1)[labels], confusion.sum(axis=0)[labels])
    recall = _divide(tp.astype(np.float64), true)
    f1 = _divide(2.0 * tp.astype(np.float64), 1.0 * true.astype(np.float64) + pred.astype(np.float64))
    weighted = (lambda v: float(np.average(v, weights=true))) if true.sum() else (lambda v: 0.0)
    out = {
        "uar": float(np.nanmean(recall)),
        "war": weighted(recall),
        "mf1": float(np.nanmean(f1)),
        "wf1": weighted(f1),
    }
    out["mean"] = float(np.mean([out[m] for m in METRIC_NAMES]))
    out["confusion"] = confusion.astype(int).tolist()
    return _with_classes(out, labels, subset)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` in float64, 0 where the denominator is 0 (scikit-learn's ``_prf_divide`` with
    ``zero_division=0``)."""
    mask = denominator == 0
    denominator = np.array(denominator, dtype=np.float64)
    denominator[mask] = 1
    result = np.asarray(numerator, dtype=np.float64) / denominator
    result[mask] = 0.0
    return result


def _with_classes(out: dict[str, Any], labels: list[int], subset: bool) -> dict[str, Any]:
    if subset:
        out["classes"] = [CLASSES[i] for i in labels]
    return out


def masked_argmax(logits, allowed=None) -> np.ndarray:
    """``argmax`` of ``logits`` (N, 7) over the ``allowed`` class indices only (None = all)."""
    logits = np.asarray(logits)
    if not logits.size:
        return np.zeros(0, dtype=int)
    if allowed is None or len(set(allowed)) == NUM_CLASSES:
        return logits.argmax(axis=-1)
    allowed = np.array(sorted(set(int(c) for c in allowed)))
    return allowed[logits[:, allowed].argmax(axis=-1)]


def score_logits(y_true, logits, allowed=None, classes=None) -> dict[str, Any]:
    """``score`` over ``classes`` of the argmax of ``logits`` (N, 7) over the ``allowed`` classes."""
    return score(y_true, masked_argmax(logits, allowed), classes)


def mean_over_corpora(per_corpus: dict[str, dict[str, Any]], key: str = "mean") -> float:
    """The selection score: the average over corpora of each corpus's ``key`` (default: its 4-metric mean)."""
    if not per_corpus:
        raise ValueError("mean_over_corpora: no corpus scores to average")
    return float(np.mean([s[key] for s in per_corpus.values()]))
