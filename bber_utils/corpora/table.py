"""Any corpus from one table (CSV or Parquet) to manifests, audio optional (``bber prepare table --csv FILE``).

Columns (names configurable with ``columns={"text": "Utterance", ...}``):

    text          transcript                                   } at least one of the two per row
    audio_path    audio file (relative to the table's folder)  }
    label         the corpus's own label, mapped to the 7 classes with ``label_map`` (+ the built-in synonyms)
    split         optional: train | dev | test (also val / valid / validation -> dev); absent: drawn by dialogue
    dialogue_id   optional: conversation id (enables ``text_context``)
    utterance_id  optional: position within the dialogue (order of the context)
    language      optional: en | ru (else the ``language`` argument)
    start_s, end_s  optional: offsets into the audio file, seconds

A row without audio gets ``audio_path = ""`` and ``duration_s = NaN``: a text-only manifest row, which
``extract`` gives text features only and ``model=text_only`` trains on. A row with an audio path whose file is
missing or unreadable, an unmapped label, a bad split or language, a duplicate id or neither text nor audio is
skipped and reported in ``manifests/skips.csv``; ``TableReport.unmapped`` counts the unmapped raw labels.

Without a ``split`` column the rows are split by dialogue (or by row without one), seeded:
``dev_fraction`` and ``test_fraction`` of the groups go to dev and test.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..labels import CLASSES, CORPUS_LABEL_MAPS
from .manifest import LANGUAGES, MANIFEST_COLUMNS, SPLITS, make_utt_id
from .skips import skip_row, skips_frame
from .text_clean import TableError, read_csv_robust, repair_text

COLUMN_ROLES = ("text", "audio_path", "label", "split", "dialogue_id", "utterance_id", "language", "start_s",
                "end_s")
EXTRA_COLUMNS = ["native_id", "dialogue_id", "utterance_id", "emotion_raw"]
SPLIT_ALIASES = {"train": "train", "training": "train", "dev": "dev", "val": "dev", "valid": "dev",
                 "validation": "dev", "test": "test", "testing": "test"}
# Common labels of emotion corpora (IEMOCAP, CREMA-D, Dusha, MELD, RESD) -> the 7 classes. A user map wins.
SYNONYMS: dict[str, str] = {
    **{k: v for m in CORPUS_LABEL_MAPS.values() for k, v in m.items()},
    **{c: c for c in CLASSES},
    "neu": "neutral", "hap": "happy", "happiness": "happy", "joy": "happy", "exc": "happy", "sad": "sad",
    "sadness": "sad", "ang": "anger", "angry": "anger", "sur": "surprise", "surprised": "surprise",
    "dis": "disgust", "disgusted": "disgust", "fea": "fear", "fearful": "fear", "afraid": "fear",
}
_ID_SAFE = re.compile(r"[^\w.\-]+")


@dataclass
class TableReport:
    """What ``read_table`` kept and left out: rows per split, unmapped raw labels and their counts."""

    rows: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    unmapped: dict[str, int] = field(default_factory=dict)
    text_only: int = 0

    def summary(self) -> str:
        lines = [f"{self.rows} row(s) read; kept {sum(self.kept.values())} {self.kept}; "
                 f"{self.text_only} without audio; skipped {self.skipped}"]
        if self.unmapped:
            lines.append("unmapped labels (skipped): " + ", ".join(f"{k!r}: {v}" for k, v in
                                                               sorted(self.unmapped.items())))
        return "\n".join(lines)


def parse_label_map(spec: Any) -> dict[str, str]:
    """A label map from a dict, ``"joy=happy,sadness=sad"``, or a JSON file path; keys lower-cased.

    A target of ``""`` or ``"drop"`` leaves that label out deliberately (still counted as unmapped).
    Raises ``ValueError`` for a target that is not one of the 7 classes.
    """
    if spec in (None, "", {}):
        return {}
    if isinstance(spec, (str, os.PathLike)) and Path(spec).suffix == ".json" and Path(spec).is_file():
        spec = json.loads(Path(spec).read_text(encoding="utf-8"))
    if isinstance(spec, str):
        pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
        bad = [p for p in pairs if len(p) != 2]
        if bad:
            raise ValueError(f"label map: {bad[0][0]!r} is not of the form raw=class")
        spec = {k: v for k, v in pairs}
    out = {}
    for k, v in dict(spec).items():
        v = str(v).strip().lower()
        if v not in CLASSES and v not in ("", "drop"):
            raise ValueError(f"label map: {k!r} -> {v!r}: the target must be one of {CLASSES} (or 'drop')")
        out[str(k).strip().lower()] = v
    return out


def map_table_label(raw: Any, label_map: dict[str, str]) -> str | None:
    """The class of a raw label (user map first, then ``SYNONYMS``), or None when unmapped or dropped."""
    key = str(raw).strip().lower()
    if key in label_map:
        return label_map[key] if label_map[key] in CLASSES else None
    return SYNONYMS.get(key)


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV (any mix of UTF-8 / cp1252) or Parquet table, all columns as strings; ``TableError`` naming it."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        if not path.is_file():
            raise TableError(f"{path}: file not found")
        try:
            df = pd.read_parquet(path)
        except Exception as exc:
            raise TableError(f"{path}: not a readable Parquet file ({exc})") from exc
        if df.empty:
            raise TableError(f"{path}: the table has no rows")
        return df.astype(object).where(df.notna(), "").astype(str)
    return read_csv_robust(path)


def _native_id(dialogue: str, utterance: str, row: int) -> str:
    if dialogue and utterance:
        return f"dia{dialogue}_utt{utterance}"
    return utterance or f"row{row}"


def _draw_splits(groups: pd.Series, dev_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Seeded split per group (dialogue): whole groups go to train, dev or test."""
    uniq = np.array(sorted(set(groups)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    n_dev, n_test = int(round(dev_fraction * len(uniq))), int(round(test_fraction * len(uniq)))
    if len(uniq) >= 3:
        n_dev, n_test = max(n_dev, 1 if dev_fraction > 0 else 0), max(n_test, 1 if test_fraction > 0 else 0)
    split = {}
    for rank, i in enumerate(order):
        split[uniq[i]] = "dev" if rank < n_dev else "test" if rank < n_dev + n_test else "train"
    return groups.map(split)


def _audio_duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / float(info.samplerate)


def read_table(path: str | os.PathLike, corpus: str = "table", columns: dict[str, str] | None = None,
               label_map: Any = None, language: str = "en", dev_fraction: float = 0.15,
               test_fraction: float = 0.15, seed: int = 42, audio_root: str | os.PathLike | None = None,
               limit: int = 0, check_audio: bool = True):
    """Read a table into ``({split: manifest DataFrame}, skips DataFrame, TableReport)``.

    ``columns`` renames roles to the table's own column names (e.g. ``{"text": "Utterance", "label":
    "Emotion"}``). ``utt_id = "{corpus}-{split}-{native}"`` with ``native = dia{D}_utt{U}`` when both ids are
    given, else the utterance id, else ``row{N}`` (N = 0-based data row). Extra columns: ``native_id,
    dialogue_id, utterance_id, emotion_raw``. ``limit`` keeps the first N rows per split (dialogues stay whole
    only if they fit). ``check_audio`` reads each audio file's header (duration; missing/unreadable -> skip).
    """
    path = Path(path)
    if not _ID_SAFE.sub("", corpus) == corpus or not corpus:
        raise ValueError(f"corpus name {corpus!r}: use letters, digits, '_', '-' or '.'")
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r} is not one of {LANGUAGES}")
    cols = {r: r for r in COLUMN_ROLES}
    cols.update({k: v for k, v in (columns or {}).items() if v})
    unknown_roles = sorted(set(columns or {}) - set(COLUMN_ROLES))
    if unknown_roles:
        raise ValueError(f"unknown column role(s) {unknown_roles}; roles: {COLUMN_ROLES}")
    lmap = parse_label_map(label_map)
    df = load_table(path)
    has = {r: cols[r] in df.columns for r in COLUMN_ROLES}
    if not has["label"]:
        raise TableError(f"{path}: no label column {cols['label']!r}; found {list(df.columns)}")
    if not (has["text"] or has["audio_path"]):
        raise TableError(f"{path}: needs a text column {cols['text']!r} or an audio column "
                         f"{cols['audio_path']!r}; found {list(df.columns)}")
    col = lambda role: (df[cols[role]].astype(str).str.strip() if has[role]  # noqa: E731
                        else pd.Series([""] * len(df), index=df.index))
    dialogue, utterance = col("dialogue_id"), col("utterance_id")
    if has["split"]:
        split = col("split").str.lower().map(SPLIT_ALIASES)
    else:
        groups = dialogue.where(dialogue != "", "row" + pd.Series(range(len(df)), index=df.index).astype(str))
        split = _draw_splits(groups, dev_fraction, test_fraction, seed)
    base = Path(audio_root) if audio_root else path.parent
    report, skips, rows, seen = TableReport(rows=len(df)), [], [], set()
    texts, audios, labels, langs = col("text"), col("audio_path"), col("label"), col("language")
    starts, ends = col("start_s"), col("end_s")
    for i in range(len(df)):
        where = f"{path.name} row {i}"
        sp = split.iloc[i]
        native = _ID_SAFE.sub("_", _native_id(dialogue.iloc[i], utterance.iloc[i], i))
        utt_id = make_utt_id(corpus, sp if isinstance(sp, str) else "none", native)
        if not isinstance(sp, str):
            skips.append(skip_row(corpus, "", utt_id, path, f"{where}: split {col('split').iloc[i]!r} is not one "
                                                            f"of train/dev/test"))
            continue
        raw = labels.iloc[i]
        label = map_table_label(raw, lmap)
        if label is None:
            report.unmapped[raw] = report.unmapped.get(raw, 0) + 1
            skips.append(skip_row(corpus, sp, utt_id, path, f"{where}: unmapped label {raw!r}"))
            continue
        lang = (langs.iloc[i] or language).lower()
        if lang not in LANGUAGES:
            skips.append(skip_row(corpus, sp, utt_id, path, f"{where}: language {lang!r} not in {LANGUAGES}"))
            continue
        if utt_id in seen:
            skips.append(skip_row(corpus, sp, utt_id, path, f"{where}: duplicate id {native!r}"))
            continue
        text, audio = repair_text(texts.iloc[i]), audios.iloc[i]
        if not text.strip() and not audio:
            skips.append(skip_row(corpus, sp, utt_id, path, f"{where}: neither text nor audio"))
            continue
        start = pd.to_numeric(starts.iloc[i], errors="coerce") if starts.iloc[i] else 0.0
        end = pd.to_numeric(ends.iloc[i], errors="coerce") if ends.iloc[i] else float("nan")
        duration = float("nan")
        audio_path = ""
        if audio:
            ap = Path(audio).expanduser()
            ap = ap if ap.is_absolute() else base / ap
            if check_audio:
                if not ap.is_file():
                    skips.append(skip_row(corpus, sp, utt_id, ap, f"{where}: missing audio file"))
                    continue
                try:
                    duration = _audio_duration(ap)
                except Exception as exc:
                    skips.append(skip_row(corpus, sp, utt_id, ap, f"{where}: unreadable audio ({exc})"))
                    continue
            if np.isfinite(end):
                duration = float(end) - float(start or 0.0)
            audio_path = str(ap.resolve())
        else:
            report.text_only += 1
        seen.add(utt_id)
        rows.append({"utt_id": utt_id, "corpus": corpus, "language": lang, "split": sp, "audio_path": audio_path,
                     "start_s": float(start) if start == start else 0.0, "end_s": float(end), "duration_s": duration,
                     "text": text, "label": label, "source": "original", "native_id": native,
                     "dialogue_id": dialogue.iloc[i], "utterance_id": utterance.iloc[i],
                     "emotion_raw": str(raw)})
    out = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + EXTRA_COLUMNS)
    frames = {}
    for sp in SPLITS:
        part = out[out["split"] == sp].reset_index(drop=True)
        if limit and len(part) > limit:
            dropped = part.iloc[limit:]
            report.text_only -= int((dropped["audio_path"] == "").sum())
            part = part.iloc[:limit]
        frames[sp] = part
        report.kept[sp] = len(part)
    report.skipped = len(skips)
    return frames, skips_frame(skips), report


