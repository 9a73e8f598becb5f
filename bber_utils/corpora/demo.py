"""The built-in bilingual demo corpus: generated here, written in MELD's and RESD's published layouts.

``build_demo_corpus(out_dir)`` writes::

    out_dir/demo_en/   English, MELD layout: {train,dev,test}_sent_emo.csv (the exact MELD columns, MELD emotion
                       names joy/sadness/...) and dia{D}_utt{U}.mp4 (audio-only AAC, 16 kHz) in train_splits/,
                       dev_splits_complete/, output_repeated_splits_test/
    out_dir/demo_ru/   Russian, RESD hub layout: data/{train,test}-00000-of-00001.parquet with name, path, emotion
                       (RESD names happiness/enthusiasm/...), speech = {bytes: wav, path: name.wav}, plus text
    out_dir/demo_design.csv   how every row was made (kept apart: nothing in the corpora tells it)

Text comes from the built-in TUG templates, speech from espeak-ng (16 kHz) with per-emotion prosody, several
speakers per language and a small random variation per utterance.

Each modality alone is ambiguous, so that fusion visibly helps. Every emotional (non-neutral) class is split in
three equal *cases*: ``neutral_words`` (emotionally neutral wording spoken with the emotion's prosody),
``flat_prosody`` (the emotion's wording spoken with neutral prosody) and ``both``. Neutral rows have neutral
wording (built-in ``neutral`` and ``neutral_wording`` templates) and neutral prosody. On top of that, anger and
happy have similar prosody (loud, fast), as have sad and disgust (low, slow) — their words differ; while
surprise/fear and anger/disgust share words (in ``both`` rows half of the wording comes from the partner class)
— their prosody differs.

Sizes: per language and class, ``per_class`` train rows, ``round(per_class * dev_fraction)`` dev rows and
``round(per_class * test_fraction)`` test rows (at least one each). RESD has no dev split, so the Russian
train parquet holds train + dev rows and the reader draws its own dev split. The same options give the same
corpus, byte for byte; a second call with the same options returns at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bber_utils.core.fileio import atomic_write
from bber_utils.core.labels import CLASSES, MELD_TO_CLASS, RESD_TO_CLASS
from bber_utils.corpora.manifest import make_utt_id
from bber_utils.synthesis.templates import compose_utterances, load_templates, strip_tags
from bber_utils.synthesis.tts import EMOTION_PROSODY, SPEAKERS, EspeakBackend, Prosody

DEMO_VERSION = 1
DEMO_CORPORA = {"en": "demo_en", "ru": "demo_ru"}
CASES = ("neutral_words", "flat_prosody", "both")
# Classes whose wording is partly shared (in "both" rows) while their prosody differs.
WORD_PARTNER = {"surprise": "fear", "fear": "surprise", "anger": "disgust", "disgust": "anger"}
PARTNER_WORDS_SHARE = 0.5
NEUTRAL_WORDING_SHARE = 1 / 3  # neutral rows whose text comes from neutral_wording (the rest: neutral)

MELD_EMOTION = {cls: meld for meld, cls in MELD_TO_CLASS.items()}
RESD_EMOTION = {cls: resd for resd, cls in RESD_TO_CLASS.items()}
RESD_LETTER = {"anger": "a", "disgust": "d", "enthusiasm": "e", "fear": "f", "happiness": "h", "neutral": "n",
               "sadness": "s"}
RESD_SESSION_PAIR = {"anger": "anger_fear", "fear": "anger_fear", "disgust": "disgust_sadness",
                     "sadness": "disgust_sadness", "happiness": "happiness_enthusiasm",
                     "enthusiasm": "happiness_enthusiasm", "neutral": "neutral_anger"}
MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
                "Episode", "StartTime", "EndTime"]
MELD_SENTIMENT = {"neutral": "neutral", "joy": "positive", "surprise": "positive", "sadness": "negative",
                  "anger": "negative", "disgust": "negative", "fear": "negative"}
MELD_FOLDERS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
RESD_FILES = {"train": "data/train-00000-of-00001.parquet", "test": "data/test-00000-of-00001.parquet"}
MARKER = ".bber_demo.json"
MAX_DROPPED_SHARE = 0.05  # more failed syntheses than this means something is broken: stop instead


def split_sizes(per_class: int, dev_fraction: float, test_fraction: float) -> dict[str, int]:
    """Rows per class and language in each split: ``{"train": per_class, "dev": .., "test": ..}``."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    return {"train": int(per_class), "dev": max(1, int(round(per_class * dev_fraction))),
            "test": max(1, int(round(per_class * test_fraction)))}


