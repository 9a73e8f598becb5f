"""Real-audio benchmark: the audio branch on real acted emotional speech, speaker-independent, beside the field's
standard baselines.

Data: *Emotions in Polish speech recordings* (Mięsikowska & Świsulski 2020, Gdańsk University of Technology,
doi 10.34808/h46c-hb44, CC BY), the 16 kHz copy in ``../shared/data/real_audio/polish_emotions/`` (never copied into
the project; the benchmark exits 0 with the reason when it is absent): speakers m2–m5, six words × five
repetitions × anger / fear / neutral, 360 clips of about a second. The spoken word is the same in every emotion.

Protocol (``make real-audio`` or ``python benchmarks/real_audio.py``):

1. leave-one-speaker-out over m2–m5: four folds; in each, the next speaker (m2 → m3 → m4 → m5 → m2) is the dev
   speaker (early stopping only) and the other two train. Each fold is a ``bber prepare table`` work folder
   (``corpora.table.prepare_table``: label set anger, fear, neutral; split by speaker; language ``pl``; the word
   as the transcript) under ``runs/real_audio/fold_{speaker}``;
2. the package's trainer (``bber_utils.train.train``), three seeds, at the demo profile's sizes: the rows of
   ``ROWS`` (the recommended settings, BiFormer, SDS, and ablations that take one setting back at a time);
3. on the same folds: openSMILE eGeMAPSv02 functionals + linear SVM and MFCC mean/std + logistic regression,
   fitted on the fold's two train speakers (the model's training data; ``+ dev speaker``: on three), each with
   global and with per-speaker standardisation.

UAR over the three classes on the held-out speaker. Each result row (row, fold, seed, UAR, WAR, the 3x3 confusion,
seconds) is appended to ``benchmarks/results/real_audio.csv`` as soon as it exists (a rerun skips rows already
there); ``benchmarks/results/real_audio_table.md`` (mean ± 95 % CI over folds × seeds, per-fold means, and the
confusion matrix of the first row) is written from it and copied into ``docs/real-data.md`` between the
``real-audio-table`` markers. ``--only REGEX`` / ``--seeds`` pick rows (several workers can share the results
file); ``--table-only`` rewrites the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("BBER_SHARED") or REPO.parent / "shared")  # ../shared, or the folder BBER_SHARED names
DATA = SHARED / "data" / "real_audio" / "polish_emotions"
RESULTS = REPO / "benchmarks" / "results" / "real_audio.csv"
TABLE = REPO / "benchmarks" / "results" / "real_audio_table.md"
DOC = REPO / "docs" / "real-data.md"
MARK_START, MARK_END = "<!-- real-audio-table:start -->", "<!-- real-audio-table:end -->"
CORPUS = "polish"
CLASSES = ("anger", "fear", "neutral")
SPEAKERS = ("m2", "m3", "m4", "m5")
SEEDS = (42, 43, 44)
CITATION = ("Mięsikowska, M., & Świsulski, D. (2020). Emotions in Polish speech recordings [Dataset]. Gdańsk "
            "University of Technology. doi 10.34808/h46c-hb44. CC BY.")
COLUMNS = ["row", "fold", "seed", "uar", "war", "confusion", "seconds"]
# The demo profile's training settings (configs/demo.yaml): what a new user runs.
DEMO = dict(epochs=30, unimodal_epochs=60, batch_size=32, lr=0.002, weight_decay=0.01, scheduler="cosine",
            warmup_ratio=0.1, patience=12, hidden_dim=32, num_heads=4, num_layers=1, mamba_layers=1,
            mamba_d_state=8, mamba_d_conv=4, out_features=32, dropout=0.1, audio_pool=4)
# What moved the number (each ablation row takes one setting back to the demo profile's value): features
# z-normalised per speaker, statistics pooling, 25 frames/s, and a slower, more regularised optimisation whose best
# epoch is chosen over all 60 unimodal epochs (the demo profile's patience 12 stopped most runs after a dev-speaker
# peak in the first few epochs).
OPTIMISATION = dict(lr=0.001, dropout=0.3, patience=60)
RECOMMENDED = dict(audio_norm="speaker", pooling="stats", audio_pool=2, **OPTIMISATION)
DEMO_OPTIMISATION = {k: DEMO[k] for k in OPTIMISATION}
ROWS: dict[str, dict] = {
    "audio_only": dict(model="audio_only", **RECOMMENDED),
    "biformer": dict(model="biformer", **RECOMMENDED),
    "audio_only, demo profile": dict(model="audio_only"),
    "audio_only, no speaker norm": dict(model="audio_only", **{**RECOMMENDED, "audio_norm": "none"}),
    "audio_only, mean pooling": dict(model="audio_only", **{**RECOMMENDED, "pooling": None}),
    "audio_only, demo optimisation": dict(model="audio_only", **{**RECOMMENDED, **DEMO_OPTIMISATION}),
    "audio_only + SDS": dict(model="audio_only", sds_ratio=1.0, **RECOMMENDED),
    "audio_only, audio_pool 4": dict(model="audio_only", **{**RECOMMENDED, "audio_pool": 4}),
}
# Seeds per row: three for the rows the table reports, one for the ablations and SDS (a 2-core machine shared with
# other work: one SDS run trains on about five times the frames).
MAIN_ROWS = ("audio_only", "biformer", "audio_only, demo profile")
BASELINES = tuple(f"{b}{n}{d}" for b in ("egemaps+svm", "mfcc+lr") for n in ("", ", speaker norm")
                  for d in ("", ", + dev speaker"))


def fold_workdir(root: Path, test: str) -> Path:
    return root / f"fold_{test}"


def dev_speaker(test: str) -> str:
    return SPEAKERS[(SPEAKERS.index(test) + 1) % len(SPEAKERS)]


def prepare_fold(root: Path, test: str) -> Path:
    """The fold's work folder: a table (train / dev / test by speaker) read by ``prepare_table``."""
    from bber_utils.corpora.table import prepare_table

    labels = pd.read_csv(DATA / "labels.csv")
    dev = dev_speaker(test)
    labels["split"] = ["test" if s == test else "dev" if s == dev else "train" for s in labels["speaker"]]
    labels["utterance_id"] = labels["file"].str.replace(r"^clips/|\.wav$", "", regex=True)
    wd = fold_workdir(root, test)
    wd.mkdir(parents=True, exist_ok=True)
    table = wd / "table.csv"
    labels.to_csv(table, index=False)
    prepare_table(table, wd, corpus=CORPUS, columns={"label": "emotion", "text": "word", "audio_path": "file"},
                  language="pl", classes=",".join(CLASSES), split_by="speaker", audio_root=DATA)
    return wd


