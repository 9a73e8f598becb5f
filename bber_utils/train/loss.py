"""The loss: balanced class weights and the soft-target cross-entropy, each sample
weighted by its true class's weight, ``w[y] * CE(p, q)`` (so the weights never move a soft target's argmax).

Owns: ``class_weights``, ``soft_cross_entropy``, ``soft_cross_entropy_parts``.
Must not import: any other module of ``bber_utils.train``.
"""

from __future__ import annotations

import warnings

import numpy as np

from bber_utils.core.labels import CLASSES, NUM_CLASSES

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


def class_weights(labels: np.ndarray, allowed=None) -> np.ndarray:
    """Balanced class weights ``N / (7 * n_c)`` (scikit-learn's "balanced") from the train labels, (7,).

    A class absent from train gets weight 1.0 (never 0, which would silently drop soft-target mass on it) and
    a warning naming it, unless it is outside ``allowed`` (the classes of the training corpora' label sets: the
    model never predicts the others).
    """
    labels = np.asarray(labels, dtype=int)
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    if len(labels) == 0:
        raise ValueError("class_weights: no training labels")
    w = np.ones(NUM_CLASSES, dtype=np.float64)
    present = counts > 0
    w[present] = len(labels) / (NUM_CLASSES * counts[present])
    expected = np.zeros(NUM_CLASSES, bool)
    expected[list(range(NUM_CLASSES)) if allowed is None else list(allowed)] = True
    if not present[expected].all():
        absent = [CLASSES[i] for i in np.flatnonzero(~present & expected)]
        warnings.warn(f"classes absent from the training data: {absent}; they get weight 1.0", stacklevel=2)
    return w.astype(np.float32)


def soft_cross_entropy(logits, target, weight=None, labels=None, allowed=None):
    """Soft-target cross-entropy, each sample weighted by its true class's weight.

    ``loss = sum_i s_i CE(p_i, q_i) / sum_i s_i`` with ``CE(p, q) = -sum_c q_c log p_c``, ``s_i = w[y_i] ·
    sum_c q_ic`` (``sum_c q_ic`` is 1 for a real sample and 0 for a padding sample of distributed training).
    ``logits`` (B, 7), ``target`` (B, 7) rows summing to 1 (or 0), ``weight`` (7,), ``labels`` (B,) the true
    classes (needed with ``weight``). For one-hot targets this equals ``F.cross_entropy(logits, y, weight=w)``
    (weighted mean). The weight multiplies the whole per-sample loss, never the target: the optimum of each
    sample's term stays at ``p = q`` (weighting the target, ``w ⊙ q``, as before, moved it to ``p ∝ w ⊙ q``
    and could put a valid LS-LLM target's optimum on another class). ``allowed`` (class indices): the softmax
    runs over these classes only (the logits of the others are masked; targets must put no mass on them).
    """
    numerator, denominator = soft_cross_entropy_parts(logits, target, weight, labels, allowed)
    return numerator / denominator.clamp_min(1e-12)


def soft_cross_entropy_parts(logits, target, weight=None, labels=None, allowed=None):
    """``(sum_i s_i CE(p_i, q_i), sum_i s_i)``: the two sums of ``soft_cross_entropy``.

    Distributed training divides each rank's numerator by the denominator summed over all ranks, so the
    all-reduced gradient is the one of the whole global batch."""
    import torch

    logits, q = logits.float(), target.float()
    if allowed is not None and len(allowed) < NUM_CLASSES:  # masked classes: out of the softmax, no gradient
        cols = torch.as_tensor(sorted(allowed), device=logits.device, dtype=torch.long)
        s_all = q.sum(dim=-1)
        logits, q = logits[:, cols], q[:, cols]
        if bool(((q.sum(dim=-1) - s_all).abs() > 1e-4).any()):
            raise ValueError("soft_cross_entropy: a target puts mass on a masked class (a class outside the "
                             "training corpora' label sets)")
    logp = torch.log_softmax(logits, dim=-1)
    per_sample = -(q * logp).sum(dim=-1)                                  # (B,) CE(p_i, q_i)
    s = q.sum(dim=-1)                                                     # (B,) 1 real, 0 padding
    if weight is not None:
        if labels is None:
            raise ValueError("soft_cross_entropy: class weights need the true labels (labels=(B,) class ids)")
        s = s * weight.to(q.device, q.dtype)[torch.as_tensor(labels, device=q.device).long()]
    return (s * per_sample).sum(), s.sum()
