"""Any corpus from one table (CSV or Parquet) to manifests, audio optional (``bber prepare table --csv FILE``).

Columns (names configurable with ``columns={"text": "Utterance", ...}``):

    text          transcript                                   } at least one of the two per row
    audio_path    audio file (relative to the table's folder)  }
    label         the corpus's own label, mapped to the 7 classes with ``label_map`` (+ the built-in synonyms)
    split         optional: train | dev | test (also val / valid / validation -> dev); absent: drawn by dialogue
                  (or by speaker: ``split_by="speaker"``)
    dialogue_id   optional: conversation id (enables ``text_context``)
    utterance_id  optional: position within the dialogue (order of the context), see below
    speaker       optional: who speaks (kept in the manifest; ``split_by="speaker"`` splits by it)
    language      optional: any ISO 639-1 code, e.g. en, ru, pl (else the ``language`` argument)
    start_s, end_s  optional: offsets into the audio file, seconds

The corpus's label set (``classes``, e.g. ``"anger,fear,neutral"``; default: the classes its mapped labels
name) is what training predicts and scoring averages over (``corpora.corpus_classes``); a row whose class is not
in it is skipped and reported. A name that is not one of the seven classes is a one-line error.

A role named in ``columns`` must be a column of the table (``TableError`` naming the role, the table's columns
and the closest one); an unnamed role is used when the table has a column of its default name.

The file: CSV in UTF-8 (with or without BOM), cp1252 lines, UTF-16 or UTF-32 (``text_clean.decode_table``), or
Parquet (by suffix or content); cells of any length (a transcript longer than an encoder reads is kept whole;
the encoder truncates it).

A row without audio gets ``audio_path = ""`` and ``duration_s = NaN``: a text-only manifest row, which
``extract`` gives text features only and ``model=text_only`` trains on. A row with an audio path whose file is
missing or unreadable, an unmapped label, a bad split or language, a duplicate id or neither text nor audio is
skipped and reported in ``manifests/skips.csv``; ``TableReport.unmapped`` counts the unmapped raw labels.

Without a ``split`` column the rows are split by dialogue (or by row without one; by speaker with
``split_by="speaker"``, then no speaker is in two splits, and a table with one speaker is a one-line error), seeded:
``dev_fraction`` and ``test_fraction`` of the groups go to dev and test (each in [0, 1), their sum < 1; at least
one group stays in train). An empty train split, or an empty dev/test split that was asked for (a fraction > 0, or
rows whose split column says so), is a ``TableError`` naming the cause (e.g. every row's label unmapped).

Dialogue order (``text_context``): numeric ``utterance_id`` values order a dialogue's turns. A dialogue where any
id is not a number (``u2``, ``Ses01F_M003``, empty) or a table with ``dialogue_id`` but no ``utterance_id`` keeps
the table's row order, which a transcript usually follows (natural order of such ids is often wrong: IEMOCAP's
``F000, M000`` ids interleave two speakers); ``TableReport.summary`` says how many dialogues that concerns.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from bber_utils.core.errors import ConfigError, did_you_mean, unknown
from bber_utils.core.fileio import atomic_write, atomic_write_text, check_writable
from bber_utils.core.labels import CLASSES, CORPUS_LABEL_MAPS, parse_label_set
from bber_utils.core.languages import check_language, is_language
from bber_utils.core.paths import run_dirs, workdir_path
from bber_utils.corpora import (OPTIONS_FILE, SKIPS_FILE, available_corpora, load_corpus, load_skips,
                                remove_other_corpora, save_label_set)
from bber_utils.corpora.dialogues import row_ordered_dialogues
from bber_utils.corpora.manifest import MANIFEST_COLUMNS, SPLITS, make_utt_id, save_manifest
from bber_utils.corpora.skips import SKIP_COLUMNS, skip_row, skips_frame
from bber_utils.corpora.text_clean import TableError, csv_frame, read_table_bytes, repair_text

COLUMN_ROLES = ("text", "audio_path", "label", "split", "dialogue_id", "utterance_id", "speaker", "language",
                "start_s", "end_s")
EXTRA_COLUMNS = ["native_id", "dialogue_id", "utterance_id", "speaker", "emotion_raw"]
SPLIT_BY = ("dialogue", "speaker")
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
_ROW_PREFIX = re.compile(r"^.*? row \d+: ")


@dataclass
class TableReport:
    """What ``read_table`` kept and left out: rows per split, unmapped raw labels and their counts, dialogues
    whose context follows the table's row order (non-numeric utterance ids) with one example id."""

    rows: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    unmapped: dict[str, int] = field(default_factory=dict)
    text_only: int = 0
    row_order_dialogues: int = 0
    row_order_example: str = ""
    classes: tuple = CLASSES
    classes_declared: bool = False

    def summary(self) -> str:
        lines = [f"{self.rows} row(s) read; kept {sum(self.kept.values())} {self.kept}; "
                 f"{self.text_only} without audio; skipped {self.skipped}",
                 f"label set: {', '.join(self.classes)} ("
                 f"{'declared' if self.classes_declared else 'the classes its labels name; --classes declares it'})"]
        if self.unmapped:
            lines.append("unmapped labels (skipped): " + ", ".join(f"{k!r}: {v}" for k, v in
                                                               sorted(self.unmapped.items())))
        if self.row_order_dialogues:
            ids = (f"utterance ids that are not numbers (e.g. {self.row_order_example!r})" if self.row_order_example
                   else "no utterance ids")
            lines.append(f"{self.row_order_dialogues} dialogue(s) have {ids}: their dialogue context follows the "
                         f"table's row order")
        return "\n".join(lines)


