"""SDS speed: the selection step on a MELD-train-sized manifest, and the merged-audio writing, timed separately.

Run: ``.venv/bin/python benchmarks/sds.py [--n 10000] [--writes 200]``; results are recorded in benchmarks/sds.md.

* Selection (``plan_sds``): synthetic durations drawn like MELD train (log-normal, median ≈ 2.6 s, about 70 %
  under 4 s) and MELD's class imbalance; no audio is touched.
* Writing (``apply_sds``): ``--writes`` merges over real 16 kHz wavs (one file per utterance, 0.5–3.5 s),
  first run (decode + concatenate + write) and second run (every merged wav reused).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bber_utils.core.audio import write_wav  # noqa: E402
from bber_utils.augment.sds import apply_sds, plan_sds  # noqa: E402
from bber_utils.core.labels import CLASSES  # noqa: E402

# MELD train class shares (neutral, joy, sadness, anger, surprise, disgust, fear), rounded
MELD_SHARES = np.array([0.47, 0.17, 0.07, 0.11, 0.12, 0.03, 0.03])


def synthetic_manifest(n: int, seed: int = 0, audio_dir: Path | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dur = np.clip(rng.lognormal(mean=np.log(2.6), sigma=0.6, size=n), 0.3, 30.0)
    labels = rng.choice(CLASSES, size=n, p=MELD_SHARES / MELD_SHARES.sum())
    paths = [str(audio_dir / f"u{i}.wav") if audio_dir else f"/nonexistent/u{i}.wav" for i in range(n)]
    return pd.DataFrame({"utt_id": [f"bench-train-u{i}" for i in range(n)], "corpus": "bench", "language": "en",
                         "split": "train", "audio_path": paths, "start_s": 0.0, "end_s": np.nan,
                         "duration_s": dur, "text": [f"utterance {i}" for i in range(n)], "label": labels,
                         "source": "original"})


def time_selection(n: int, ratio: float, repeats: int = 5) -> dict:
    df = synthetic_manifest(n)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        plan = plan_sds(df, ratio, seed=r)
        times.append(time.perf_counter() - t0)
    return {"n": n, "ratio": ratio, "eligible": plan.eligible, "merged": len(plan.merges),
            "mean_components": float(np.mean([len(m) for m in plan.merges])) if plan.merges else 0.0,
            "median_s": float(np.median(times)), "min_s": float(np.min(times))}


def time_writing(n_writes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = max(4 * n_writes, 50)
        df = synthetic_manifest(n, audio_dir=tmp / "audio")
        rng = np.random.default_rng(1)
        df["duration_s"] = rng.uniform(0.5, 3.5, size=n).round(3)
        for row in df.itertuples():
            write_wav(row.audio_path, (0.1 * rng.standard_normal(int(row.duration_s * 16000))).astype(np.float32))
        ratio = n_writes / int((df["duration_s"] < 4.0).sum())
        t0 = time.perf_counter()
        out = apply_sds(df, ratio, seed=0, out_dir=tmp / "sds", progress=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        apply_sds(df, ratio, seed=0, out_dir=tmp / "sds", progress=False)
        second = time.perf_counter() - t0
        merged = out.attrs["sds"]["merged"]
        seconds = float(out.loc[out["source"] == "sds", "duration_s"].sum())
    return {"merged": merged, "audio_s": seconds, "first_run_s": first, "reuse_run_s": second,
            "per_merge_ms": 1000 * first / max(merged, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--writes", type=int, default=200)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, python {platform.python_version()}")
    for ratio in (0.1, 0.5, 1.0):
        r = time_selection(args.n, ratio)
        print(f"selection n={r['n']} ratio={ratio}: {r['eligible']} eligible, {r['merged']} merges "
              f"({r['mean_components']:.2f} components each): median {r['median_s'] * 1000:.0f} ms, "
              f"min {r['min_s'] * 1000:.0f} ms")
    r = time_selection(5 * args.n, 1.0, repeats=3)
    print(f"selection n={r['n']} ratio=1.0: {r['merged']} merges: median {r['median_s'] * 1000:.0f} ms")
    w = time_writing(args.writes)
    print(f"writing: {w['merged']} merges ({w['audio_s']:.0f} s of audio): first run {w['first_run_s']:.2f} s "
          f"({w['per_merge_ms']:.1f} ms per merge), reuse run {w['reuse_run_s']:.2f} s")


if __name__ == "__main__":
    main()
