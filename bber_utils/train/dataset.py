"""The training data: ``EmotionDataset`` over a manifest and two feature stores,
padding, collation and the cached-encoding datasets of stage 2.

``EmotionDataset`` pairs each manifest row with its audio ``(Ta, Da)`` and text ``(Tt, Dt)`` features. Rows whose
features are missing or empty are skipped and counted (``dataset.skipped``), never silently dropped.

Targets (``item["target"]``, a distribution over the 7 classes):

* one-hot of the true label, smoothed uniformly by ``label_smoothing`` (the plain baseline);
* LS-LLM: for a fraction ``ls_llm_p`` of the samples the LLM's distribution is the target instead. The draw is
  per sample, seeded by ``(seed, epoch)``: the same epoch always gets the same draw (so a resumed run matches an
  uninterrupted one), a new epoch a new draw. Samples without a soft label fall back to one-hot and are counted
  (``dataset.soft_missing``). The loss uses the whole distribution, not its argmax (the reference's bug).

With ``allowed`` (the classes of the training corpora' label sets, when fewer than seven) a target puts no mass
outside them: smoothing spreads over the allowed classes, and a soft label is restricted to them and
renormalised. ``classes`` (an evaluation set's corpus label set) is what its scores average over.

``collate`` pads right to the longest sequence of the batch and returns bool masks (True = real frame); any
length >= 1 works.

Owns: ``EmotionDataset``, ``soft_label_table``, ``pool_frames``, ``pad_sequences``, ``collate``,
``collate_encoded``, ``split_encoded``, ``CachedEncodingDataset``, ``PaddedDataset``.
Must not import: any other module of ``bber_utils.train`` (no torch at import time).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bber_utils.augment.ls_llm.replies import TIE
from bber_utils.core.labels import CLASSES, NUM_CLASSES, label_index

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


log = logging.getLogger(__name__)

SOFT_SUM_TOLERANCE = 0.02


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(s) for s in stream]])


def soft_label_table(soft: pd.DataFrame | None, where: str = "soft labels") -> dict[str, np.ndarray]:
    """``utt_id -> (7,) float32`` from a table with ``utt_id`` and the 7 class columns.

    Tiny negative values and sums slightly off 1 (artefacts of the reference's LLM post-processing) are clipped
    and renormalised; a row that is far from a distribution raises an error naming it.
    """
    if soft is None or len(soft) == 0:
        return {}
    missing = [c for c in ("utt_id", *CLASSES) if c not in soft.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {missing}")
    probs = soft[list(CLASSES)].to_numpy(dtype=np.float64)
    sums = probs.sum(axis=1)
    bad = ~np.isfinite(probs).all(axis=1) | (np.abs(sums - 1.0) > SOFT_SUM_TOLERANCE) | (probs < -1e-3).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: row {i} (utt_id={soft['utt_id'].iloc[i]!r}) is not a distribution: {probs[i]}")
    probs = np.clip(probs, 0.0, None)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return {str(u): p.astype(np.float32) for u, p in zip(soft["utt_id"].astype(str), probs)}


def stale_soft_labels(soft: pd.DataFrame, labels: Mapping[str, str]) -> np.ndarray:
    """``(len(soft),)`` bool: the rows made for another label than ``labels[utt_id]`` (the manifest's).

    The table's ``label`` column (the true label each row was made for) where it has one; else its
    distribution: a valid LS-LLM target puts its highest value on the true label (``validate_distribution``),
    so a row whose manifest label is below its top value was made for another label. Rows of utterances not in
    ``labels`` are not stale (nothing trains on them).
    """
    ids = soft["utt_id"].astype(str)
    want = ids.map(labels)
    known = want.notna().to_numpy()
    if "label" in soft.columns:
        return known & (soft["label"].astype(str).to_numpy() != want.astype(str).to_numpy())
    probs = soft[list(CLASSES)].to_numpy(dtype=np.float64)
    col = np.array([CLASSES.index(lbl) if lbl in CLASSES else 0 for lbl in want.fillna(CLASSES[0])])
    own = probs[np.arange(len(soft)), col] if len(soft) else np.zeros(0)
    return known & (own < probs.max(axis=1, initial=0.0) - TIE)


def matching_soft_labels(soft: pd.DataFrame | None, manifest: pd.DataFrame,
                         where: str = "soft labels") -> tuple[pd.DataFrame | None, int]:
    """``(soft without its stale rows, how many were stale)`` for the rows of ``manifest``
    (``stale_soft_labels``); those rows fall back to one-hot. One warning line when any is stale."""
    if soft is None or len(soft) == 0:
        return soft, 0
    labels = dict(zip(manifest["utt_id"].astype(str), manifest["label"].astype(str)))
    stale = stale_soft_labels(soft, labels)
    n = int(stale.sum())
    if n:
        first = soft["utt_id"].astype(str).to_numpy()[stale][0]
        warnings.warn(f"{where}: {n} of {int(soft['utt_id'].astype(str).isin(labels).sum())} soft labels were made "
                      f"for another label than the manifest's (e.g. {first!r}: {labels[first]!r} now); they train "
                      f"on one-hot targets (label the data again: bber label)", stacklevel=2)
    return soft.loc[~stale].reset_index(drop=True), n


class EmotionDataset:
    """Manifest rows with their features, labels and training targets.

    Args:
        manifest: rows to serve (``utt_id``, ``corpus``, ``label`` are used).
        audio_store, text_store: ``store[utt_id] -> (T, D)`` arrays (``utt_id in store`` must work).
        soft_labels: optional table (``utt_id`` + 7 class columns) for LS-LLM targets.
        logits: optional ``{"audio": {utt_id: (7,)}, "text": {...}}`` unimodal logits for WithProb / prediction
            fusion; items then carry ``audio_logits`` and ``text_logits``.
        ls_llm_p: fraction of samples that take the soft label as target (per epoch draw).
        label_smoothing: uniform smoothing of the one-hot targets.
        seed: seeds the per-epoch soft-label draw.
        load_features: False serves only labels and targets (used when encoder outputs are cached).
        audio_pool: average the audio frames in windows of this many (the last window may be shorter), e.g.
            4 turns 50 frames/s into 12.5: a 4x shorter sequence for the Mamba scan.

    Item: ``utt_id`` str, ``corpus`` str, ``label`` int, ``target`` (7,) float32, ``has_soft`` bool,
    ``audio`` (Ta, Da) float32, ``text`` (Tt, Dt) float32 and optionally ``audio_logits``/``text_logits`` (7,).
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        audio_store: Mapping | None,
        text_store: Mapping | None,
        soft_labels: pd.DataFrame | Mapping[str, np.ndarray] | None = None,
        logits: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        ls_llm_p: float = 0.0,
        label_smoothing: float = 0.0,
        seed: int = 0,
        load_features: bool = True,
        audio_pool: int = 1,
        name: str = "dataset",
        allowed=None,
        classes=None,
    ):
        if not 0.0 <= ls_llm_p <= 1.0:
            raise ValueError(f"ls_llm_p must be in [0, 1], got {ls_llm_p}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.name = name
        self.audio_store, self.text_store = audio_store, text_store
        self.ls_llm_p, self.label_smoothing, self.seed = float(ls_llm_p), float(label_smoothing), int(seed)
        self.load_features = load_features
        if int(audio_pool) < 1:
            raise ValueError(f"audio_pool must be >= 1, got {audio_pool}")
        self.audio_pool = int(audio_pool)
        self.logits = logits
        self.allowed = None if allowed is None or len(set(allowed)) == NUM_CLASSES else tuple(sorted(allowed))
        self.classes = None if classes is None or len(set(classes)) == NUM_CLASSES else tuple(sorted(classes))
        self.skipped: dict[str, int] = {}
        keep = np.ones(len(manifest), dtype=bool)
        ids = manifest["utt_id"].astype(str).tolist()
        if load_features:
            for i, u in enumerate(ids):
                reason = self._missing_reason(u)
                if reason:
                    keep[i] = False
                    self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if not keep.all():
            warnings.warn(f"{name}: skipped {int((~keep).sum())} of {len(keep)} rows: {self.skipped}", stacklevel=2)
        self.manifest = manifest.loc[keep].reset_index(drop=True)
        self.utt_ids: list[str] = self.manifest["utt_id"].astype(str).tolist()
        self.corpora: list[str] = self.manifest["corpus"].astype(str).tolist()
        self.labels = np.array([label_index(str(lbl)) for lbl in self.manifest["label"]], dtype=np.int64)
        table = soft_labels if isinstance(soft_labels, Mapping) else soft_label_table(soft_labels, name)
        self.soft: dict[str, np.ndarray] = dict(table) if ls_llm_p > 0 else {}
        self.has_soft = np.array([u in self.soft for u in self.utt_ids], dtype=bool)
        self.soft_used = int(self.has_soft.sum())
        self.soft_missing = int((~self.has_soft).sum()) if ls_llm_p > 0 else 0
        self.set_epoch(0)

    def _missing_reason(self, u: str) -> str | None:
        for modality, store in (("audio", self.audio_store), ("text", self.text_store)):
            if store is None:
                continue
            if u not in store:
                return f"no {modality} features"
            if len(store[u]) == 0:
                return f"empty {modality} features"
        if self.logits:
            for modality, table in self.logits.items():
                if u not in table:
                    return f"no {modality} logits"
        return None

    def __len__(self) -> int:
        return len(self.utt_ids)

    def set_epoch(self, epoch: int) -> None:
        """Draw which samples use their soft label this epoch (seeded by ``(seed, epoch)``)."""
        self.epoch = int(epoch)
        if self.ls_llm_p > 0:
            self.use_soft = (_rng(self.seed, 7919, epoch).random(len(self)) < self.ls_llm_p) & self.has_soft
        else:
            self.use_soft = np.zeros(len(self), dtype=bool)

    def target(self, i: int) -> np.ndarray:
        """(7,) float32 target distribution of sample ``i`` this epoch."""
        if self.allowed is not None:
            return self._allowed_target(i)
        if self.use_soft[i]:
            return self.soft[self.utt_ids[i]]
        t = np.full(NUM_CLASSES, self.label_smoothing / NUM_CLASSES, dtype=np.float32)
        t[self.labels[i]] += 1.0 - self.label_smoothing
        return t

    def _allowed_target(self, i: int) -> np.ndarray:
        """The target of sample ``i`` with no mass outside ``allowed``."""
        cols = list(self.allowed)
        t = np.zeros(NUM_CLASSES, dtype=np.float32)
        if self.use_soft[i]:
            soft = self.soft[self.utt_ids[i]][cols]
            if soft.sum() > 0:
                t[cols] = soft / soft.sum()
                return t
        t[cols] = self.label_smoothing / len(cols)
        t[self.labels[i]] += 1.0 - self.label_smoothing
        return t

    def meta(self, i: int) -> dict[str, Any]:
        """Everything of item ``i`` except the features."""
        item = {
            "index": i,
            "utt_id": self.utt_ids[i],
            "corpus": self.corpora[i],
            "label": int(self.labels[i]),
            "target": self.target(i),
            "has_soft": bool(self.use_soft[i]),
        }
        if self.logits:
            for modality, table in self.logits.items():
                item[f"{modality}_logits"] = np.asarray(table[self.utt_ids[i]], dtype=np.float32)
        return item

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.meta(i)
        if self.load_features:
            u = self.utt_ids[i]
            if self.audio_store is not None:
                item["audio"] = pool_frames(np.asarray(self.audio_store[u], dtype=np.float32), self.audio_pool)
            if self.text_store is not None:
                item["text"] = np.asarray(self.text_store[u], dtype=np.float32)
        return item


def pool_frames(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of every ``k`` consecutive frames: (T, D) -> (ceil(T / k), D); the last window may be shorter."""
    if k == 1 or len(x) == 0:
        return x
    n = -(-len(x) // k)
    pad = n * k - len(x)
    sums = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]).reshape(n, k, -1).sum(axis=1)
    counts = np.full((n, 1), k, dtype=x.dtype)
    counts[-1] = k - pad
    return sums / counts


def pad_sequences(seqs: list, pad_value: float = 0.0):
    """Right-pad ``[(T_i, D)]`` to ``(B, T_max, D)``; returns ``(padded, mask (B, T_max) bool)``."""
    import torch

    if not seqs:
        raise ValueError("pad_sequences: empty batch")
    seqs = [torch.as_tensor(s) for s in seqs]
    lengths = [s.shape[0] for s in seqs]
    if min(lengths) < 1:
        raise ValueError("pad_sequences: a sequence has length 0")
    out = seqs[0].new_full((len(seqs), max(lengths), *seqs[0].shape[1:]), pad_value)
    mask = torch.zeros(len(seqs), max(lengths), dtype=torch.bool)
    for b, s in enumerate(seqs):
        out[b, : s.shape[0]] = s
        mask[b, : s.shape[0]] = True
    return out, mask


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: ``audio (B, Ta, Da)``, ``audio_mask (B, Ta) bool``, ``text``, ``text_mask``, ``label (B,)``,
    ``target (B, 7)``, ``has_soft (B,) bool``, ``index (B,)``, ``utt_id``/``corpus`` lists and, when present,
    ``audio_logits``/``text_logits`` (B, 7) and ``encoded`` (see ``collate_encoded``)."""
    import torch

    batch: dict[str, Any] = {
        "utt_id": [it["utt_id"] for it in items],
        "corpus": [it["corpus"] for it in items],
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "target": torch.as_tensor(np.stack([it["target"] for it in items])).float(),
        "has_soft": torch.tensor([it["has_soft"] for it in items], dtype=torch.bool),
    }
    for key in ("audio", "text"):
        if key in items[0]:
            batch[key], batch[f"{key}_mask"] = pad_sequences([it[key] for it in items])
    for key in ("audio_logits", "text_logits"):
        if key in items[0]:
            batch[key] = torch.as_tensor(np.stack([it[key] for it in items])).float()
    if "encoded" in items[0]:
        batch["encoded"] = collate_encoded([it["encoded"] for it in items])
    return batch


def collate_encoded(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Re-batch per-sample encoder outputs (dicts of tensors without the batch dim).

    Tensors of equal shape are stacked; tensors that differ in their first dim (sequences) are right-padded
    with zeros (False for bool masks). Padded positions are covered by the masks the encoder returned.
    """
    import torch

    out: dict[str, Any] = {}
    for key, first in parts[0].items():
        vals = [p[key] for p in parts]
        if not torch.is_tensor(first):
            out[key] = vals
        elif all(v.shape == first.shape for v in vals):
            out[key] = torch.stack(vals)
        else:
            out[key] = pad_sequences(vals, pad_value=False if first.dtype == torch.bool else 0.0)[0]
    return out


def split_encoded(encoded: dict[str, Any], batch_size: int) -> list[dict[str, Any]]:
    """Inverse of ``collate_encoded``: one dict per sample (CPU tensors). Every tensor needs the batch dim."""
    import torch

    parts: list[dict[str, Any]] = [{} for _ in range(batch_size)]
    for key, val in encoded.items():
        if not torch.is_tensor(val) or val.dim() == 0 or val.shape[0] != batch_size:
            raise ValueError(
                f"cannot cache encoder output {key!r}: expected a tensor with batch dim {batch_size}, "
                f"got {type(val).__name__} {tuple(getattr(val, 'shape', ()))}; train with freeze_encoders=False"
            )
        val = val.detach().cpu()
        for b in range(batch_size):
            parts[b][key] = val[b]
    return parts


class CachedEncodingDataset:
    """A dataset whose features are replaced by cached encoder outputs (``item["encoded"]``)."""

    def __init__(self, base: EmotionDataset, encoded: list[dict[str, Any]]):
        if len(encoded) != len(base):
            raise ValueError(f"{base.name}: {len(encoded)} cached encodings for {len(base)} samples")
        self.base, self.encoded = base, encoded

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base.meta(i)
        item["encoded"] = self.encoded[i]
        return item

    def __getattr__(self, name):  # labels, corpora, utt_ids, soft counts ... of the base dataset
        if name in ("base", "encoded"):
            raise AttributeError(name)
        return getattr(self.base, name)


class PaddedDataset:
    """``dataset`` that also serves the padding indices of ``RankBatchSampler``: ``ds[-1 - i]`` is item ``i``
    with an all-zero target (no weight in ``soft_cross_entropy_parts``)."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i >= 0:
            return self.base[i]
        item = dict(self.base[-1 - i])
        item["target"] = np.zeros_like(item["target"])
        item["has_soft"] = False
        return item
