"""Dialogue structure of a manifest: each utterance's dialogue and position
(``dialogue_positions``) and its previous turns (``context_map``, never later ones, never across splits), for
``text_context`` (our extension, not in the paper).

Dialogue structure comes from the manifest: ``dialogue_id`` + ``utterance_id`` columns (``bber prepare table``),
else a MELD ``native_id`` ``dia{D}_utt{U}``. Rows without it (RESD, SDS merges, TUG rows) get no context.
A dialogue whose utterance ids are not all numbers keeps the table's row order (``row_ordered_dialogues``).
"""

from __future__ import annotations

import re

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
