"""RESD reader (Russian Emotional Speech Dialogs), from either published layout, to manifests.

Layouts accepted under ``root``:

* the hub's parquet files (``Aniemore/resd``): ``data/{train,test}-*.parquet`` (or directly in ``root``) with
  columns ``name, path, emotion, speech``; ``speech`` is the hub's audio struct, ``{bytes, path}`` on disk
  (``{array, sampling_rate}`` once decoded, also accepted). Train 1116, test 280; 16 and 44.1 kHz mixed.
* a folder of audio files plus ``train.csv`` / ``test.csv`` with ``path, emotion`` and optional ``text`` (and
  ``name``); ``path`` is relative to the CSV's folder or absolute.

Every clip is decoded once (soundfile; ffmpeg for other formats) to a 16 kHz mono wav
``wav_dir/{split}/{name}.wav``; a wav newer than its source is reused. ``text`` comes from a ``text`` column
when there is one, else ``""`` (ASR fills it in later). Labels go through ``labels.map_label(…, "resd")``
(enthusiasm -> surprise).

RESD publishes no dev split. ``read_resd`` draws one from train: ``dev_fraction`` (default 15 %) of the train
rows, stratified by label with scikit-learn's ``train_test_split(stratify=…, random_state=seed)``; at least one
utterance per class goes to dev when the class has two or more. Dev rows keep their ``resd-train-{name}`` ids,
so caches and soft labels stay valid when dev is re-drawn.

Bad input: a missing file, no usable column (a parquet file needs ``name`` or ``path``, ``emotion`` and
``speech``), a row with more fields than the CSV header, an empty table, or a split whose rows are all unusable
is an error naming the file; a row without audio, with corrupt, empty or over-long audio, or an unknown label is
skipped and reported.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import soundfile as sf

from bber_utils.core.audio import SAMPLE_RATE, AudioError, load_audio, resample, to_mono, write_wav
from bber_utils.core.labels import UnknownLabelError, map_label
from bber_utils.core.progress import tqdm
from bber_utils.corpora.manifest import MANIFEST_COLUMNS, make_utt_id
from bber_utils.corpora.skips import skip_row, skips_frame
from bber_utils.corpora.subset import limit_rows
from bber_utils.corpora.text_clean import TableError, read_csv_robust, repair_text

# Heavy libraries (sklearn) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.

RESD_SIZES = {"train": 1116, "test": 280}
PUBLISHED_SPLITS = ("train", "test")
DEV_FRACTION = 0.15
MAX_CLIP_SECONDS = 60.0
EXTRA_COLUMNS = ["native_id", "emotion_raw"]


def find_resd_files(root: str | os.PathLike) -> tuple[str, dict[str, list[Path]]]:
    """``("parquet" | "csv", {split: [files]})`` for the layout found under ``root``; ``TableError`` if none."""
    root = Path(root)
    if not root.is_dir():
        raise TableError(f"RESD root {root} is not a folder")
    for base in (root / "data", root):
        found = {s: sorted(base.glob(f"{s}-*.parquet")) + sorted(base.glob(f"{s}.parquet"))
                 for s in PUBLISHED_SPLITS}
        if any(found.values()):
            missing = [s for s, files in found.items() if not files]
            if missing:
                raise TableError(f"RESD parquet layout in {base}: no {missing[0]}-*.parquet file")
            return "parquet", found
    csvs = {s: [root / f"{s}.csv"] for s in PUBLISHED_SPLITS}
    if all(p[0].is_file() for p in csvs.values()):
        return "csv", csvs
    raise TableError(f"no RESD data in {root}: expected data/{{train,test}}-*.parquet (the hub layout) "
                     f"or train.csv + test.csv beside the audio files")


def _decode_speech(speech, parquet: Path) -> tuple[np.ndarray, int]:
    """The hub audio struct -> (mono float32 waveform, sample rate); ``AudioError`` naming the file."""

    if isinstance(speech, (bytes, bytearray)):  # a plain binary column instead of the audio struct
        speech = {"bytes": bytes(speech)}
    if not isinstance(speech, dict):
        raise AudioError(parquet, "no audio in this row")
    if speech.get("bytes"):
        try:
            wav, sr = sf.read(io.BytesIO(speech["bytes"]), dtype="float32", always_2d=False)
        except Exception as exc:
            raise AudioError(parquet, f"corrupt audio bytes ({exc})") from exc
        return to_mono(wav), int(sr)
    if speech.get("array") is not None and speech.get("sampling_rate"):
        return to_mono(np.asarray(speech["array"], dtype=np.float32)), int(speech["sampling_rate"])
    if speech.get("path"):
        p = Path(speech["path"])
        p = p if p.is_absolute() else parquet.parent / p
        if p.exists():
            return load_audio(p, sr=SAMPLE_RATE), SAMPLE_RATE
    raise AudioError(parquet, "no audio in this row (speech has no bytes, array or existing path)")


def _checked_write(wav: np.ndarray, sr: int, dst: Path, source: Path, max_seconds: float) -> float:
    wav = resample(np.asarray(wav, dtype=np.float32), sr, SAMPLE_RATE)
    if wav.size == 0:
        raise AudioError(source, "empty audio (0 samples)")
    if not np.all(np.isfinite(wav)):
        raise AudioError(source, "audio contains NaN or infinite samples")
    seconds = len(wav) / SAMPLE_RATE
    if seconds > max_seconds:
        raise AudioError(source, f"clip too long ({seconds:.1f} s > {max_seconds:g} s)")
    write_wav(dst, wav)
    return seconds


def _fresh(dst: Path, source: Path) -> bool:
    return dst.exists() and source.exists() and dst.stat().st_mtime >= source.stat().st_mtime


def _wav_name(name: str) -> str:
    return name.replace("/", "_").replace("\\", "_")


def _meta_rows(table, where: Path, split: str, corpus: str, skips: list[dict], seen: set[str]) -> list[dict]:
    """Name, label and text of each row; unknown labels and duplicates (across ``seen``) are skipped."""
    rows = []
    for i, r in enumerate(table):
        name = str(r.get("name") or "").strip() or Path(str(r.get("path") or "")).stem
        utt_id = make_utt_id(corpus, split, name) if name else ""
        if not name:
            skips.append(skip_row(corpus, split, "", where, f"{where.name} row {i}: no name and no path"))
            continue
        if name in seen:
            skips.append(skip_row(corpus, split, utt_id, where, f"{where.name} row {i}: duplicate name {name!r}"))
            continue
        seen.add(name)
        try:
            label = map_label(r.get("emotion", ""), "resd")
        except UnknownLabelError:
            skips.append(skip_row(corpus, split, utt_id, where,
                                  f"{where.name} row {i}: unknown label {r.get('emotion')!r}"))
            continue
        rows.append({"file": str(where), "row": i, "native_id": name, "utt_id": utt_id, "label": label,
                     "emotion_raw": str(r.get("emotion", "")).strip(), "text": repair_text(r.get("text", "")),
                     "path": r.get("path")})
    return rows


def _open_parquet(f: Path):
    try:
        pf = pq.ParquetFile(f)
    except Exception as exc:
        raise TableError(f"{f}: not a readable parquet file ({exc})") from exc
    cols = pf.schema_arrow.names
    if "name" not in cols and "path" not in cols:
        raise TableError(f"{f}: no column 'name' or 'path' to identify the utterances; found {cols}")
    for need in ("emotion", "speech"):
        if need not in cols:
            what = "no audio column 'speech'" if need == "speech" else f"no column {need!r}"
            raise TableError(f"{f}: {what}; found {cols}")
    if pf.metadata.num_rows == 0:
        raise TableError(f"{f}: the table has no rows")
    return pf


def _read_parquet_split(files: list[Path], split: str, corpus: str, wav_dir: Path, limit: int, seed: int,
                        max_seconds: float, skips: list[dict], progress: bool) -> list[dict]:
    """Metadata of every shard first (names unique across shards, ``limit`` per split), then the audio of the
    kept rows, streamed 32 rows at a time."""

    shards, meta, seen = {f: _open_parquet(f) for f in files}, [], set()
    for f, pf in shards.items():
        cols = [c for c in ("name", "path", "emotion", "text") if c in pf.schema_arrow.names]
        meta += _meta_rows(pf.read(columns=cols).to_pylist(), f, split, corpus, skips, seen)
    meta = limit_rows(pd.DataFrame(meta), limit, seed).to_dict("records") if meta else []
    out = []
    bar = tqdm(total=len(meta), desc=f"{corpus} {split}: audio", disable=not progress or not meta, leave=False)
    for f, pf in shards.items():
        wanted = {m["row"]: m for m in meta if m["file"] == str(f)}
        row0 = 0
        for batch in pf.iter_batches(batch_size=32, columns=["speech"]) if wanted else []:
            speeches = batch.column(0).to_pylist()
            for j, speech in enumerate(speeches):
                m = wanted.get(row0 + j)
                if m is None:
                    continue
                dst = wav_dir / split / f"{_wav_name(m['native_id'])}.wav"
                try:
                    if _fresh(dst, f):
                        seconds = sf.info(str(dst)).duration
                    else:
                        wav, sr = _decode_speech(speech, f)
                        seconds = _checked_write(wav, sr, dst, f, max_seconds)
                except AudioError as exc:
                    skips.append(skip_row(corpus, split, m["utt_id"], f, f"row {m['row']}: {exc.reason}"))
                else:
                    out.append({**m, "audio_path": str(dst.resolve()), "duration_s": float(seconds)})
                bar.update(1)
            row0 += len(speeches)
    bar.close()
    return out


def _read_csv_split(csv_path: Path, split: str, corpus: str, wav_dir: Path, limit: int, seed: int,
                    max_seconds: float, skips: list[dict], progress: bool) -> list[dict]:
    table = read_csv_robust(csv_path, required=["path", "emotion"])
    meta = _meta_rows(table.to_dict("records"), csv_path, split, corpus, skips, set())
    meta = limit_rows(pd.DataFrame(meta), limit, seed).to_dict("records") if meta else []
    out = []
    for m in tqdm(meta, desc=f"{corpus} {split}: audio", disable=not progress or not meta, leave=False):
        src = Path(str(m["path"]))
        src = src if src.is_absolute() else csv_path.parent / src
        dst = wav_dir / split / f"{_wav_name(m['native_id'])}.wav"
        try:
            if _fresh(dst, src):
                import soundfile as sf

                seconds = sf.info(str(dst)).duration
            else:
                seconds = _checked_write(load_audio(src), SAMPLE_RATE, dst, src, max_seconds)
        except AudioError as exc:
            skips.append(skip_row(corpus, split, m["utt_id"], src,
                                  f"{csv_path.name} line {m['row'] + 2}: {exc.reason}"))
        else:
            out.append({**m, "audio_path": str(dst.resolve()), "duration_s": float(seconds)})
    return out


def stratified_dev_split(train_df, fraction: float = DEV_FRACTION, seed: int = 42):
    """Split ``train_df`` into (train, dev), stratified by ``label``, seeded; dev rows get ``split="dev"``.

    The dev size is ``round(fraction · n)``, raised to one per class that has at least two utterances (so
    stratification is possible); classes with a single utterance stay in train.
    """
    from sklearn.model_selection import train_test_split

    if fraction <= 0 or len(train_df) < 2:
        return train_df, train_df.iloc[0:0].assign(split="dev")
    counts = train_df["label"].value_counts()
    rare = train_df["label"].isin(counts[counts < 2].index)
    pool = train_df[~rare]
    n_classes = int((counts >= 2).sum())
    n_dev = max(int(round(fraction * len(train_df))), n_classes)
    n_dev = min(n_dev, len(pool) - n_classes)
    if n_dev <= 0:
        return train_df, train_df.iloc[0:0].assign(split="dev")
    tr, dev = train_test_split(pool, test_size=n_dev, stratify=pool["label"], random_state=seed)
    train_out = train_df.loc[train_df.index.isin(tr.index) | rare]
    return train_out, dev.sort_index().assign(split="dev")


def read_resd(root: str | os.PathLike, wav_dir: str | os.PathLike, corpus: str = "resd", language: str = "ru",
              limit: int = 0, seed: int = 42, dev_fraction: float = DEV_FRACTION,
              max_seconds: float = MAX_CLIP_SECONDS, progress: bool = True):
    """Read RESD (or a corpus in one of its layouts) into ``({train, dev, test: manifest}, skips DataFrame)``.

    ``utt_id = "{corpus}-{published split}-{name}"``; extra columns ``native_id, emotion_raw``. ``limit`` keeps
    at most N rows of each published split (``subset.limit_rows``) before decoding; dev is then drawn from train.
    """

    layout, files = find_resd_files(root)
    wav_dir = Path(wav_dir)
    skips: list[dict] = []
    frames = {}
    for split in PUBLISHED_SPLITS:
        if layout == "parquet":
            rows = _read_parquet_split(files[split], split, corpus, wav_dir, limit, seed, max_seconds, skips,
                                       progress)
        else:
            rows = _read_csv_split(files[split][0], split, corpus, wav_dir, limit, seed, max_seconds, skips,
                                   progress)
        if not rows:
            where = files[split][0] if len(files[split]) == 1 else files[split][0].parent
            reasons = [s["reason"] for s in skips if s["split"] == split][:3]
            raise TableError(f"{where}: RESD {split} has rows but none usable, so the split would be empty; "
                             f"first reasons: {reasons}")
        df = pd.DataFrame(rows, columns=["native_id", "utt_id", "label", "emotion_raw", "text", "audio_path",
                                         "duration_s"])
        df = df.assign(corpus=corpus, language=language, split=split, start_s=0.0, end_s=math.nan,
                       source="original")
        frames[split] = df[MANIFEST_COLUMNS + EXTRA_COLUMNS].reset_index(drop=True)
    train, dev = stratified_dev_split(frames["train"], dev_fraction, seed)
    frames = {"train": train.reset_index(drop=True), "dev": dev.reset_index(drop=True), "test": frames["test"]}
    return frames, skips_frame(skips)
