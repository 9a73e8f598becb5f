"""Dialogue context for the text branch (``text_context: k``): our extension, not in the paper.

With ``k > 0`` the text features of an utterance become the features of the previous ``k`` utterances of the
same dialogue, oldest first, then its own, with one extra feature column that flags the utterance's own steps
(1.0) against the context steps (0.0): ``(sum T_context + T_own, D + 1)``. Only earlier utterances are used
(never later ones: the model must not read the answer to what it classifies), and only utterances of the same
split's manifest (never across splits). Works for every model that reads the text store, bimodal ones too;
``k = 0`` leaves the store untouched (the paper's setting; off in every profile).

Dialogue structure comes from the manifest: ``dialogue_id`` + ``utterance_id`` columns (``bber prepare table``),
else a MELD ``native_id`` ``dia{D}_utt{U}``. Rows without it (RESD, SDS merges, TUG rows) get no context.
Numeric utterance ids order a dialogue; a dialogue with any id that is not a number (or empty) keeps the
manifest's row order, which is the table's (``row_ordered_dialogues``).
RESD's names (``{NN}_{emo1}_{emo2}_{x}_{NNN}``) start with a dialogue number, but they also name the dialogue's
two emotions and their order within a dialogue is not documented, so the RESD reader gives no dialogue columns.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

_MELD_NATIVE = re.compile(r"^dia(\d+)_utt(\d+)$")


def dialogue_positions(df: pd.DataFrame) -> pd.DataFrame:
    """``utt_id, dialogue, position`` for the rows of ``df`` with dialogue structure (others left out).

    ``dialogue`` is ``"{corpus}/{split}/{dialogue id}"`` so that two splits or corpora never share one.
    """
    n = len(df)
    dia = pd.Series([""] * n, index=df.index, dtype=object)
    pos = pd.Series([np.nan] * n, index=df.index, dtype=float)
    if "dialogue_id" in df.columns and "utterance_id" in df.columns:
        d = df["dialogue_id"].fillna("").astype(str).str.strip()
        p = pd.to_numeric(df["utterance_id"], errors="coerce")
        by_row = _row_ordered(df).to_numpy()
        p[by_row] = np.arange(n, dtype=float)[by_row]
        ok = d != ""
        dia[ok], pos[ok] = d[ok], p[ok]
    if "native_id" in df.columns:
        m = df["native_id"].fillna("").astype(str).str.extract(_MELD_NATIVE)
        ok = (dia == "") & m[0].notna()
        dia[ok], pos[ok] = m.loc[ok, 0], m.loc[ok, 1].astype(float)
    if "source" in df.columns:  # synthetic rows (SDS merges, TUG) are not turns of a dialogue
        dia[df["source"].astype(str) != "original"] = ""
    keep = (dia != "") & pos.notna()
    out = pd.DataFrame({"utt_id": df["utt_id"].astype(str), "dialogue": df["corpus"].astype(str) + "/"
                        + df["split"].astype(str) + "/" + dia.astype(str), "position": pos})
    return out[keep.to_numpy()].reset_index(drop=True)


def _row_ordered(df: pd.DataFrame) -> pd.Series:
    """True on the rows of a dialogue (per corpus and split) with an ``utterance_id`` that is not a number."""
    col = lambda c: df[c].fillna("").astype(str) if c in df.columns else pd.Series("", index=df.index)  # noqa: E731
    d = col("dialogue_id").str.strip()
    key = col("corpus") + "/" + col("split") + "/" + d
    turn = (d != "") & (col("source").isin(["original", ""]))
    bad = turn & pd.to_numeric(df["utterance_id"], errors="coerce").isna()
    return turn & key.isin(set(key[bad]))


def row_ordered_dialogues(df: pd.DataFrame) -> list[str]:
    """The ``dialogue_id`` values with an ``utterance_id`` that is not a number: their turns keep the manifest's
    row order. ``[]`` without both columns."""
    if "dialogue_id" not in df.columns or "utterance_id" not in df.columns:
        return []
    return sorted(set(df["dialogue_id"].fillna("").astype(str).str.strip()[_row_ordered(df)]))


def context_map(df: pd.DataFrame, k: int) -> dict[str, list[str]]:
    """``{utt_id: [utt_id of up to k previous utterances of its dialogue, oldest first]}`` within ``df``.

    Only strictly earlier positions count; utterances with no earlier one map to ``[]``.
    """
    if k <= 0:
        return {}
    out: dict[str, list[str]] = {}
    pos = dialogue_positions(df)
    for _, g in pos.groupby("dialogue", sort=False):
        g = g.sort_values("position", kind="stable")
        ids, ps = g["utt_id"].tolist(), g["position"].to_numpy()
        for i, u in enumerate(ids):
            earlier = [ids[j] for j in range(i) if ps[j] < ps[i]]
            out[u] = earlier[-k:]
    return out


def split_context_map(splits: dict[str, pd.DataFrame], k: int) -> dict[str, list[str]]:
    """``context_map`` of each split on its own, joined (utt_ids are unique across splits)."""
    out: dict[str, list[str]] = {}
    for df in splits.values():
        out.update(context_map(df, k))
    return out


def with_flag(x: np.ndarray, own: bool) -> np.ndarray:
    """(T, D) -> (T, D + 1): the last column is 1.0 on the utterance's own steps, 0.0 on context steps."""
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate([x, np.full((len(x), 1), 1.0 if own else 0.0, np.float32)], axis=1)


