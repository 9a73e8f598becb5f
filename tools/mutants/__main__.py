"""``python -m tools.mutants [NAME ...] [--list] [--no-write]``: run the mutation check.

For each mutant, ``pytest -q -x -p no:cacheprovider -p tools.mutants.plugin <its tests>`` runs with
``BBER_MUTANT=<name>``: exit 1 = killed (a test failed, as it must), 0 = survived, anything else = error.
First the same tests run once with no mutant and must pass. Prints a markdown table (mutant, claim, tests,
result, seconds); with no NAME given it also writes it to ``benchmarks/mutants.md``. Exits non-zero when a
mutant survived or errored, or the clean run failed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from . import all_mutants

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "benchmarks" / "mutants.md"


def _pytest(tests, mutant: str | None) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "MKL_CBWR": os.environ.get("MKL_CBWR", "COMPATIBLE"), "COLUMNS": "400"}  # whole summary lines
    env.pop("BBER_MUTANT", None)
    if mutant:
        env["BBER_MUTANT"] = mutant
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "tools.mutants.plugin",
           *tests]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    return proc.returncode, time.perf_counter() - t0, (proc.stdout + proc.stderr)[-3000:]


def _why(out: str) -> str:
    """The first failing test and its exception, from pytest's short summary (``FAILED node - Error: ...``)."""
    for line in out.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            node, _, err = line.split(" ", 1)[1].partition(" - ")
            return f"{node.split('::')[-1]}: {err.split(':')[0] or 'failed'}"
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.mutants", description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/mutants.md")
    args = ap.parse_args(argv)
    mutants = all_mutants()
    if args.names:
        unknown = sorted(set(args.names) - {m.name for m in mutants})
        if unknown:
            ap.error(f"unknown mutant(s) {unknown}; known: {', '.join(m.name for m in mutants)}")
        mutants = [m for m in mutants if m.name in args.names]
    if args.list:
        for m in mutants:
            print(f"{m.name}: {m.claim}\n    {' '.join(m.tests)}")
        return 0

    t_start = time.perf_counter()
    tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
    rc, secs, out = _pytest(tests, None)
    print(f"clean run of the {len(tests)} cited tests: exit {rc} in {secs:.0f} s", flush=True)
    if rc != 0:
        print(out)
    rows, bad = [], rc != 0
    for m in mutants:
        if rc != 0:
            result, secs = "error (clean run failed)", 0.0
        else:
            code, secs, out = _pytest(m.tests, m.name)
            result = {1: "killed", 0: "SURVIVED"}.get(code, f"error (exit {code})")
            if code not in (0, 1):
                print(out)
            why = _why(out) if code == 1 else ""
        bad |= result != "killed"
        rows.append((m, result + (f" ({why})" if rc == 0 and why else ""), secs))
        print(f"{m.name}: {rows[-1][1]} ({secs:.0f} s)", flush=True)
    total = time.perf_counter() - t_start
    killed = sum(r.startswith("killed") for _, r, _ in rows)
    lines = ["| mutant | claim it re-introduces | tests that must fail | result | s |", "|---|---|---|---|---|"]
    lines += [f"| `{m.name}` | {_cell(m.claim)} | {'<br>'.join(f'`{t}`' for t in m.tests)} | {r} | {s:.0f} |"
              for m, r, s in rows]
    table = "\n".join(lines)
    print(table)
    print(f"{killed} of {len(rows)} mutants killed; clean run {'passed' if rc == 0 else 'FAILED'}; "
          f"{total:.0f} s in all")
    if not args.names and not args.no_write:
        head = (f"# Mutation check\n\n`python -m tools.mutants` (`make mutants`): each mutant re-introduces, by "
                f"monkeypatching at run time, a reference-code behaviour of the README's \"Where we differ\" table "
                f"or a fixed defect; the tests it names must fail. The same tests first pass with no mutant.\n\n"
                f"Last run: {datetime.date.today().isoformat()}, {platform.machine()} "
                f"{os.cpu_count()} cores, python {platform.python_version()}: **{killed} of {len(rows)} killed**, "
                f"clean run {'passed' if rc == 0 else 'FAILED'}, {total:.0f} s wall time in all.\n\n")
        OUT.write_text(head + table + "\n", encoding="utf-8")
        print(f"wrote {OUT.relative_to(REPO)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