def prepare_table(table: str | os.PathLike, workdir: str | os.PathLike, corpus: str = "table",
                  force: bool = False, **kwargs: Any):
    """``read_table`` then write ``<workdir>/manifests/{corpus}_{split}.parquet``, ``skips.csv`` and the
    options file (like ``corpora.prepare``: the same options read the manifests back). Returns
    ``({corpus: {split: DataFrame}}, TableReport | None)``; the report is None when read back."""
    from . import OPTIONS_FILE, SKIPS_FILE, _split_of, load_corpus
    from ..fileio import check_writable
    from ..paths import run_dirs
    from .manifest import save_manifest
    from .skips import SKIP_COLUMNS

    dirs = run_dirs(workdir)
    lm = kwargs.get("label_map")
    options = {"format": 1, "dataset": "table", "corpora": [corpus], "table": str(Path(table).resolve()),
               "mtime": Path(table).stat().st_mtime if Path(table).exists() else None,
               **{k: (parse_label_map(lm) if k == "label_map" else v) for k, v in sorted(kwargs.items())}}
    options = json.loads(json.dumps(options, default=str))
    options_path = dirs.manifests / OPTIONS_FILE
    expected = [dirs.manifest(corpus, s) for s in SPLITS]
    if not force and options_path.exists() and all(p.exists() for p in expected):
        try:
            if json.loads(options_path.read_text()) == options:
                return {corpus: load_corpus(dirs.root, corpus)}, None
        except ValueError:
            pass
    check_writable(dirs.manifests, "prepare writes the manifests there; make it writable or choose another --out")
    frames, skips, report = read_table(table, corpus=corpus, **kwargs)
    options_path.unlink(missing_ok=True)
    for old in dirs.manifests.glob("*.parquet"):
        if old not in expected and _split_of(old) is not None:
            old.unlink()
    for sp, df in frames.items():
        save_manifest(df, dirs.manifest(corpus, sp))
    skips[SKIP_COLUMNS].to_csv(dirs.manifests / SKIPS_FILE, index=False)
    options_path.write_text(json.dumps(options, indent=2))
    return {corpus: frames}, report
