"""The notebook sequence: ``reproduce(profile)`` runs notebooks 01–NN in order
with papermill on one profile, with a status line, a run summary and the environment; ``validate_request`` checks
every ``--set`` key and value before any notebook runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml

from bber_utils.core import papermill
from bber_utils.core.errors import ConfigError, did_you_mean, unknown
from bber_utils.core.fileio import atomic_write_text, check_writable
from bber_utils.core.paths import REPO_ROOT, run_dirs
from bber_utils.core.provenance import environment
from bber_utils.study import cluster
from bber_utils.study.runner import _check_study_runner
from bber_utils.train import TrainConfig
from bber_utils.train.profiles import key_descriptions, load_profile

# Heavy libraries (nbformat) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


NOTEBOOK_DIR = REPO_ROOT / "notebooks"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``reproduce`` in ``notebook`` (``NN_name``) after the notebooks of ``finished``."""

    def __init__(self, notebook: str, finished: list[str], summary: Path):
        super().__init__(notebook)
        self.notebook, self.finished, self.summary = notebook, finished, summary

    def line(self) -> str:
        """One line: where it stopped, what finished, and the command that continues."""
        done = f"finished: {', '.join(self.finished)}" if self.finished else "no notebook finished"
        return (f"bber reproduce: interrupted (Ctrl-C) in {self.notebook}; {done} (see {self.summary}); rerun "
                f"with --from {self.notebook[:2]} to continue")


@dataclass
class NotebookRun:
    notebook: str
    status: str
    seconds: float
    peak_rss_mb: float
    output: str
    cpu_seconds: float = 0.0  # user + system CPU of the kernel and every process it started (the study's runs)


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
            names = {p.stem: num(p) for p in notebooks}
            close = did_you_mean(n, [*known, *names])
            hint = close if not close or close[16:-3] not in names else f" (did you mean {names[close[16:-3]]!r}?)"
            raise ConfigError(f"no notebook numbered {n!r}{hint}; have {sorted(known)}")
    if from_:
        notebooks = [p for p in notebooks if num(p) >= str(from_).zfill(2)]
    if only:
        keep = {str(n).zfill(2) for n in only}
        notebooks = [p for p in notebooks if num(p) in keep]
    return notebooks


class Progress:
    """Live progress of ``bber reproduce``: the notebook, its code cell, the elapsed time and the last run's
    time for it. On a terminal one status line is rewritten every second; elsewhere (CI logs) a line is
    printed when a notebook has run for ``every`` seconds, and every ``every`` seconds after that."""

    def __init__(self, stream=None, every: float = 60.0, last: dict[str, float] | None = None):

        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every, self.last = every, last or {}
        self.name, self.cell, self.total, self.t0, self.t_line = "", 0, 0, 0.0, 0.0
        self._lock, self._stop, self._thread = threading.Lock(), threading.Event(), None

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        text = f"  {self.name:<24} cell {self.cell}/{self.total}  {_mmss(elapsed)}"
        if self.name in self.last:
            left = self.last[self.name] - elapsed
            text += f"  (last run {_mmss(self.last[self.name])}" + (f", ~{_mmss(left)} left)" if left > 0 else ")")
        return text

    def start(self, name: str) -> None:

        with self._lock:
            self.name, self.cell, self.total = name, 0, 0
            self.t0 = self.t_line = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def on_cell(self, n: int, total: int) -> None:
        with self._lock:
            self.cell, self.total = n, total

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                now = time.perf_counter()
                if self.tty:
                    self.stream.write("\r" + self.line()[:110].ljust(110))
                    self.stream.flush()
                elif now - self.t_line >= self.every:
                    self.stream.write(self.line() + "\n")
                    self.stream.flush()
                    self.t_line = now

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.tty:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()