def train_row(root: Path, name: str, test: str, seed: int) -> dict:
    """One training run of ``ROWS[name]`` on a fold; its UAR on the held-out speaker."""
    from bber_utils.train import train

    t = time.perf_counter()
    cfg = dict(DEMO, workdir=str(fold_workdir(root, test)), seed=seed, device="cpu", progress=False, num_threads=1)
    cfg.update(ROWS[name])
    res = train(cfg)
    s = res.metrics["metrics"][CORPUS]["test"]
    return _row(name, test, seed, np.asarray(s["confusion"]), time.perf_counter() - t)


def _row(name: str, test: str, seed: int, confusion7: np.ndarray, seconds: float) -> dict:
    from bber_utils.core.labels import CLASSES as ALL

    idx = [ALL.index(c) for c in CLASSES]
    cm = np.asarray(confusion7)[np.ix_(idx, idx)] if np.asarray(confusion7).shape[0] == len(ALL) else confusion7
    recall = np.diag(cm) / np.maximum(cm.sum(1), 1)
    return dict(row=name, fold=test, seed=seed, uar=round(100 * float(recall.mean()), 2),
                war=round(100 * float(np.trace(cm) / max(cm.sum(), 1)), 2), confusion=json.dumps(cm.tolist()),
                seconds=round(seconds, 1))