def _label_map_file(path: Path) -> dict:
    """The JSON object of a label map file; ``ValueError`` naming the file when missing or not an object."""
    if not path.is_file():
        raise ValueError(f"label map file not found: {path}")
    try:
        spec = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"label map file {path}: not readable JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"label map file {path}: must hold a JSON object {{\"raw\": \"class\"}} (got "
                         f"{type(spec).__name__})")
    return spec


def parse_label_map(spec: Any) -> dict[str, str]:
    """A label map from a dict, ``"joy=happy,sadness=sad"``, or a JSON file path; keys lower-cased.

    A target of ``""`` or ``"drop"`` leaves that label out deliberately (still counted as unmapped).
    Raises ``ValueError`` for a target that is not one of the 7 classes, or a ``.json`` file that is missing or
    not a JSON object.
    """
    if spec in (None, "", {}):
        return {}
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and Path(spec).suffix.lower() == ".json"):
        spec = _label_map_file(Path(spec).expanduser())
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
            raise ValueError(f"label map: {k!r} -> {v!r}: the target must be one of {CLASSES} (or 'drop')"
                             f"{did_you_mean(v, CLASSES)}")
        out[str(k).strip().lower()] = v
    return out


def map_table_label(raw: Any, label_map: dict[str, str]) -> str | None:
    """The class of a raw label (user map first, then ``SYNONYMS``), or None when unmapped or dropped."""
    key = str(raw).strip().lower()
    if key in label_map:
        return label_map[key] if label_map[key] in CLASSES else None
    return SYNONYMS.get(key)


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV (UTF-8 / cp1252 / UTF-16 / UTF-32) or Parquet table (by suffix or content), all columns as strings;
    ``TableError`` naming it."""
    path = Path(path)
    data = read_table_bytes(path)
    if path.suffix.lower() not in (".parquet", ".pq") and not data.startswith(b"PAR1"):
        return csv_frame(data, path)
    try:
        df = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise TableError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from exc
    if df.empty:
        raise TableError(f"{path}: the table has no rows")
    df.columns = [str(c).strip() for c in df.columns]
    return df.astype(object).where(df.notna(), "").astype(str)


def check_fractions(dev_fraction: float, test_fraction: float) -> None:
    """``ConfigError`` unless both fractions are in [0, 1) and their sum is below 1 (train keeps some rows)."""
    for name, f in (("--dev-fraction", dev_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= f < 1:  # NaN fails too
            raise ConfigError(f"{name} {f}: must be in [0, 1)")
    if dev_fraction + test_fraction >= 1:
        raise ConfigError(f"--dev-fraction {dev_fraction} + --test-fraction {test_fraction} = "
                          f"{dev_fraction + test_fraction:g}: the sum must be below 1 (the rest is train)")


def _native_id(dialogue: str, utterance: str, row: int) -> str:
    if dialogue and utterance:
        return f"dia{dialogue}_utt{utterance}"
    return utterance or f"row{row}"


def _draw_splits(groups: pd.Series, dev_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Seeded split per group (dialogue): whole groups go to train, dev or test; at least one stays in train."""
    uniq = np.array(sorted(set(groups)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    n_dev, n_test = int(round(dev_fraction * len(uniq))), int(round(test_fraction * len(uniq)))
    if len(uniq) >= 3:
        n_dev, n_test = max(n_dev, 1 if dev_fraction > 0 else 0), max(n_test, 1 if test_fraction > 0 else 0)
    while n_dev + n_test >= len(uniq) > 0:
        n_dev, n_test = (n_dev - 1, n_test) if n_dev >= n_test else (n_dev, n_test - 1)
    split = {}
    for rank, i in enumerate(order):
        split[uniq[i]] = "dev" if rank < n_dev else "test" if rank < n_dev + n_test else "train"
    return groups.map(split)


def _audio_duration(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / float(info.samplerate)


def _role_columns(columns: dict[str, str] | None) -> dict[str, str]:
    """``{role: the table's column name}``: defaults, then ``columns``; ``ConfigError`` for an unknown role."""
    for role in columns or {}:
        if role not in COLUMN_ROLES:
            raise unknown("column role", role, COLUMN_ROLES)
    return {**{r: r for r in COLUMN_ROLES}, **{k: str(v) for k, v in (columns or {}).items() if v}}


def _check_columns(df: pd.DataFrame, cols: dict[str, str], named: dict[str, str], path: Path) -> dict[str, bool]:
    """``{role: the table has its column}``; ``TableError`` for a named column the table lacks, or no label, or
    neither text nor audio."""
    found = list(df.columns)
    for role, name in named.items():
        if name and name not in found:
            raise TableError(f"{path}: column role {role}: the table has no column {name!r}"
                             f"{did_you_mean(name, found)}; its columns: {found}")
    has = {r: cols[r] in found for r in COLUMN_ROLES}
    if not has["label"]:
        raise TableError(f"{path}: no label column {cols['label']!r}{did_you_mean(cols['label'], found)}; "
                         f"found {found}")
    if not (has["text"] or has["audio_path"]):
        raise TableError(f"{path}: needs a text column {cols['text']!r} or an audio column "
                         f"{cols['audio_path']!r}; found {found}")
    return has


def _speaker_groups(col, has, path: Path) -> pd.Series:
    """Each row's speaker for a speaker-independent split; ``TableError`` without a speaker column, for a row
    without a speaker, or when the table has a single speaker."""
    if not has["speaker"]:
        raise TableError(f"{path}: a speaker-independent split (split by speaker) needs a speaker column "
                         f"(--column speaker=NAME)")
    speaker = col("speaker")
    if (speaker == "").any():
        raise TableError(f"{path} row {int(np.flatnonzero(speaker == '')[0])}: no speaker, but a "
                         f"speaker-independent split was asked for")
    if speaker.nunique() < 2:
        raise TableError(f"{path}: a speaker-independent split was asked for, but the table has a single speaker "
                         f"({speaker.iloc[0]!r}): train and the scored splits need different speakers")
    return speaker


def _check_speaker_split(split: pd.Series, speaker: pd.Series, path: Path) -> None:
    """``TableError`` naming a speaker found in two splits of a split column (speaker-independent split asked)."""
    seen = pd.DataFrame({"split": split, "speaker": speaker}).dropna().drop_duplicates()
    shared = seen[seen["speaker"].duplicated(keep=False)].sort_values(["speaker", "split"])
    if len(shared):
        who = shared["speaker"].iloc[0]
        raise TableError(f"{path}: speaker {who!r} is in the {' and '.join(shared[shared['speaker'] == who]['split'])} "
                         f"splits, but a speaker-independent split was asked for")
    if seen["speaker"].nunique() < 2:
        raise TableError(f"{path}: a speaker-independent split was asked for, but the table has a single speaker "
                         f"({speaker.iloc[0]!r}): train and the scored splits need different speakers")


def _assign_splits(df, col, has, dev_fraction, test_fraction, seed, split_by: str = "dialogue",
                   path: Path = Path("table")) -> tuple[pd.Series, dict[str, str]]:
    """Each row's split (NaN for an unknown value) and, per split asked for, how it was asked
    (``"column"`` or ``"drawn from N dialogue(s)"``)."""
    if has["split"]:
        split = col("split").str.lower().map(SPLIT_ALIASES)
        if split_by == "speaker":
            _check_speaker_split(split, _speaker_groups(col, has, path), path)
        return split, {sp: "column" for sp in set(split.dropna())} | {"train": "column"}
    dialogue = col("dialogue_id")
    unit = "dialogue" if has["dialogue_id"] else "row"
    groups = dialogue.where(dialogue != "", "row" + pd.Series(range(len(df)), index=df.index).astype(str))
    if split_by == "speaker":
        unit, groups = "speaker", _speaker_groups(col, has, path)
    how = f"drawn from {groups.nunique()} {unit}(s)"
    asked = {"train": how} | {sp: f"{how}, --{sp}-fraction {f}" for sp, f in
                               (("dev", dev_fraction), ("test", test_fraction)) if f > 0}
    return _draw_splits(groups, dev_fraction, test_fraction, seed), asked


def _reasons(skips: list[dict], split: str | None = None) -> str:
    """``"unmapped label 'foo' 12, missing audio file 3"``: the skip reasons (of one split), most frequent first."""
    counts = pd.Series([_ROW_PREFIX.sub("", s["reason"]) for s in skips if split is None or s["split"] == split],
                       dtype=object).value_counts()
    more = f" and {len(counts) - 4} more reason(s)" if len(counts) > 4 else ""
    return ", ".join(f"{r} {n}" for r, n in counts.head(4).items()) + more


def _check_not_empty(path: Path, frames: dict, skips: list[dict], report: TableReport, asked: dict) -> None:
    """``TableError`` naming the cause when no row is kept, train is empty, or a split asked for is empty."""
    hint = ("; give --label-map RAW=CLASS (classes: " + ", ".join(CLASSES) + ")") if report.unmapped else ""
    if not any(len(f) for f in frames.values()):
        raise TableError(f"{path}: no usable row: all {report.rows} rows were skipped: {_reasons(skips)}{hint}")
    for sp in SPLITS:
        if sp not in asked or len(frames[sp]):
            continue
        n = sum(s["split"] == sp for s in skips)
        if n:
            raise TableError(f"{path}: the {sp} split is empty: all {n} row(s) of it were skipped: "
                             f"{_reasons(skips, sp)}{hint}")
        if asked[sp] == "column":
            raise TableError(f"{path}: the {sp} split is empty: no row's split column says {sp}")
        raise TableError(f"{path}: the {sp} split is empty ({asked[sp]} rounds to none); give more rows, a "
                         f"split column, or --{sp}-fraction 0")


def _table_row(i: int, c: dict[str, str], sp: Any, lmap: dict, language: str, base: Path, check_audio: bool,
               corpus: str, path: Path, label_set: tuple | None = None) -> tuple[dict | None, str, str | None, Path]:
    """One table row -> (manifest row or None, utt_id, skip reason or None, the path the skip names)."""
    where = f"{path.name} row {i}"
    native = _ID_SAFE.sub("_", _native_id(c["dialogue_id"], c["utterance_id"], i))
    utt_id = make_utt_id(corpus, sp if isinstance(sp, str) else "none", native)
    if not isinstance(sp, str):
        return None, utt_id, f"{where}: split {c['split']!r} is not one of train/dev/test", path
    raw = c["label"]
    label = map_table_label(raw, lmap)
    if label is None:
        return None, utt_id, f"{where}: unmapped label {raw!r}", path
    if label_set is not None and label not in label_set:
        return None, utt_id, f"{where}: class {label!r} not in the corpus's label set", path
    lang = (c["language"] or language).lower()
    if not is_language(lang):
        return None, utt_id, f"{where}: language {lang!r} is not an ISO 639-1 code", path
    text, audio = repair_text(c["text"]), c["audio_path"]
    if not text.strip() and not audio:
        return None, utt_id, f"{where}: neither text nor audio", path
    start = pd.to_numeric(c["start_s"], errors="coerce") if c["start_s"] else 0.0
    end = pd.to_numeric(c["end_s"], errors="coerce") if c["end_s"] else float("nan")
    duration, audio_path = float("nan"), ""
    if audio:
        ap = Path(audio).expanduser()
        ap = ap if ap.is_absolute() else base / ap
        if check_audio:
            if not ap.is_file():
                return None, utt_id, f"{where}: missing audio file", ap
            try:
                duration = _audio_duration(ap)
            except Exception as exc:
                return None, utt_id, f"{where}: unreadable audio ({exc})", ap
        if np.isfinite(end):
            duration = float(end) - float(start or 0.0)
        audio_path = str(ap.resolve())
    return ({"utt_id": utt_id, "corpus": corpus, "language": lang, "split": sp, "audio_path": audio_path,
             "start_s": float(start) if start == start else 0.0, "end_s": float(end), "duration_s": duration,
             "text": text, "label": label, "source": "original", "native_id": native,
             "dialogue_id": c["dialogue_id"], "utterance_id": c["utterance_id"], "speaker": c["speaker"],
             "emotion_raw": str(raw)},
            utt_id, None, path)


def read_table(path: str | os.PathLike, corpus: str = "table", columns: dict[str, str] | None = None,
               label_map: Any = None, language: str = "en", dev_fraction: float = 0.15,
               test_fraction: float = 0.15, seed: int = 42, audio_root: str | os.PathLike | None = None,
               limit: int = 0, check_audio: bool = True, classes: Any = None, split_by: str = "dialogue"):
    """Read a table into ``({split: manifest DataFrame}, skips DataFrame, TableReport)``.

    ``columns`` renames roles to the table's own column names (e.g. ``{"text": "Utterance", "label":
    "Emotion"}``). ``utt_id = "{corpus}-{split}-{native}"`` with ``native = dia{D}_utt{U}`` when both ids are
    given, else the utterance id, else ``row{N}`` (N = 0-based data row). Extra columns: ``native_id,
    dialogue_id, utterance_id, emotion_raw``. ``limit`` keeps the first N rows per split (dialogues stay whole
    only if they fit). ``check_audio`` reads each audio file's header (duration; missing/unreadable -> skip).
    ``classes``: the corpus's label set (names, or ``"anger,fear,neutral"``; None = the classes its labels name,
    ``TableReport.classes``). ``split_by``: ``dialogue`` or ``speaker`` (speaker-independent) without a split
    column; ``speaker`` with a split column checks that no speaker is in two splits.
    ``ValueError`` (``TableError`` for the file) for bad options, a bad table or an empty split (module doc).
    """
    path = Path(path)
    if not _ID_SAFE.sub("", corpus) == corpus or not corpus:
        raise ValueError(f"corpus name {corpus!r}: use letters, digits, '_', '-' or '.'")
    language = check_language(language)
    if split_by not in SPLIT_BY:
        raise unknown("split_by", split_by, SPLIT_BY)
    label_set = None if classes is None else parse_label_set(classes)
    check_fractions(dev_fraction, test_fraction)
    if limit < 0:
        raise ConfigError(f"--limit {limit}: must be >= 0 (0 = all rows)")
    cols = _role_columns(columns)
    lmap = parse_label_map(label_map)
    df = load_table(path)
    has = _check_columns(df, cols, {k: str(v) for k, v in (columns or {}).items() if v}, path)
    cells = {r: (df[cols[r]].astype(str).str.strip() if has[r] else pd.Series([""] * len(df), index=df.index))
             for r in COLUMN_ROLES}
    split, asked = _assign_splits(df, cells.__getitem__, has, dev_fraction, test_fraction, seed, split_by, path)
    base = Path(audio_root) if audio_root else path.parent
    report, skips, rows, seen = TableReport(rows=len(df)), [], [], set()
    for i, c in enumerate(dict(zip(cells, vals)) for vals in zip(*(s.tolist() for s in cells.values()))):
        sp = split.iloc[i]
        row, utt_id, reason, where = _table_row(i, c, sp, lmap, language, base, check_audio, corpus, path,
                                                label_set)
        if row is not None and utt_id in seen:
            row, reason = None, f"{path.name} row {i}: duplicate id {row['native_id']!r}"
        if row is None:
            if reason.endswith(f"unmapped label {c['label']!r}"):
                report.unmapped[c["label"]] = report.unmapped.get(c["label"], 0) + 1
            skips.append(skip_row(corpus, sp if isinstance(sp, str) else "", utt_id, where, reason))
            continue
        report.text_only += row["audio_path"] == ""
        seen.add(utt_id)
        rows.append(row)
    frames = _split_frames(pd.DataFrame(rows, columns=MANIFEST_COLUMNS + EXTRA_COLUMNS), limit, report)
    report.skipped = len(skips)
    _check_not_empty(path, frames, skips, report, asked)
    found = set().union(*(set(f["label"]) for f in frames.values()))
    report.classes = label_set or tuple(c for c in CLASSES if c in found)
    report.classes_declared = label_set is not None
    _note_row_order(frames, report)
    return frames, skips_frame(skips), report


def _split_frames(out: pd.DataFrame, limit: int, report: TableReport) -> dict[str, pd.DataFrame]:
    """``{split: its rows}``, the first ``limit`` of each (0 = all); ``report.kept`` and ``text_only`` updated."""
    frames = {}
    for sp in SPLITS:
        part = out[out["split"] == sp].reset_index(drop=True)
        if limit and len(part) > limit:
            report.text_only -= int((part.iloc[limit:]["audio_path"] == "").sum())
            part = part.iloc[:limit]
        frames[sp] = part
        report.kept[sp] = len(part)
    return frames


def _note_row_order(frames: dict[str, pd.DataFrame], report: TableReport) -> None:
    """Count the dialogues whose context follows the row order (``context.row_ordered_dialogues``)."""

    for df in frames.values():
        ordered = row_ordered_dialogues(df)
        if ordered:
            report.row_order_dialogues += len(ordered)
            ids = df.loc[df["dialogue_id"].isin(ordered), "utterance_id"]
            named = ids[(ids != "") & pd.to_numeric(ids, errors="coerce").isna()]
            report.row_order_example = report.row_order_example or (named.iloc[0] if len(named) else "")


def prepare_table(table: str | os.PathLike, workdir: str | os.PathLike, corpus: str = "table",
                  force: bool = False, add: bool = False, **kwargs: Any):
    """``read_table`` then write ``<workdir>/manifests/{corpus}_{split}.parquet``, its label set
    ``{corpus}_classes.json``, ``skips.csv`` and the options file (like ``corpora.prepare``: the same options read
    the manifests back). ``add=True`` keeps the other corpora of the work folder (multi-corpus training, each
    with its own label set; their skips stay in ``skips.csv``). Returns ``({corpus: {split: DataFrame}},
    TableReport | None)``; the report is None when read back."""

    root = workdir_path(workdir)  # nothing is created before the table is read and found usable
    others = [c for c in available_corpora(root) if c != corpus] if add else []
    lm = kwargs.get("label_map")
    for key, default in (("classes", None), ("split_by", "dialogue")):  # later options: unset = earlier options
        if kwargs.get(key, default) == default:
            kwargs.pop(key, None)
    options = {"format": 1, "dataset": "table", "corpora": [*others, corpus], "table": str(Path(table).resolve()),
               "mtime": Path(table).stat().st_mtime if Path(table).exists() else None,
               **{k: (parse_label_map(lm) if k == "label_map" else v) for k, v in sorted(kwargs.items())}}
    options = json.loads(json.dumps(options, default=str))
    options_path = root / "manifests" / OPTIONS_FILE
    expected = [root / "manifests" / f"{corpus}_{s}.parquet" for s in SPLITS]
    if not force and options_path.exists() and all(p.exists() for p in expected):
        try:
            if json.loads(options_path.read_text()) == options:
                return {corpus: load_corpus(root, corpus)}, None
        except ValueError:
            pass
    check_writable(root / "manifests", "prepare writes the manifests there; make it writable or choose another --out")
    frames, skips, report = read_table(table, corpus=corpus, **kwargs)
    dirs = run_dirs(root)
    options_path.unlink(missing_ok=True)
    kept = [dirs.manifest(c, sp) for c in others for sp in SPLITS]
    remove_other_corpora(dirs.manifests, expected + kept, keep_label_sets=tuple(others))
    for sp, df in frames.items():
        save_manifest(df, dirs.manifest(corpus, sp))
    save_label_set(root, corpus, report.classes)
    if others:
        old = load_skips(root)
        skips = pd.concat([old[old["corpus"] != corpus], skips[SKIP_COLUMNS]], ignore_index=True)
    atomic_write(dirs.manifests / SKIPS_FILE, lambda tmp: skips[SKIP_COLUMNS].to_csv(tmp, index=False))
    atomic_write_text(options_path, json.dumps(options, indent=2))
    return {corpus: frames}, report
