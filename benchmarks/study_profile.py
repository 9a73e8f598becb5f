"""Where a study's training runs spend their time (notebook 07's runs, issue 28's profile).

``python benchmarks/study_profile.py [--workdir runs/demo] [--out benchmarks/results/study_profile_demo.md]``
reads the study's run folders (``ablations/study.csv``'s runs) and, for each, its ``metrics.json``:
``phases`` (rows, SDS clips and missing features = ``inputs_s``; stage 1 trained or read = ``stage1_s``; stage 2
and scoring = ``stage2_s``) and ``wall_time_s``, and the run's span from its ``params.yaml`` (written just before
the child starts) to its ``metrics.json`` (its last file): span - wall time = the child's start-up (imports,
reading the profile) and what follows ``train``. The table sums them per setting over seeds, and in all.
Runs written before ``phases`` existed show only their wall time; a run without ``params.yaml`` was trained by
notebook 06 (seed 42's BiFormer) and is only read by the study, so it is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PHASES = ("inputs_s", "stage1_s", "stage2_s")


def run_rows(workdir: Path) -> pd.DataFrame:
    """One row per run of the study: setting, seed, span, wall time and phases (seconds)."""
    study = pd.read_csv(workdir / "ablations" / "study.csv")
    rows = []
    for setting, runs in study.drop_duplicates("setting")[["setting", "runs"]].itertuples(index=False):
        for run in str(runs).split(";"):
            folder = workdir / "train" / run
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            params = folder / "params.yaml"
            if not params.exists():  # trained by notebook 06 (seed 42's BiFormer), only read by the study
                continue
            span = (folder / "metrics.json").stat().st_mtime - params.stat().st_mtime
            phases = metrics.get("phases") or {}
            rows.append({"setting": setting, "run": run, "seed": metrics.get("seed"), "span_s": span,
                         "wall_s": metrics["wall_time_s"], **{p: phases.get(p) for p in PHASES}})
    return pd.DataFrame(rows)


def table(rows: pd.DataFrame) -> str:
    """Markdown: per setting, the seconds summed over its runs; the last line sums the study."""
    df = rows.assign(startup_s=rows["span_s"] - rows["wall_s"])
    cols = ["span_s", "startup_s", "wall_s", *PHASES]
    per = df.groupby("setting", sort=False)[cols].sum(min_count=1)
    per.insert(0, "runs", df.groupby("setting", sort=False).size())
    total = per.sum(min_count=1).to_frame("all runs").T
    out = pd.concat([per, total])
    head = ["setting", "runs", "span", "start-up", "train()", "inputs", "stage 1", "stage 2"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in out.iterrows():
        cells = [f"{int(r['runs'])}"] + ["–" if pd.isna(r[c]) else f"{r[c]:.1f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(REPO / "runs" / "demo"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "study_profile_demo.md"))
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    if not (workdir / "ablations" / "study.csv").exists():
        print(f"no study in {workdir} (ablations/study.csv): run notebook 07 first", file=sys.stderr)
        return 2
    md = table(run_rows(workdir))
    Path(args.out).write_text("Seconds summed over each setting's runs in notebook 07 (written by "
                              f"benchmarks/study_profile.py from {workdir.name}'s run folders; the runs go two at "
                              f"a time, so the study's wall time is about half the total span).\n\n{md}\n",
                              encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
