"""MELD reader, from the published layout, to manifests (and the English demo corpus, which uses the same layout).

Layout (``root`` may hold the files directly or under ``MELD.Raw/``)::

    {train,dev,test}_sent_emo.csv    Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID,
                                     Season, Episode, StartTime, EndTime
    train_splits/dia{D}_utt{U}.mp4                 (also accepted under train/, dev/, test/ sub-folders;
                                                    .wav/.flac clips of the same name are read too)
    dev_splits_complete/dia{D}_utt{U}.mp4
    output_repeated_splits_test/dia{D}_utt{U}.mp4

Audio is taken from each mp4 once with ffmpeg (32 clips per ffmpeg process, processes in parallel over the
cores) into ``wav_dir/{split}/dia{D}_utt{U}.wav``
(16 kHz mono PCM); a wav newer than its clip is reused, so an interrupted run resumes. The text is repaired
(``text_clean.repair_text``). A missing, corrupt, empty or over-long (> ``max_seconds``) clip, an unknown label
or a bad id is skipped and reported (``skips.skip_row``); a missing CSV, a missing column or an empty table is an
error naming the file. Published sizes: 9989 / 1109 / 2610 utterances.

A row with more (or fewer) fields than the header (e.g. times written with unquoted commas) is an error naming the
line and the counts, never a table with shifted columns; a split whose CSV has rows but keeps none is an error,
never an empty split. A clip cut short, whose decoded audio is below ``CUT_SHORT_RATIO`` (half) of the CSV's
``EndTime - StartTime`` and at least ``CUT_SHORT_MIN_GAP`` (1 s) shorter, is skipped with the reason
"clip cut short" (its transcript would no longer match its audio).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import soundfile as sf

from bber_utils.core.audio import SAMPLE_RATE, AudioError
from bber_utils.core.fileio import atomic_write
from bber_utils.core.labels import UnknownLabelError, map_label
from bber_utils.core.progress import tqdm
from bber_utils.corpora.manifest import MANIFEST_COLUMNS, make_utt_id
from bber_utils.corpora.skips import skip_row, skips_frame
from bber_utils.corpora.subset import limit_rows
from bber_utils.corpora.text_clean import TableError, read_csv_robust, repair_text

MELD_COLUMNS = ["Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"]
MELD_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "dev": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
MELD_SIZES = {"train": 9989, "dev": 1109, "test": 2610}
MAX_CLIP_SECONDS = 60.0
CUT_SHORT_RATIO = 0.5     # decoded duration below this share of EndTime - StartTime ...
CUT_SHORT_MIN_GAP = 1.0   # ... and at least this many seconds shorter: "clip cut short"
_CLOCK = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?\s*$")


def parse_clock(value: object) -> float | None:
    """``"00:14:38,127"`` (MELD's StartTime / EndTime) -> seconds; None when it is not such a time."""
    m = _CLOCK.match(str(value or ""))
    if not m:
        return None
    h, mi, sec, ms = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(sec) + int((ms or "0").ljust(3, "0")) / 1000


def expected_seconds(start: object, end: object) -> float | None:
    """``EndTime - StartTime`` in seconds, or None when either is missing or the span is not positive."""
    a, b = parse_clock(start), parse_clock(end)
    return b - a if a is not None and b is not None and b > a else None


def find_meld_files(root: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    """``{split: (csv path, clip folder)}`` for the published layout under ``root``; ``TableError`` if absent."""
    root = Path(root)
    if not root.is_dir():
        raise TableError(f"MELD root {root} is not a folder")
    bases = [root, root / "MELD.Raw"]
    found: dict[str, tuple[Path, Path]] = {}
    for split, (csv_name, clip_name) in MELD_SPLITS.items():
        csvs = [b / csv_name for b in bases if (b / csv_name).is_file()]
        clip_dirs = [d for b in bases for d in (b / clip_name, b / split / clip_name) if d.is_dir()]
        if not csvs:
            raise TableError(f"MELD {split}: {csv_name} not found in {root} or {root / 'MELD.Raw'}")
        if not clip_dirs:
            raise TableError(f"MELD {split}: clip folder {clip_name}/ not found in {root} or {root / 'MELD.Raw'} "
                             f"(nor under a {split}/ sub-folder)")
        found[split] = (csvs[0], clip_dirs[0])
    return found


def extract_wav(src: Path, dst: Path, sr: int = SAMPLE_RATE) -> Path:
    """The audio track of ``src`` (any ffmpeg format) as a 16-bit mono wav at ``sr``, written atomically.

    Raises ``AudioError`` naming ``src`` when the clip is missing or ffmpeg cannot decode it.
    """
    if not src.exists():
        raise AudioError(src, "missing clip")
    if shutil.which("ffmpeg") is None:
        raise AudioError(src, "ffmpeg is needed to read mp4 clips; install it (apt-get install ffmpeg)")

    def decode(tmp: str) -> None:
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-vn", "-ac", "1", "-ar", str(sr),
               "-c:a", "pcm_s16le", "-f", "wav", tmp]
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0:
            raise AudioError(src, f"corrupt clip: ffmpeg could not decode it ({_ffmpeg_error(proc)})")

    atomic_write(dst, decode, suffix=".wav")
    return dst


def _ffmpeg_error(proc) -> str:
    msg = proc.stderr.decode(errors="replace").strip().splitlines()
    return msg[-1] if msg else "no message"


def extract_wavs(pairs: list[tuple[Path, Path]], sr: int = SAMPLE_RATE) -> dict[Path, AudioError]:
    """Extract several clips with one ffmpeg process (its start-up dominates for short clips: 32 clips take
    about a tenth of the CPU time of 32 processes). If the batch fails, every clip is retried alone so that
    the bad ones are found; returns ``{dst: AudioError}`` for the clips that failed."""
    errors: dict[Path, AudioError] = {}
    todo = []
    for src, dst in pairs:
        if not src.exists():
            errors[dst] = AudioError(src, "missing clip")
        else:
            todo.append((src, dst))
    if not todo:
        return errors
    if len(todo) == 1 or shutil.which("ffmpeg") is None:
        for src, dst in todo:
            try:
                extract_wav(src, dst, sr)
            except AudioError as exc:
                errors[dst] = exc
        return errors
    cmd, tmps = ["ffmpeg", "-nostdin", "-v", "error", "-y"], []
    for src, _ in todo:
        cmd += ["-i", str(src)]
    for i, (_, dst) in enumerate(todo):
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.stem}.batch{os.getpid()}.wav"
        tmps.append(tmp)
        cmd += ["-map", f"{i}:a:0", "-ac", "1", "-ar", str(sr), "-c:a", "pcm_s16le", "-f", "wav", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode == 0:
            for tmp, (_, dst) in zip(tmps, todo):
                os.replace(tmp, dst)
            return errors
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    for src, dst in todo:  # find the bad clip(s)
        try:
            extract_wav(src, dst, sr)
        except AudioError as exc:
            errors[dst] = exc
    return errors


def _wav_duration(path: Path) -> float:
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioError(path, f"unreadable wav ({exc})") from exc
    return info.frames / float(info.samplerate)


CLIP_SUFFIXES = (".mp4", ".wav", ".flac", ".mkv", ".avi")


def _find_clip(clip_dir: Path, native: str) -> Path:
    """``dia{D}_utt{U}.mp4`` as published, or the same name with another audio/video suffix (e.g. a demo corpus
    written with wav clips); the .mp4 path when none exists (reported as missing)."""
    mp4 = clip_dir / f"{native}.mp4"
    if mp4.exists():
        return mp4
    return next((p for p in (clip_dir / f"{native}{s}" for s in CLIP_SUFFIXES[1:]) if p.exists()), mp4)


def _parse_rows(df, csv_path: Path, split: str, corpus: str, clip_dir: Path, skips: list[dict]) -> list[dict]:
    """CSV rows -> partial manifest rows (no audio yet); bad rows go to ``skips`` with their CSV line."""
    rows, seen = [], set()
    for i, r in enumerate(df.to_dict("records")):
        line = i + 2  # 1-based, after the header
        try:
            d, u = int(str(r["Dialogue_ID"]).strip()), int(str(r["Utterance_ID"]).strip())
        except ValueError:
            skips.append(skip_row(corpus, split, "", csv_path,
                                  f"{csv_path.name} line {line}: bad Dialogue_ID/Utterance_ID "
                                  f"{r['Dialogue_ID']!r}/{r['Utterance_ID']!r}"))
            continue
        native = f"dia{d}_utt{u}"
        utt_id = make_utt_id(corpus, split, native)
        clip = _find_clip(clip_dir, native)
        if native in seen:
            skips.append(skip_row(corpus, split, utt_id, clip, f"{csv_path.name} line {line}: duplicate {native}"))
            continue
        seen.add(native)
        try:
            label = map_label(r["Emotion"], "meld")
        except UnknownLabelError:
            skips.append(skip_row(corpus, split, utt_id, clip,
                                  f"{csv_path.name} line {line}: unknown label {r['Emotion']!r}"))
            continue
        rows.append({"utt_id": utt_id, "native_id": native, "clip": clip, "text": repair_text(r["Utterance"]),
                     "label": label, "speaker": repair_text(r.get("Speaker", "")),
                     "emotion_raw": str(r["Emotion"]).strip(), "line": line,
                     "expected_s": expected_seconds(r.get("StartTime"), r.get("EndTime"))})
    return rows


def _extract_split(rows: list[dict], wav_dir: Path, workers: int, progress: bool, desc: str,
                   batch_size: int = 32) -> list:
    """For each row, its wav's duration or the ``AudioError``; only missing or stale wavs are extracted."""

    pairs = [(row["clip"], wav_dir / f"{row['native_id']}.wav") for row in rows]
    stale = [(src, dst) for src, dst in pairs
             if not (dst.exists() and src.exists() and dst.stat().st_mtime >= src.stat().st_mtime)]
    batches = [stale[i:i + batch_size] for i in range(0, len(stale), batch_size)]
    errors: dict[Path, AudioError] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(stale), desc=desc, disable=not progress or not stale, leave=False) as bar:
        for batch, errs in zip(batches, pool.map(extract_wavs, batches)):
            errors.update(errs)
            bar.update(len(batch))
    results = []
    for _, dst in pairs:
        try:
            results.append(errors[dst] if dst in errors else _wav_duration(dst))
        except AudioError as exc:
            results.append(exc)
    return results


