"""Before and after, per notebook: two ``bber reproduce`` runs' ``summary.csv`` side by side.

``python benchmarks/reproduce_compare.py --before benchmarks/results/reproduce_demo_before.csv
--after runs/demo/notebooks/summary.csv --out benchmarks/results/reproduce_demo_before_after.md`` writes a markdown
table of wall and CPU seconds per notebook and in all (``summary.csv`` is written by ``bber reproduce``; the
``before`` file is a copy of an earlier run's, kept in ``benchmarks/results``), and the after run's peak memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def compare(before: pd.DataFrame, after: pd.DataFrame) -> str:
    """Markdown: notebook, wall s before/after/change, CPU s before/after; the last line sums them."""
    cols = ["seconds", "cpu_seconds"]
    df = before[["notebook", *cols]].merge(after[["notebook", *cols]], on="notebook", how="outer",
                                           suffixes=("_before", "_after"), sort=False).set_index("notebook")
    df.loc["all notebooks"] = df.sum()
    lines = ["| notebook | wall s before | wall s after | change | CPU s before | CPU s after |",
             "|---|---|---|---|---|---|"]
    for name, r in df.iterrows():
        change = r["seconds_after"] - r["seconds_before"]
        lines.append(f"| {name} | {r['seconds_before']:.1f} | {r['seconds_after']:.1f} | {change:+.1f} | "
                     f"{r['cpu_seconds_before']:.1f} | {r['cpu_seconds_after']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    missing = [p for p in (args.before, args.after) if not Path(p).is_file()]
    if missing:
        print(f"no such summary file: {missing[0]} (bber reproduce writes <workdir>/notebooks/summary.csv)",
              file=sys.stderr)
        return 2
    before, after = pd.read_csv(args.before), pd.read_csv(args.after)
    md = compare(before, after)
    peak = after["peak_rss_mb"].max()
    Path(args.out).write_text(f"Written by benchmarks/reproduce_compare.py from {Path(args.before).name} (before) and "
                              f"{Path(args.after).name} (after); peak notebook memory after: {peak:.0f} MB.\n\n{md}\n",
                              encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
