"""LS-LLM tables: the soft-label table's columns, writing and reading it, and the reference's published files.

Owns :data:`SOFT_LABEL_COLUMNS` (the contract notebook 06 reads), :func:`save_soft_labels`,
:func:`load_soft_labels` (ours, Parquet or CSV, or a reference ``*_emotions_*.csv``), :func:`load_reference_labels`
and :func:`reference_to_soft_labels`. Imports pandas and :mod:`.replies` (validation); no torch, no backends.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from bber_utils.augment.ls_llm.replies import USABLE_STATUSES, validate_distribution
from bber_utils.core.fileio import atomic_write
from bber_utils.core.labels import CLASSES, map_label
from bber_utils.corpora.manifest import make_utt_id

SOFT_LABELS_FILE = "soft_labels.parquet"
SOFT_LABEL_COLUMNS = ["utt_id", *CLASSES, "backend", "model", "prompt_version", "mode", "status"]
# extra columns written next to the contract ones
EXTRA_COLUMNS = ["reason", "label", "llm_argmax", "corpus", "raw"]
REFERENCE_COLUMNS = ("video_name", "text", "ground_truth", *CLASSES, "response_clean")


def save_soft_labels(table, path: str | os.PathLike) -> Path:
    """Write the soft-label table atomically (Parquet)."""

    return atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))


# ====================================================================================== reading the tables back


def reference_model_name(csv: str | os.PathLike) -> str:
    """``Qwen3-4B_emotions_meld.csv`` -> ``Qwen3-4B``."""
    stem = Path(csv).stem
    return stem.split("_emotions")[0] if "_emotions" in stem else stem


_MELD_NATIVE = re.compile(r"^dia\d+_utt\d+$")


def load_reference_labels(csv: str | os.PathLike, corpus: str = "auto", split: str = "train"):
    """A published reference label file, as it is, indexed (and keyed) by ``utt_id``.

    ``utt_id = make_utt_id(corpus, split, video_name)``; ``corpus="auto"`` takes ``meld`` for MELD-style names
    (``dia12_utt3``) and ``resd`` otherwise, row by row (the union file holds both). ``label`` is the
    ground truth mapped to the common classes.
    """

    path = Path(csv)
    if not path.exists():
        raise FileNotFoundError(f"reference label file {path} does not exist")
    df = pd.read_csv(path)
    missing = [c for c in REFERENCE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a reference label file, missing columns {missing}")
    names = df["video_name"].astype(str).str.strip()
    if corpus == "auto":
        corpora = ["meld" if _MELD_NATIVE.match(n) else "resd" for n in names]
    else:
        corpora = [corpus] * len(df)
    df.insert(0, "utt_id", [make_utt_id(c, split, n) for c, n in zip(corpora, names)])
    df.insert(1, "corpus", corpora)
    labels = []
    for i, (g, c) in enumerate(zip(df["ground_truth"], corpora)):
        try:
            labels.append(map_label(g, c))
        except ValueError as e:
            raise ValueError(f"{path}: row {i} (video_name={names.iloc[i]!r}): {e}") from None
    df.insert(2, "label", labels)
    dup = df["utt_id"].duplicated()
    if dup.any():
        raise ValueError(f"{path}: duplicate video_name {df['video_name'][dup].iloc[0]!r}")
    return df.set_index("utt_id", drop=False)


def reference_to_soft_labels(ref, model: str = "reference", policy: str = "swap"):
    """A reference label table (:func:`load_reference_labels`) in our soft-label format, validated."""

    rows = []
    for r in ref.itertuples(index=False):
        values = [float(getattr(r, c)) for c in CLASSES]
        dist, status, reason = validate_distribution(values, r.label, policy)
        row = {"utt_id": r.utt_id, "backend": "reference", "model": model, "prompt_version": "reference",
               "mode": "generate", "status": status, "reason": reason, "label": r.label,
               "llm_argmax": CLASSES[int(np.argmax(values))], "corpus": r.corpus, "raw": r.response_clean}
        row.update({c: (np.nan if dist is None else float(dist[k])) for k, c in enumerate(CLASSES)})
        rows.append(row)
    return pd.DataFrame(rows, columns=SOFT_LABEL_COLUMNS + EXTRA_COLUMNS)


def load_soft_labels(path: str | os.PathLike, usable_only: bool = True, corpus: str = "auto",
                     split: str = "train", policy: str = "swap"):
    """Read a soft-label table: ours (Parquet or CSV) or a reference ``*_emotions_*.csv`` (converted).

    With ``usable_only`` (default) only rows with a valid distribution (status ok / repaired) are returned, so
    a trainer can look them up by ``utt_id``; utterances without one fall back to one-hot there.
    """

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"soft-label table {path} does not exist (run notebook 05 / bber label)")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        head = pd.read_csv(path, nrows=0)
        if "video_name" in head.columns and "response_clean" in head.columns:
            table = reference_to_soft_labels(load_reference_labels(path, corpus, split),
                                             reference_model_name(path), policy)
        else:
            table = pd.read_csv(path)
    missing = [c for c in ("utt_id", *CLASSES) if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a soft-label table, missing columns {missing}")
    if usable_only:
        ok = table[list(CLASSES)].notna().all(axis=1)
        if "status" in table.columns:
            ok &= table["status"].isin(USABLE_STATUSES)
        table = table[ok].reset_index(drop=True)
    return table