def read_meld(root: str | os.PathLike, wav_dir: str | os.PathLike, corpus: str = "meld", language: str = "en",
              limit: int = 0, seed: int = 42, workers: int | None = None,
              max_seconds: float = MAX_CLIP_SECONDS, progress: bool = True):
    """Read MELD (or a corpus in its layout) into ``({split: manifest DataFrame}, skips DataFrame)``.

    ``utt_id = "{corpus}-{split}-dia{D}_utt{U}"``; extra columns ``native_id, speaker, emotion_raw``.
    ``limit`` keeps at most N rows per split (``subset.limit_rows``) before any audio is extracted.
    """

    files = find_meld_files(root)
    wav_dir = Path(wav_dir)
    workers = workers or os.cpu_count() or 1
    frames, skips = {}, []
    for split, (csv_path, clip_dir) in files.items():
        table = read_csv_robust(csv_path, required=MELD_COLUMNS)
        rows = _parse_rows(table, csv_path, split, corpus, clip_dir, skips)
        rows_df = limit_rows(pd.DataFrame(rows), limit, seed) if rows else pd.DataFrame(rows)
        rows = rows_df.to_dict("records")

        results = _extract_split(rows, wav_dir / split, workers, progress, f"{corpus} {split}: audio")
        kept = []
        for row, res in zip(rows, results):
            wav = wav_dir / split / f"{row['native_id']}.wav"
            if isinstance(res, AudioError):
                skips.append(skip_row(corpus, split, row["utt_id"], row["clip"], res.reason))
            elif res <= 0:
                skips.append(skip_row(corpus, split, row["utt_id"], row["clip"], "empty audio (0 samples)"))
            elif res > max_seconds:
                skips.append(skip_row(corpus, split, row["utt_id"], row["clip"],
                                      f"clip too long ({res:.1f} s > {max_seconds:g} s)"))
            elif _cut_short(res, row.get("expected_s")):
                skips.append(skip_row(corpus, split, row["utt_id"], row["clip"],
                                      f"clip cut short ({res:.2f} s of audio, {row['expected_s']:.2f} s by "
                                      f"StartTime/EndTime on {csv_path.name} line {row['line']})"))
            else:
                kept.append({"utt_id": row["utt_id"], "corpus": corpus, "language": language, "split": split,
                             "audio_path": str(wav.resolve()), "start_s": 0.0, "end_s": float("nan"),
                             "duration_s": float(res), "text": row["text"], "label": row["label"],
                             "source": "original", "native_id": row["native_id"], "speaker": row["speaker"],
                             "emotion_raw": row["emotion_raw"]})
        if not kept:
            reasons = [s["reason"] for s in skips if s["split"] == split and s["corpus"] == corpus][:3]
            raise TableError(f"{csv_path}: {len(table)} row(s) but none usable, so the {split} split would be "
                             f"empty; first reasons: {reasons}")
        frames[split] = pd.DataFrame(kept, columns=MANIFEST_COLUMNS + ["native_id", "speaker", "emotion_raw"])
    return frames, skips_frame(skips)


def _cut_short(seconds: float, expected: float | None) -> bool:
    return (expected is not None and seconds < CUT_SHORT_RATIO * expected
            and expected - seconds >= CUT_SHORT_MIN_GAP)