CONTEXT_MODES = ("steps", "mean")


def context_steps(x: np.ndarray, mode: str = "steps") -> np.ndarray:
    """A previous utterance's steps as context: all of them (``"steps"``, (T, D)) or their mean as one step
    (``"mean"``, (1, D)): the utterance's own steps then dominate the model's mean pooling however long k is."""
    x = np.asarray(x, dtype=np.float32)
    if mode == "mean":
        return x.mean(axis=0, keepdims=True)
    if mode != "steps":
        raise ValueError(f"text_context_mode must be one of {CONTEXT_MODES} (got {mode!r})")
    return x


def with_context(own: np.ndarray, previous: list[np.ndarray], mode: str = "steps") -> np.ndarray:
    """One utterance's text input with its context: each previous utterance's steps (``context_steps``, flag
    0.0), oldest first, then its own (T, D) steps (flag 1.0) -> ``(T_ctx + T, D + 1)``."""
    parts = [with_flag(context_steps(x, mode), own=False) for x in previous]
    return np.concatenate(parts + [with_flag(own, own=True)], axis=0)


class ContextTextStore:
    """A text store whose items carry the dialogue context: ``store[u]`` -> ``(T_ctx + T_u, D + 1)``
    (``T_ctx`` = the context utterances' steps, or one step each with ``mode="mean"``)."""

    def __init__(self, store, contexts: dict[str, list[str]], k: int, mode: str = "steps"):
        context_steps(np.zeros((1, 1), np.float32), mode)  # checks the mode
        self.store, self.contexts, self.k, self.mode = store, contexts, int(k), mode
        self.dim = int(store.dim) + 1
        tag = f"+context{self.k}" + ("" if mode == "steps" else f"-{mode}")
        self.path = Path(f"{getattr(store, 'path', 'text')}{tag}")  # a distinct cache key

    def __contains__(self, u) -> bool:
        return u in self.store

    def __len__(self) -> int:
        return len(self.store)

    def context_of(self, u: str) -> list[str]:
        return [c for c in self.contexts.get(u, []) if c in self.store]

    def __getitem__(self, u: str) -> np.ndarray:
        return with_context(self.store[u], [self.store[c] for c in self.context_of(u)], self.mode)


def with_text_context(store, splits: dict[str, pd.DataFrame], k: int, mode: str = "steps"):
    """``store`` itself for ``k == 0``, else a ``ContextTextStore`` over ``splits`` (each split on its own)."""
    if not k:
        return store
    if int(k) < 0:
        raise ValueError(f"text_context must be >= 0 (got {k})")
    return ContextTextStore(store, split_context_map(splits, int(k)), int(k), mode)
