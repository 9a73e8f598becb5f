"""Benchmark: one demo-profile training run (wall time, training samples/s) and fusion vs unimodal over seeds.

    .venv/bin/python benchmarks/train.py [--profile demo] [--workdir /tmp/bench_train] [--seeds 42 43 44]
                                         [--models biformer] [key=value ...]

Prepares the demo corpus in ``--workdir`` if needed, then for each seed and model runs ``bber_utils.train.train``
with the profile's parameters (overrides as key=value) and ``resume=False`` (nothing reused but the feature store
and, after the first seed, nothing else: the unimodal cache key contains the seed). Prints one row per run and a
summary of the test mean per corpus: fusion vs audio-only vs text-only, mean ± sd over seeds.
Record the output in benchmarks/train.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--workdir", default="/tmp/bench_train")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--models", nargs="+", default=["biformer"])
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()

    import torch

    from bber_utils.core.profiles import parse_overrides
    from bber_utils.train.profiles import load_profile
    from bber_utils.corpora import available_corpora, prepare
    from bber_utils.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_profile(args.profile)
    params.update(parse_overrides(args.overrides))
    params.update(workdir=args.workdir, progress=False, resume=False)
    t0 = time.perf_counter()
    if not available_corpora(args.workdir):
        prepare(params.get("dataset", "demo"), args.workdir, demo_per_class=params.get("demo_per_class", 40),
                seed=params.get("seed", 42), progress=False)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}")
    print(f"data prepared in {time.perf_counter() - t0:.1f} s")

    rows = []
    for seed in args.seeds:
        for model in args.models:
            t = time.perf_counter()
            res = train({**params, "seed": seed, "model": model, "run_name": f"bench-{model}-s{seed}"})
            wall = time.perf_counter() - t
            hist = res.history
            n_train = sum(res.metrics["n_train"].values())
            sps = n_train * len(hist) / hist["seconds"].sum()
            table = res.table(("test",))
            for r in table.itertuples():
                rows.append({"seed": seed, "run_model": model, "model": r.model, "corpus": r.corpus,
                             "test_mean": r.mean, "test_uar": r.uar, "wall_s": wall, "epochs": len(hist),
                             "samples_per_s": sps})
            print(f"seed {seed} {model}: wall {wall:.1f} s, {len(hist)} epochs, {sps:.0f} train samples/s, "
                  f"best epoch {res.best_epoch}")
    df = pd.DataFrame(rows)
    print(df.round(3).to_string(index=False))
    summary = (df.groupby(["corpus", "model"])["test_mean"].agg(["mean", "std", "count"]).round(3))
    print("\ntest mean (UAR+WAR+MF1+WF1)/4, over seeds:")
    print(summary.to_string())


if __name__ == "__main__":
    main()
