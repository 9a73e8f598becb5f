"""Benchmark: the whole notebook sequence (``bber reproduce``) on a profile, in a fresh work folder.

Records wall time per notebook and in all, and the peak resident memory of any notebook kernel, to
``benchmarks/reproduce.md`` (appended, with the date and the machine). Usage:

    python benchmarks/reproduce.py --profile demo      # the main job of `make reproduce`
    python benchmarks/reproduce.py --profile smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

from bber_utils.notebook.pipeline import reproduce

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--workdir", help="default: a fresh temporary folder (a cold run)")
    args = ap.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix=f"bber_bench_{args.profile}_")
    t0 = time.perf_counter()
    runs = reproduce(args.profile, workdir=workdir)
    total = time.perf_counter() - t0
    peak = max(r.peak_rss_mb for r in runs)
    lines = [f"\n## {args.profile} profile — {dt.date.today()} — {os.cpu_count()} CPU cores, "
             f"{platform.machine()}, no GPU\n",
             f"Total wall time **{total:.0f} s**, peak notebook memory **{peak:.0f} MB** (cold work folder).\n",
             "| notebook | status | seconds |", "|---|---|---|"]
    lines += [f"| {r.notebook} | {r.status} | {r.seconds:.1f} |" for r in runs]
    with open(HERE / "reproduce.md", "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