def _mmss(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def last_run_seconds(summary: Path) -> dict[str, float]:
    """``{notebook: seconds}`` of the previous run's successful notebooks from ``summary.csv`` ({} if none)."""

    try:
        df = pd.read_csv(summary)
        return {str(r.notebook): float(r.seconds) for r in df.itertuples() if r.status == "ok"}
    except (OSError, ValueError, AttributeError, pd.errors.EmptyDataError):
        return {}


def record_environment(executed: Path, env: dict[str, Any], profile: str) -> None:
    """Store the environment in the executed notebook's metadata (``metadata.bber``)."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata["bber"] = {"profile": profile, "environment": env}
    nbformat.write(nb, str(executed))


def known_parameters(params: dict[str, Any], notebooks: list[Path] | None = None) -> set[str]:
    """Every key ``--set`` may name: the profile's keys, the parameters any notebook declares, and the training
    keys (notebook 07 passes the whole profile to its training runs)."""

    keys = set(params) | {f.name for f in dataclasses.fields(TrainConfig)} | {"slurm"}  # 07's submitit resources
    for nb in notebooks if notebooks is not None else list_notebooks():
        keys |= papermill.declared_parameters(nb)
    return keys - {"profile_params"}


def validate_request(profile: str, from_: str | None, only: list[str] | None,
                     overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Check a ``reproduce`` request before any notebook runs; return the parameters. Raises ``ConfigError``
    (one line, with a "did you mean") for a misspelt profile, an unknown ``--only`` / ``--from`` notebook, an
    unknown ``--set`` key, or a bad training value (``epochs=-3``, ``model=biformerr``)."""

    notebooks = list_notebooks()
    params = load_profile(profile)
    select_notebooks(notebooks, from_, only)
    bad = sorted(set(overrides or {}) - known_parameters(params, notebooks))
    if bad:
        raise unknown("--set key", bad[0], known_parameters(params, notebooks), "see bber reproduce --help")
    params.update(overrides or {})
    TrainConfig.from_dict(params)
    if "study_runner" in params:  # notebook 07's runner, checked here rather than after notebooks 01-06
        _check_study_runner(params["study_runner"])
        if params["study_runner"] == "submitit":  # its slurm block, submitit and sbatch too
            cluster.check(params.get("slurm"))
    return params


def _kernel_environment() -> None:
    """Settings the notebook kernels inherit (the pinned CPU code paths come from ``papermill.run_notebook``):
    no hub telemetry, text progress bars."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("BBER_PROGRESS", "text")  # no widget frontend: text progress bars (bber_utils.core.progress)


def reproduce(profile: str = "demo", from_: str | None = None, only: list[str] | None = None,
              workdir: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
              log: Callable[[str], None] = print, progress: "Progress | None" = None) -> list[NotebookRun]:
    """Run the selected notebooks in order on ``profile``; return one ``NotebookRun`` per notebook. The
    environment (``bber_utils.core.provenance``) goes to ``environment.json`` beside ``summary.csv`` and into each
    executed notebook's metadata; ``progress`` shows the running notebook and cell (default: on stderr)."""

    _kernel_environment()
    validate_request(profile, from_, only, overrides)
    params = load_profile(profile, **(overrides or {}))
    if workdir is not None:
        params["workdir"] = str(workdir)
    dirs = run_dirs(params["workdir"])
    params["workdir"] = str(dirs.root)
    check_writable(dirs.root, "the notebooks write their results there; make it writable or choose another "
                              "--workdir")
    notebooks = select_notebooks(list_notebooks(), from_, only)
    kernel = papermill._kernel_name()
    runs: list[NotebookRun] = []
    summary = dirs.notebooks / "summary.csv"
    t_all = time.perf_counter()
    log(f"bber reproduce: profile {params.get('profile', profile)}, {len(notebooks)} notebooks, "
        f"workdir {dirs.root}")

    env = environment()
    atomic_write_text(dirs.notebooks / "environment.json", json.dumps(env, indent=2))
    progress = Progress(last=last_run_seconds(summary)) if progress is None else progress
    try:
        for nb in notebooks:
            dst = dirs.notebooks / nb.name
            t0, cpu0 = time.perf_counter(), papermill.children_cpu_seconds()
            status = "failed"
            progress.start(nb.stem)
            try:
                papermill.run_notebook(nb, dst, params, kernel, on_cell=progress.on_cell)
                status = "ok"
            except KeyboardInterrupt:
                status = "interrupted"
                raise Interrupted(nb.stem, [r.notebook for r in runs if r.status == "ok"], summary) from None
            finally:
                progress.stop()
                if dst.exists():
                    record_environment(dst, env, str(params.get("profile", profile)))
                run = NotebookRun(nb.stem, status, time.perf_counter() - t0, papermill._peak_child_rss_mb(), str(dst),
                                  papermill.children_cpu_seconds() - cpu0)
                runs.append(run)
                log(f"  {nb.stem:<24} {status:<6} {run.seconds:7.1f} s")
    finally:
        pd.DataFrame([r.__dict__ for r in runs]).to_csv(summary, index=False)
    log(f"done in {time.perf_counter() - t_all:.1f} s; peak notebook memory "
        f"{max((r.peak_rss_mb for r in runs), default=0):.0f} MB; summary: {summary} "
        f"(environment: {summary.with_name('environment.json').name})")
    return runs


def profile_keys_help(profile: str = "demo") -> str:
    """The ``--help`` epilog of ``reproduce``: every key with the profile's value (its default where the profile
    file does not set it) and its description."""

    desc = key_descriptions()
    lines = [f"--set keys (the {profile} profile's values, defaults where configs/{profile}.yaml sets none):"]
    for key, value in load_profile(profile).items():
        lines.append(f"  {key:<26} {_yaml_text(value):<14} {desc.get(key, '')}".rstrip())
    return "\n".join(lines)


def _yaml_text(value: Any) -> str:
    """``value`` as one line of YAML flow (``null``, ``true``, ``[42, 43]``, ``{sds_ratio: 1.0}``)."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip().removesuffix("\n...").strip()