def _seed(seed: int, *parts: str) -> int:
    """A stable integer seed for a named sub-stream (no Python ``hash``)."""

    return int(np.random.SeedSequence([int(seed)] + [zlib.crc32(p.encode()) for p in parts]).generate_state(1)[0])


def plan_rows(language: str, per_class: int, seed: int, dev_fraction: float, test_fraction: float) -> list[dict]:
    """Every utterance of one language: split, label, case, text, speaker and prosody (no audio yet)."""

    sizes = split_sizes(per_class, dev_fraction, test_fraction)
    rng = np.random.default_rng(_seed(seed, "plan", language))
    rows: list[dict] = []
    for split in ("train", "dev", "test"):
        for label in CLASSES:
            n = sizes[split]
            if label == "neutral":
                cases = ["neutral"] * n
            else:
                offset = int(rng.integers(3))  # balanced over the three cases, ties broken at random
                cases = [CASES[(k + offset) % 3] for k in range(n)]
                rng.shuffle(cases)
            for case in cases:
                if label == "neutral":
                    source = "neutral_wording" if rng.random() < NEUTRAL_WORDING_SHARE else "neutral"
                elif case == "neutral_words":
                    source = "neutral_wording"
                elif case == "both" and label in WORD_PARTNER and rng.random() < PARTNER_WORDS_SHARE:
                    source = WORD_PARTNER[label]
                else:
                    source = label
                rows.append({"language": language, "split": split, "label": label, "case": case,
                             "text_source": source,
                             "prosody_emotion": label if case in ("neutral_words", "both") else "neutral"})
    # Texts: one pool of unique utterances per template source, so no sentence appears twice in a language.
    need: dict[str, int] = {}
    for r in rows:
        need[r["text_source"]] = need.get(r["text_source"], 0) + 1
    pools: dict[str, list[str]] = {}
    for source in sorted(need):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pool = compose_utterances(load_templates(language, source), need[source],
                                      seed=_seed(seed, "text", language, source), min_words=5, max_words=20)
        if len(pool) < need[source]:
            raise RuntimeError(f"demo corpus: only {len(pool)} unique {language}/{source} utterances for "
                               f"{need[source]} rows; lower per_class")
        pools[source] = pool
    used = {s: 0 for s in pools}
    speakers = SPEAKERS[language]
    for r in rows:
        r["text"] = strip_tags(pools[r["text_source"]][used[r["text_source"]]])
        used[r["text_source"]] += 1
        r["speaker"] = speakers[int(rng.integers(len(speakers)))].name
        p = EMOTION_PROSODY[r["prosody_emotion"]].jittered(rng, 1.0)
        r.update(pitch=round(p.pitch, 2), range_pct=round(p.range_pct, 2), rate=round(p.rate, 2),
                 amplitude=round(p.amplitude, 2), word_gap=round(p.word_gap, 2))
    return rows


def _assign_meld_ids(rows: list[dict], seed: int) -> None:
    """Shuffle each split and cut it into dialogues of 3-8 utterances: Dialogue_ID, Utterance_ID, times."""
    rng = np.random.default_rng(_seed(seed, "meld-ids"))
    for split in ("train", "dev", "test"):
        idx = [i for i, r in enumerate(rows) if r["split"] == split]
        order = [idx[k] for k in rng.permutation(len(idx))]
        dia, pos = 0, 0
        while pos < len(order):
            size = int(rng.integers(3, 9))
            for u, i in enumerate(order[pos:pos + size]):
                rows[i].update(dialogue_id=dia, utterance_id=u, order=pos + u,
                               native_id=f"dia{dia}_utt{u}", published_split=split)
            dia, pos = dia + 1, pos + size


def _assign_resd_names(rows: list[dict], seed: int) -> None:
    """RESD names ``{NN}_{emo1}_{emo2}_{x}_{NNN}``; dev rows go into the published train split."""
    rng = np.random.default_rng(_seed(seed, "resd-names"))
    order = rng.permutation(len(rows))
    for k, i in enumerate(order):
        r = rows[i]
        emotion = RESD_EMOTION[r["label"]]
        r["published_split"] = "test" if r["split"] == "test" else "train"
        r["native_id"] = f"{r['speaker']}_{RESD_SESSION_PAIR[emotion]}_{RESD_LETTER[emotion]}_{k + 1:03d}"
        r["order"] = k