def _features(kind: str, paths: list[str]) -> np.ndarray:
    """eGeMAPSv02 functionals (88) or MFCC mean and standard deviation (2 × 20) per clip."""
    if kind == "egemaps":
        import opensmile

        smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                feature_level=opensmile.FeatureLevel.Functionals)
        return np.stack([smile.process_file(p).to_numpy()[0] for p in paths]).astype(np.float64)
    import librosa

    from bber_utils.core.audio import load_audio

    out = []
    for p in paths:
        m = librosa.feature.mfcc(y=load_audio(p), sr=16000, n_mfcc=20, n_fft=400, hop_length=160)
        out.append(np.concatenate([m.mean(1), m.std(1)]))
    return np.stack(out)


def _standardise(x: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Per-speaker z-scores (``groups``), else the features as they are (the pipeline's scaler does it)."""
    if groups is None:
        return x
    out = np.empty_like(x)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = (x[rows] - x[rows].mean(0)) / (x[rows].std(0) + 1e-8)
    return out


def baseline_rows(cache: Path) -> list[dict]:
    """The four baselines on every fold (deterministic: one 'seed')."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    labels = pd.read_csv(DATA / "labels.csv")
    paths = [str(DATA / f) for f in labels["file"]]
    y = labels["emotion"].map(CLASSES.index).to_numpy()
    speakers = labels["speaker"].to_numpy()
    rows = []
    for kind in ("egemaps", "mfcc"):
        t = time.perf_counter()
        path, seconds = cache / f"{kind}.npy", cache / f"{kind}.seconds"
        if path.exists() and seconds.exists():  # the features and the time their extraction took
            x, total = np.load(path, allow_pickle=False), float(seconds.read_text())
        else:
            x = _features(kind, paths)
            cache.mkdir(parents=True, exist_ok=True)
            np.save(path, x, allow_pickle=False)
            total = time.perf_counter() - t
            seconds.write_text(f"{total:.1f}")
        extract_s = total / len(SPEAKERS)  # a fold's share of the extraction
        for norm, with_dev in ((n, d) for n in (False, True) for d in (False, True)):
            name = (f"{kind}+{'svm' if kind == 'egemaps' else 'lr'}" + (", speaker norm" if norm else "")
                    + (", + dev speaker" if with_dev else ""))
            xs = _standardise(x, speakers if norm else None)
            for test in SPEAKERS:
                t = time.perf_counter()
                fit = (speakers != test) & ((speakers != dev_speaker(test)) | with_dev)
                clf = (LinearSVC(C=1.0, max_iter=20000) if kind == "egemaps"
                       else LogisticRegression(C=1.0, max_iter=5000))
                model = make_pipeline(StandardScaler(), clf).fit(xs[fit], y[fit])
                scored = speakers == test
                pred = model.predict(xs[scored])
                cm = np.zeros((3, 3), int)
                np.add.at(cm, (y[scored], pred), 1)
                rows.append(_row(name, test, 0, cm, time.perf_counter() - t + extract_s))
    return rows


def _append(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row], columns=COLUMNS).to_csv(RESULTS, mode="a", header=not RESULTS.exists(), index=False)
    print(f"{row['row']:<32} {row['fold']} seed {row['seed']}: UAR {row['uar']:.1f} ({row['seconds']:.0f} s)",
          flush=True)


def _done() -> set:
    if not RESULTS.exists():
        return set()
    df = pd.read_csv(RESULTS, dtype=str, keep_default_na=False)
    return set(map(tuple, df[["row", "fold", "seed"]].to_numpy()))


def _ci(values: np.ndarray) -> str:
    """``mean ± 95 % half-width`` (Student t over the runs)."""
    from scipy import stats

    if len(values) < 2:
        return f"{values.mean():.1f}"
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return f"{values.mean():.1f} ± {half:.1f}"


def summary_table(results: pd.DataFrame) -> str:
    """Markdown: one line per row (order of ``ROWS`` then ``BASELINES``), UAR mean ± 95 % CI over folds × seeds,
    the per-fold means, WAR, seconds per run."""
    order = [r for r in (*ROWS, *BASELINES) if r in set(results["row"])]
    head = ["row", "runs", "UAR", *[f"test {s}" for s in SPEAKERS], "WAR", "s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in order:
        df = results[results["row"] == name]
        folds = [f"{df[df['fold'] == s]['uar'].mean():.1f}" if (df["fold"] == s).any() else "-" for s in SPEAKERS]
        lines.append("| " + " | ".join([name, str(len(df)), _ci(df["uar"].to_numpy(float)), *folds,
                                         f"{df['war'].mean():.1f}", f"{df['seconds'].mean():.0f}"]) + " |")
    return "\n".join(lines)


def confusion_table(results: pd.DataFrame, name: str) -> str:
    """The confusion matrix of ``name`` summed over folds and seeds (rows = true class)."""
    df = results[results["row"] == name]
    cm = sum(np.asarray(json.loads(c)) for c in df["confusion"])
    lines = [f"Confusions of `{name}`, summed over {len(df)} runs (rows: true class, columns: predicted):", "",
             "| true \\ predicted | " + " | ".join(CLASSES) + " |", "|---|" + "---|" * len(CLASSES)]
    lines += [f"| {c} | " + " | ".join(str(int(v)) for v in cm[i]) + " |" for i, c in enumerate(CLASSES)]
    return "\n".join(lines)


def machine_line() -> str:
    """``CPU model, N cores, load average, date``: where and when the table was written (the times are per run)."""
    import datetime
    import platform

    model = platform.processor() or "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"Machine: {model}, {os.cpu_count()} cores shared with other work (load average {load:.1f} when the "
            f"table was written); {datetime.date.today().isoformat()}; `s / run` is the wall time of one run.")


def write_outputs(meta: str = "") -> str:
    """``real_audio_table.md`` and the block between the markers in ``docs/real-data.md``, from the results."""
    from bber_utils.study.readme import update_readme

    results = pd.read_csv(RESULTS, keep_default_na=False)
    results = results.drop_duplicates(["row", "fold", "seed"], keep="last")
    first = next((r for r in ROWS if r in set(results["row"])), None)
    md = (f"UAR (%) over anger, fear and neutral on the held-out speaker of {CITATION} Leave-one-speaker-out "
          f"(m2–m5), mean ± 95 % CI over folds × seeds; written by benchmarks/real_audio.py from "
          f"{RESULTS.name}. {meta or machine_line()}\n\n{summary_table(results)}\n")
    if first:
        md += "\n" + confusion_table(results, first) + "\n"
    TABLE.write_text(md, encoding="utf-8")
    update_readme(DOC, md.strip(), MARK_START, MARK_END)
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(REPO / "runs" / "real_audio"))
    ap.add_argument("--only", help="regex on the row name: run only the matching rows")
    ap.add_argument("--seeds", help="comma-separated seeds (default 42,43,44)")
    ap.add_argument("--skip-baselines", action="store_true", help="no baselines in this call (e.g. a second worker)")
    ap.add_argument("--table-only", action="store_true", help="only rewrite the tables from the results file")
    args = ap.parse_args(argv)
    if args.table_only:
        print(write_outputs())
        return 0
    if not (DATA / "labels.csv").exists():
        print(f"real-audio benchmark skipped: {DATA} is absent (the Polish corpus is not shipped with the project)")
        return 0
    os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
    t0 = time.perf_counter()
    root = Path(args.workdir)
    for test in SPEAKERS:
        prepare_fold(root, test)
    done = _done()
    pick = (lambda name: re.search(args.only, name)) if args.only else (lambda name: True)
    if not args.skip_baselines and any(pick(b) for b in BASELINES):
        for row in baseline_rows(root / "baselines"):
            if pick(row["row"]) and (row["row"], row["fold"], "0") not in done:
                _append(row)
    for name in ROWS:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(SEEDS if name in MAIN_ROWS else SEEDS[:1])
        for seed in seeds:
            for test in SPEAKERS:
                if pick(name) and (name, test, str(seed)) not in done:
                    _append(train_row(root, name, test, seed))
    print(write_outputs())
    print(f"\nwall time: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
