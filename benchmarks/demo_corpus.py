"""Benchmark: build time of the built-in demo corpus, and a check that its modalities are ambiguous by design.

    .venv/bin/python benchmarks/demo_corpus.py [--per-class 40] [--per-class-smoke 3] [--no-check]

Prints the wall and CPU time of each stage (text plan, espeak-ng synthesis, MELD writing with mp4 encoding,
RESD parquet writing) for the demo profile (per_class=40) and the smoke profile (per_class=3), the time of a
second (idempotent) call, and the machine's load average (other jobs on a shared machine slow every stage).

The check (``--no-check`` skips it) fits three logistic regressions per language on the demo profile's corpus,
train -> test: audio only (12 prosodic statistics: duration, loudness, pitch and its range, voicing, spectral
centroid), text only (TF-IDF of word 1-2-grams), and both (the two feature sets concatenated). By design
fusion should beat either modality; the unweighted average recall (UAR) of each is printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def build_timed(out: Path, per_class: int, seed: int = 42) -> dict[str, float]:
    """Run build_demo_corpus's stages one by one (same code path) and time them."""
    from bber_utils.corpora import demo

    times: dict[str, float] = {}

    def stage(name, fn, *a):
        t, c = time.perf_counter(), _cpu()
        result = fn(*a)
        times[f"{name} wall"] = times.get(f"{name} wall", 0) + time.perf_counter() - t
        times[f"{name} cpu"] = times.get(f"{name} cpu", 0) + _cpu() - c
        return result

    t0, c0 = time.perf_counter(), _cpu()
    n = 0
    for language in ("en", "ru"):
        rows = stage("plan (compose texts)", demo.plan_rows, language, per_class, seed, 0.4, 0.4)
        (demo._assign_meld_ids if language == "en" else demo._assign_resd_names)(rows, seed)
        stage(f"espeak-ng {language}", demo._synthesize, rows, out / "wav" / language, language, 2, False)
        if language == "en":
            stage("MELD csv + mp4 (ffmpeg AAC)", demo._write_meld, out / "demo_en", rows, "mp4", 2)
        else:
            stage("RESD parquet", demo._write_resd, out / "demo_ru", rows)
        n += len(rows)
    times["total wall"], times["total cpu"], times["utterances"] = time.perf_counter() - t0, _cpu() - c0, n
    return times


def end_to_end(out: Path, per_class: int) -> tuple[float, float]:
    from bber_utils.corpora.demo import build_demo_corpus

    t = time.perf_counter()
    build_demo_corpus(out, per_class=per_class, seed=42)
    first = time.perf_counter() - t
    t = time.perf_counter()
    build_demo_corpus(out, per_class=per_class, seed=42)
    return first, time.perf_counter() - t


def prosody_features(wav) -> list[float]:
    import librosa
    import numpy as np

    sr = 16000
    rms = librosa.feature.rms(y=wav, frame_length=640, hop_length=320)[0]
    voiced = rms > 0.1 * rms.max()
    f0 = librosa.yin(wav, fmin=60, fmax=500, sr=sr, frame_length=1024, hop_length=320)
    n = min(len(f0), len(voiced))
    f0v = f0[:n][voiced[:n]] if voiced[:n].any() else f0
    cent = librosa.feature.spectral_centroid(y=wav, sr=sr, n_fft=1024, hop_length=320)[0]
    return [len(wav) / sr, voiced.mean(), np.log(rms[voiced].mean() + 1e-6), np.log(rms[voiced].std() + 1e-6),
            np.median(f0v), np.percentile(f0v, 90) - np.percentile(f0v, 10), f0v.std(), np.log(f0v).std(),
            cent[voiced].mean(), cent[voiced].std(), float(voiced.sum()) / (len(wav) / sr),
            np.abs(np.diff(f0v)).mean() if len(f0v) > 1 else 0.0]


def ambiguity_check(out: Path) -> list[tuple[str, float, float, float]]:
    """UAR of audio-only, text-only and fused logistic regressions, per language (train -> test)."""
    import io

    import numpy as np
    import pandas as pd
    import soundfile as sf
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import recall_score
    from sklearn.preprocessing import StandardScaler

    from bber_utils.core.audio import load_audio
    from bber_utils.core.labels import MELD_TO_CLASS, RESD_TO_CLASS

    data = {}
    en = out / "demo_en"
    for split, folder in (("train", "train_splits"), ("test", "output_repeated_splits_test")):
        df = pd.read_csv(en / f"{split}_sent_emo.csv")
        feats = [prosody_features(load_audio(en / folder / f"dia{d}_utt{u}.mp4"))
                 for d, u in zip(df["Dialogue_ID"], df["Utterance_ID"])]
        data[("en", split)] = (np.array(feats), df["Utterance"].tolist(), df["Emotion"].map(MELD_TO_CLASS).tolist())
    for split in ("train", "test"):
        df = pd.read_parquet(out / "demo_ru" / "data" / f"{split}-00000-of-00001.parquet")
        feats = [prosody_features(sf.read(io.BytesIO(s["bytes"]), dtype="float32")[0]) for s in df["speech"]]
        data[("ru", split)] = (np.array(feats), df["text"].tolist(), df["emotion"].map(RESD_TO_CLASS).tolist())
    rows = []
    for lang in ("en", "ru"):
        (a_tr, t_tr, y_tr), (a_te, t_te, y_te) = data[(lang, "train")], data[(lang, "test")]
        scaler = StandardScaler().fit(a_tr)
        tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True).fit(t_tr)
        sets = {"audio": (csr_matrix(scaler.transform(a_tr)), csr_matrix(scaler.transform(a_te))),
                "text": (tfidf.transform(t_tr), tfidf.transform(t_te))}
        sets["both"] = (hstack([sets["audio"][0], sets["text"][0]]).tocsr(),
                        hstack([sets["audio"][1], sets["text"][1]]).tocsr())
        uar = {}
        for name, (x_tr, x_te) in sets.items():
            clf = LogisticRegression(max_iter=3000, C=2.0, class_weight="balanced").fit(x_tr, y_tr)
            uar[name] = recall_score(y_te, clf.predict(x_te), average="macro")
        rows.append((lang, uar["audio"], uar["text"], uar["both"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--per-class-smoke", type=int, default=3)
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, n in (("demo", args.per_class), ("smoke", args.per_class_smoke)):
            first, again = end_to_end(tmp / f"e2e_{label}", n)
            print(f"{label} profile (per_class={n}): build_demo_corpus {first:.1f} s, second call {again * 1000:.1f} ms")
        times = build_timed(tmp / "staged", args.per_class)
        print(f"stages for per_class={args.per_class} ({int(times.pop('utterances'))} utterances):")
        for k, v in times.items():
            print(f"  {k:40s} {v:7.1f} s")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        if not args.no_check:
            print("ambiguity check (UAR on test, logistic regression):  language  audio  text  audio+text")
            for lang, a, t, b in ambiguity_check(tmp / "e2e_demo"):
                print(f"  {lang}  {a:.3f}  {t:.3f}  {b:.3f}")


if __name__ == "__main__":
    main()
