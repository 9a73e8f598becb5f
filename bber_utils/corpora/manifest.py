"""The Manifest: one table per corpus and split, one row per utterance, shared by every stage.

Columns (``MANIFEST_COLUMNS``)::

    utt_id      str   unique across corpora: "{corpus}-{published split}-{native id}", e.g. "meld-train-dia0_utt0"
    corpus      str   "meld", "resd", "demo_en", "demo_ru", "tug_en", ...
    language    str   an ISO 639-1 code: "en", "ru", "pl" ...
    split       str   "train" | "dev" | "test"
    audio_path  str   absolute path of a 16 kHz mono wav (or any format audio.load_audio reads)
    start_s     float offset into the file, seconds (0.0 for whole-file clips)
    end_s       float end offset, seconds (NaN = to the end)
    duration_s  float duration of the clip, seconds
    text        str   transcript ("" = missing; ASR fills it in)
    label       str   one of labels.CLASSES
    source      str   "original" | "sds" | "tug"

Extra columns (``speaker``, ``components`` …) are allowed and kept. Every stage reads a manifest and writes a
new one; nothing is changed in place.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from bber_utils.core.fileio import atomic_write
from bber_utils.core.labels import CLASSES
from bber_utils.core.languages import ISO_639_1

MANIFEST_COLUMNS: list[str] = [
    "utt_id", "corpus", "language", "split", "audio_path", "start_s", "end_s",
    "duration_s", "text", "label", "source",
]
SPLITS = ("train", "dev", "test")
SOURCES = ("original", "sds", "tug")
LANGUAGES = ("en", "ru")  # the languages of the paper's corpora (and of the built-in templates); any ISO 639-1 code
#                           is a valid manifest language (``core.languages``)


class ManifestError(ValueError):
    """A manifest that breaks the contract; the message names the file and the first bad row."""


def make_utt_id(corpus: str, published_split: str, native_id: str) -> str:
    """Stable id; the published split (not a derived dev split) keeps ids unchanged when dev is re-drawn."""
    return f"{corpus}-{published_split}-{native_id}"


def validate_manifest(df: pd.DataFrame, where: str = "manifest") -> pd.DataFrame:
    """Check columns, types and values; return the table with columns in contract order first."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{where}: missing columns {missing}")
    df = df.copy()
    df["text"] = df["text"].fillna("").astype(str)
    for col in ("start_s", "end_s", "duration_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    checks = [
        ("label", lambda s: s.isin(CLASSES), f"label not in {CLASSES}"),
        ("split", lambda s: s.isin(SPLITS), f"split not in {SPLITS}"),
        ("source", lambda s: s.isin(SOURCES), f"source not in {SOURCES}"),
        ("language", lambda s: s.isin(ISO_639_1), "language is not an ISO 639-1 code (en, ru, pl ...)"),
        ("utt_id", lambda s: ~s.duplicated(), "duplicate utt_id"),
        ("utt_id", lambda s: s.astype(str).str.len() > 0, "empty utt_id"),
    ]
    for col, ok, why in checks:
        good = ok(df[col])
        if not bool(np.all(good)):
            i = int(np.flatnonzero(~np.asarray(good))[0])
            raise ManifestError(f"{where}: row {i} (utt_id={df['utt_id'].iloc[i]!r}): {why}: {df[col].iloc[i]!r}")
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return df[MANIFEST_COLUMNS + extra].reset_index(drop=True)


def save_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate and write atomically (Parquet for ``.parquet``, else CSV)."""
    path = Path(path)
    df = validate_manifest(df, where=str(path))
    if path.suffix == ".parquet":
        return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest written by ``save_manifest`` (or by hand) and validate it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)
    return validate_manifest(df, where=str(path))


def concat_manifests(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Union of manifests (e.g. several corpora for a multi-corpus run); utt_ids must stay unique."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    return validate_manifest(pd.concat(frames, ignore_index=True), where="union of manifests")
