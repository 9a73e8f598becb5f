"""Run the notebook sequence with papermill: ``bber reproduce`` and ``make reproduce``.

Each notebook is executed with the profile's parameters into ``<workdir>/notebooks/``; a summary table
(notebook, status, seconds, peak memory) is written next to them as ``summary.csv``. A failing notebook stops
the run with a message naming the notebook and the cell, and its executed copy is kept for inspection.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import load_profile
from .paths import REPO_ROOT, run_dirs

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "bber"


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; names the notebook, the cell and the kept executed copy."""


@dataclass
class NotebookRun:
    notebook: str
    status: str
    seconds: float
    peak_rss_mb: float
    output: str


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """``notebooks/NN_name.ipynb`` in order."""
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(notebooks: list[Path], from_: str | None = None, only: list[str] | None = None) -> list[Path]:
    """Filter by number prefix: ``from_="03"`` starts at 03; ``only=["01", "06"]`` keeps just those."""
    def num(p: Path) -> str:
        return p.name[:2]

    known = {num(p) for p in notebooks}
    for n in ([from_] if from_ else []) + list(only or []):
        if str(n).zfill(2) not in known:
            raise ValueError(f"no notebook numbered {n!r}; have {sorted(known)}")
    if from_:
        notebooks = [p for p in notebooks if num(p) >= str(from_).zfill(2)]
    if only:
        keep = {str(n).zfill(2) for n in only}
        notebooks = [p for p in notebooks if num(p) in keep]
    return notebooks


def _kernel_name() -> str:
    """The project's kernel if registered (``make`` does it), else the current interpreter's ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def _peak_child_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux; children = the finished notebook kernels.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def run_notebook(src: Path, dst: Path, parameters: dict[str, Any], kernel: str | None = None) -> None:
    """Execute one notebook with papermill, passing it the parameters it declares (and, to a notebook that
    declares ``profile_params``, the whole parameter map); raise ``NotebookFailed`` naming the cell on error."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    declared = declared_parameters(src)
    full = dict(parameters)
    parameters = {k: v for k, v in parameters.items() if k in declared}
    if "profile_params" in declared:  # notebooks that launch other notebooks (07) get the whole profile
        parameters["profile_params"] = full
    try:
        # kernel log level ERROR: its start-up warning ("[IPKernelApp] WARNING | Kernel is running over TCP ...")
        # would otherwise land in the cell output of a notebook that runs notebooks (07 runs 06)
        pm.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name=kernel or _kernel_name(),
                            cwd=str(REPO_ROOT), progress_bar=False, log_output=False,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except PapermillExecutionError as exc:
        first = (exc.source or "").strip().splitlines()
        raise NotebookFailed(
            f"{src.name} failed in code cell {_stored_code_cell_number(dst)} "
            f"starting {first[0][:80] if first else ''!r}: {exc.ename}: {exc.evalue}\n"
            f"The executed notebook is kept at {dst}") from None


def _stored_code_cell_number(executed: Path) -> int:
    """1-based number of the failing cell among the stored notebook's code cells (papermill's injected
    parameters cell not counted), as a reader counts them in JupyterLab; 0 if not found."""
    import nbformat

    number = 0
    for cell in nbformat.read(str(executed), as_version=4).cells:
        if cell.cell_type != "code" or "injected-parameters" in cell.metadata.get("tags", []):
            continue
        number += 1
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return number
    return 0


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned at the top level of the notebook's ``parameters`` cell."""
    import re

    import nbformat

    for cell in nbformat.read(str(notebook), as_version=4).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return set(re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", cell.source, re.M))
    return set()


def _kernel_environment() -> None:
    """Settings the notebook kernels inherit: bit-identical CPU maths for a seed (MKL must take the same code
    path whatever ran before; it has to be set before torch loads, hence here) and offline model hubs."""
    os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def reproduce(profile: str = "demo", from_: str | None = None, only: list[str] | None = None,
              workdir: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
              log: Callable[[str], None] = print) -> list[NotebookRun]:
    """Run the selected notebooks in order on ``profile``; return one ``NotebookRun`` per notebook."""
    import pandas as pd

    _kernel_environment()
    params = load_profile(profile, **(overrides or {}))
    if workdir is not None:
        params["workdir"] = str(workdir)
    dirs = run_dirs(params.get("workdir", f"runs/{params.get('profile', profile)}"))
    params["workdir"] = str(dirs.root)
    notebooks = select_notebooks(list_notebooks(), from_, only)
    kernel = _kernel_name()
    runs: list[NotebookRun] = []
    summary = dirs.notebooks / "summary.csv"
    t_all = time.perf_counter()
    log(f"bber reproduce: profile {params.get('profile', profile)}, {len(notebooks)} notebooks, "
        f"workdir {dirs.root}")
    try:
        for nb in notebooks:
            dst = dirs.notebooks / nb.name
            t0 = time.perf_counter()
            status = "failed"
            try:
                run_notebook(nb, dst, params, kernel)
                status = "ok"
            finally:
                run = NotebookRun(nb.stem, status, time.perf_counter() - t0, _peak_child_rss_mb(), str(dst))
                runs.append(run)
                log(f"  {nb.stem:<24} {status:<6} {run.seconds:7.1f} s")
    finally:
        pd.DataFrame([r.__dict__ for r in runs]).to_csv(summary, index=False)
    log(f"done in {time.perf_counter() - t_all:.1f} s; peak notebook memory "
        f"{max((r.peak_rss_mb for r in runs), default=0):.0f} MB; summary: {summary}")
    return runs


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="run every notebook in order with papermill",
                              description=__doc__)
    p.add_argument("--profile", default="demo", help="smoke | demo | paper, or a path to a YAML profile")
    p.add_argument("--from", dest="from_", metavar="NN", help="start at notebook NN")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks")
    p.add_argument("--workdir", help="run folder (default: the profile's workdir, runs/<profile>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile parameter (repeatable; values are YAML, e.g. --set epochs=3)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from .config import parse_overrides

    try:
        reproduce(args.profile, args.from_, args.only, args.workdir, parse_overrides(args.overrides))
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