def _clock(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _row_digest(r: dict) -> str:
    key = json.dumps([r["text"], r["speaker"], r["pitch"], r["range_pct"], r["rate"], r["amplitude"], r["word_gap"]],
                     ensure_ascii=False)
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def _synthesize(rows: list[dict], wav_dir: Path, language: str, workers: int, progress: bool) -> None:
    tts = EspeakBackend(workers=workers, tags="remove")
    # The name holds a digest of everything that shapes the sound, so a resumed build never reuses a stale wav.
    paths = [wav_dir / f"{r['published_split']}_{r['native_id']}_{_row_digest(r)}.wav" for r in rows]
    prosody = [Prosody(r["pitch"], r["range_pct"], r["rate"], r["amplitude"], r["word_gap"]) for r in rows]
    results = tts.synthesize([r["text"] for r in rows], paths, emotion=[r["label"] for r in rows],
                             language=language, speakers=[r["speaker"] for r in rows], prosody=prosody,
                             progress=progress)
    for r, p, res in zip(rows, paths, results):
        r.update(wav=str(p), status="ok" if res.ok else "dropped", reason=res.reason,
                 duration_s=round(res.duration_s, 4))


def _encode_mp4(jobs: list[tuple[Path, Path]], workers: int) -> list[str]:
    """wav -> audio-only AAC mp4, bit-exact (same input, same bytes), 16 clips per ffmpeg process."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is needed to write the demo's MELD-style mp4 clips (apt-get install ffmpeg); "
                           "or pass clip_format='wav'")

    def run(batch: list[tuple[Path, Path]]) -> str:
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
        for src, _ in batch:
            cmd += ["-i", str(src)]
        for k, (_, dst) in enumerate(batch):
            cmd += ["-map", f"{k}:a", "-ac", "1", "-ar", "16000", "-c:a", "aac", "-aac_coder", "fast", "-b:a", "48k", "-vn",
                    "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", str(dst)]
        proc = subprocess.run(cmd, capture_output=True)
        return "" if proc.returncode == 0 else proc.stderr.decode(errors="replace").strip()

    batches = [jobs[k:k + 16] for k in range(0, len(jobs), 16)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [e for e in pool.map(run, batches) if e]


def _write_meld(root: Path, rows: list[dict], clip_format: str, workers: int) -> None:
    jobs: list[tuple[Path, Path]] = []
    for split, folder in MELD_FOLDERS.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        split_rows = sorted((r for r in rows if r["split"] == split and r["status"] == "ok"),
                            key=lambda r: r["order"])
        table, t = [], 0.0
        for n, r in enumerate(split_rows, start=1):
            emotion = MELD_EMOTION[r["label"]]
            start, t = t + 0.5, t + 0.5 + r["duration_s"]
            table.append({"Sr No.": n, "Utterance": r["text"], "Speaker": r["speaker"], "Emotion": emotion,
                          "Sentiment": MELD_SENTIMENT[emotion], "Dialogue_ID": r["dialogue_id"],
                          "Utterance_ID": r["utterance_id"], "Season": 1 + r["dialogue_id"] // 24,
                          "Episode": 1 + r["dialogue_id"] % 24, "StartTime": _clock(start), "EndTime": _clock(t)})
            clip = root / folder / f"{r['native_id']}.{clip_format}"
            if clip_format == "wav":
                shutil.copyfile(r["wav"], clip)
            else:
                jobs.append((Path(r["wav"]), clip))
        pd.DataFrame(table, columns=MELD_COLUMNS).to_csv(root / f"{split}_sent_emo.csv", index=False,
                                                          encoding="utf-8")
    errors = _encode_mp4(jobs, workers) if jobs else []
    if errors:
        raise RuntimeError(f"ffmpeg failed to write demo clips in {root}: {errors[0]}")


def _write_resd(root: Path, rows: list[dict]) -> None:
    for split, rel in RESD_FILES.items():
        split_rows = sorted((r for r in rows if r["published_split"] == split and r["status"] == "ok"),
                            key=lambda r: r["order"])
        names = [r["native_id"] for r in split_rows]
        table = pa.table({
            "name": names,
            "path": [f"{n}.wav" for n in names],
            "emotion": [RESD_EMOTION[r["label"]] for r in split_rows],
            "speech": pa.array([{"bytes": Path(r["wav"]).read_bytes(), "path": f"{r['native_id']}.wav"}
                                for r in split_rows],
                               type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "text": [r["text"] for r in split_rows],
        })
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)


DESIGN_COLUMNS = ["native_id", "published_split", "label", "case", "text_source", "prosody_emotion", "speaker",
                  "pitch", "range_pct", "rate", "amplitude", "word_gap", "duration_s", "status", "reason", "text"]


def _design_rows(rows: list[dict], corpus: str) -> list[dict]:
    """``demo_design.csv`` rows: how each utterance was made, keyed by its manifest ``utt_id``."""

    return [{"corpus": corpus, "utt_id": make_utt_id(corpus, r["published_split"], r["native_id"]),
             "planned_split": r["split"], **{k: r[k] for k in DESIGN_COLUMNS}}
            for r in sorted(rows, key=lambda r: (r["published_split"], r["order"]))]


def _options(per_class, seed, dev_fraction, test_fraction, clip_format) -> dict:
    return {"version": DEMO_VERSION, "per_class": int(per_class), "seed": int(seed),
            "dev_fraction": float(dev_fraction), "test_fraction": float(test_fraction), "clip_format": clip_format}


def _is_built(root: Path, options: dict) -> bool:
    try:
        return json.loads((root / MARKER).read_text())["options"] == options
    except (OSError, ValueError, KeyError):
        return False


def build_demo_corpus(out_dir: str | os.PathLike, per_class: int = 40, seed: int = 42, dev_fraction: float = 0.4,
                      test_fraction: float = 0.4, clip_format: str = "mp4", workers: int = 2,
                      progress: bool = False) -> dict[str, Path]:
    """Build (or find already built) the English and Russian demo corpora under ``out_dir``.

    Returns ``{"demo_en": out_dir/"demo_en", "demo_ru": out_dir/"demo_ru"}``. ``clip_format`` is ``"mp4"``
    (MELD's format, what the MELD reader expects; the default and the demo profile's choice) or ``"wav"``
    (faster, same names with ``.wav``; the MELD reader reads only mp4). An utterance whose synthesis fails is
    dropped, counted in a warning and marked in ``demo_design.csv``; more than 5 % failures is an error.
    The wavs are made in ``out_dir/.demo_build`` (kept until the end, so an interrupted build resumes) and
    each corpus folder is replaced only when complete; a folder that this function did not write is never
    removed.
    """

    if clip_format not in ("mp4", "wav"):
        raise ValueError(f"clip_format must be 'mp4' or 'wav', not {clip_format!r}")
    out_dir = Path(out_dir)
    options = _options(per_class, seed, dev_fraction, test_fraction, clip_format)
    roots = {corpus: out_dir / corpus for corpus in DEMO_CORPORA.values()}
    if all(_is_built(root, options) for root in roots.values()) and (out_dir / "demo_design.csv").exists():
        return roots
    for root in roots.values():
        if root.exists() and not (root / MARKER).exists():
            raise FileExistsError(f"{root} exists and was not written by build_demo_corpus; move it away or "
                                  f"choose another out_dir")
    work = out_dir / ".demo_build" / f"seed{seed}_n{per_class}"  # wavs kept until done: a rerun resumes
    design: list[dict] = []
    dropped: list[str] = []
    for language, corpus in DEMO_CORPORA.items():
        rows = plan_rows(language, per_class, seed, dev_fraction, test_fraction)
        (_assign_meld_ids if language == "en" else _assign_resd_names)(rows, seed)
        _synthesize(rows, work / language, language, workers, progress)
        lost = [f"{corpus} {r['native_id']}: {r['reason']}" for r in rows if r["status"] != "ok"]
        if len(lost) > MAX_DROPPED_SHARE * len(rows):
            raise RuntimeError(f"demo corpus: synthesis failed for {len(lost)} of {len(rows)} {corpus} utterances, "
                               f"e.g. {lost[0]}")
        dropped += lost
        root, tmp = roots[corpus], out_dir / f".{corpus}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        if language == "en":
            _write_meld(tmp, rows, clip_format, workers)
        else:
            _write_resd(tmp, rows)
        (tmp / MARKER).write_text(json.dumps({"options": options}, indent=1))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
        design += _design_rows(rows, corpus)
    atomic_write(out_dir / "demo_design.csv", lambda tmp: pd.DataFrame(design).to_csv(tmp, index=False))
    shutil.rmtree(work, ignore_errors=True)
    if dropped:
        warnings.warn(f"demo corpus: {len(dropped)} utterances dropped (failed synthesis), e.g. {dropped[0]}; "
                      f"see {out_dir / 'demo_design.csv'}", stacklevel=2)
    if (out_dir / ".demo_build").exists() and not any((out_dir / ".demo_build").iterdir()):
        (out_dir / ".demo_build").rmdir()
    return roots
