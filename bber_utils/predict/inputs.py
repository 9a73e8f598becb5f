"""What ``bber predict`` reads and prints: audio files, folders and CSVs of clips
(``collect_inputs``) and the predictions as a table (``predictions_table``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from bber_utils.corpora.dialogues import context_map
from bber_utils.predict.predictor import Prediction


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".aac", ".opus", ".webm", ".aiff", ".aif"}


def collect_inputs(items: Iterable[str | os.PathLike]) -> tuple[list[str], list[str | None]]:
    """(paths, transcripts) of ``collect_clips``."""
    paths, texts, _ = collect_clips(items)
    return paths, texts


def collect_clips(items: Iterable[str | os.PathLike]) -> tuple[list[str], list[str | None], list[list[str]]]:
    """Expand folders (audio files inside, sorted) and CSVs (a ``path`` column, optional ``text`` and
    ``context``: the previous turn, or a JSON list of previous turns oldest first; relative paths are taken
    from the CSV's folder) into (paths, transcripts, contexts). ``ValueError`` (one line) for an empty path, a
    folder without audio files or a CSV without a ``path`` column."""
    paths: list[str] = []
    texts: list[str | None] = []
    contexts: list[list[str]] = []
    for item in items:
        if not str(item).strip():
            raise ValueError(f"an empty path ({str(item)!r}) was given: name audio files, folders or CSVs")
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise ValueError(f"{p}: no audio files in this folder (looked for "
                                 f"{', '.join(sorted(AUDIO_SUFFIXES))})")
            paths += [str(q) for q in found]
            texts += [None] * len(found)
            contexts += [[] for _ in found]
        elif p.suffix.lower() == ".csv":
            for path, text, context in _csv_clips(p):
                paths.append(path)
                texts.append(text)
                contexts.append(context)
        else:
            paths.append(str(p))
            texts.append(None)
            contexts.append([])
    return paths, texts, contexts


def _csv_clips(csv: Path) -> list[tuple[str, str | None, list[str]]]:
    """(path, transcript or None, previous turns) of each row of a CSV of clips."""

    df = pd.read_csv(csv, keep_default_na=False, dtype=str)
    if "path" not in df.columns:
        raise ValueError(f"{csv}: a CSV of clips needs a 'path' column (found {list(df.columns)})")
    out = []
    for i, row in enumerate(df.to_dict("records"), start=2):  # row 1 is the header
        q = Path(row["path"])
        text = row.get("text", "")
        out.append((str(q if q.is_absolute() else csv.parent / q), text if text.strip() else None,
                    _context_cell(row.get("context", ""), f"{csv}: row {i}")))
    return out


def _context_cell(cell: str, where: str) -> list[str]:
    """A CSV ``context`` cell: ``""`` (none), a JSON list of turns oldest first, or else one turn (so a turn such
    as ``[laughs] fine`` stays one turn). ``ValueError`` for a JSON list holding something other than text."""
    if not cell.strip():
        return []
    try:
        turns = json.loads(cell) if cell.lstrip().startswith("[") else None
    except json.JSONDecodeError:
        turns = None
    if not isinstance(turns, list):
        return [cell]
    if not all(isinstance(t, str) for t in turns):
        raise ValueError(f"{where}: context {cell[:60]!r} is a JSON list but not of texts (one previous turn, "
                         f"or [\"older turn\", \"previous turn\"])")
    return turns


def manifest_contexts(df, k: int) -> list[list[str]]:
    """Each manifest row's previous turns (texts, oldest first, at most ``k``; ``bber_utils.features.context``)."""

    previous = context_map(df, int(k))
    text_of = dict(zip(df["utt_id"].astype(str), df["text"].astype(str)))
    return [[text_of[c] for c in previous.get(str(u), [])] for u in df["utt_id"]]


def predictions_table(preds: list[Prediction]):
    return pd.DataFrame([p.as_row() for p in preds])
