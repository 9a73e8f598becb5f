"""Run the notebook sequence with papermill: ``bber reproduce`` and ``make reproduce``.

Each notebook is executed with the profile's parameters into ``<workdir>/notebooks/``; a summary table
(notebook, status, seconds, peak memory) is written next to them as ``summary.csv``. A failing notebook stops
the run with a message naming the notebook and the cell, and its executed copy is kept for inspection. Ctrl-C
stops it with one line (what finished, and ``--from NN`` to continue) and records the notebook as
``interrupted``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import sys
import threading
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
            from .errors import ConfigError, did_you_mean

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


def _kernel_name() -> str:
    """The project's kernel if registered (``make`` does it), else the current interpreter's ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def _peak_child_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux; children = the finished notebook kernels.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def run_notebook(src: Path, dst: Path, parameters: dict[str, Any], kernel: str | None = None,
                 on_cell: Callable[[int, int], None] | None = None) -> None:
    """Execute one notebook with papermill, passing it the parameters it declares (and, to a notebook that
    declares ``profile_params``, the whole parameter map); raise ``NotebookFailed`` naming the cell on error.
    ``on_cell(n, total)`` is called as the n-th of ``total`` code cells starts (papermill's parameters cell
    not counted, as in the failure message). The kernel's own log (not the cells' output) goes to
    ``<dst stem>.kernel.log``, kept only when not empty: a kernel stopped by Ctrl-C prints no traceback."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    declared = declared_parameters(src)
    full = dict(parameters)
    parameters = {k: v for k, v in parameters.items() if k in declared}
    if "profile_params" in declared:  # notebooks that launch other notebooks (07) get the whole profile
        parameters["profile_params"] = full
    kernel_log = dst.with_name(f"{dst.stem}.kernel.log")
    try:
        # kernels over local IPC sockets, not TCP, so the kernel never warns "running over TCP without
        # encryption"; log level ERROR keeps any other start-up chatter out of the cell outputs of 07 (it runs 06)
        with _quiet_after_ctrl_c():
            pm.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name=kernel or _kernel_name(),
                                cwd=str(REPO_ROOT), progress_bar=False, log_output=False,
                                engine_name=_engine_name(), bber_on_cell=on_cell, coalesce_streams=True,
                                kernel_manager_class=_local_kernel_manager(kernel_log),
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except KeyboardInterrupt:
        kernel_log.unlink(missing_ok=True)  # it holds only the noise of the interrupted kernel's shutdown
        raise
    except PapermillExecutionError as exc:
        if exc.ename == "KeyboardInterrupt":  # the kernel itself was interrupted
            raise KeyboardInterrupt(f"{src.name} interrupted") from None
        first = (exc.source or "").strip().splitlines()
        raise NotebookFailed(
            f"{src.name} failed in code cell {_stored_code_cell_number(dst)} "
            f"starting {first[0][:80] if first else ''!r}: {exc.ename}: {exc.evalue}\n"
            f"The executed notebook is kept at {dst}") from None
    finally:
        if kernel_log.exists() and kernel_log.stat().st_size == 0:
            kernel_log.unlink()


_CTRL_C = threading.Event()  # set by Ctrl-C while a notebook runs; cleared as the next one starts


class _AfterCtrlC(logging.Filter):
    """Drops every record once Ctrl-C stopped a notebook: papermill's "Kernel died while waiting for execute
    reply" and asyncio's "Task exception was never retrieved ... DeadKernelError" describe the kernel that the
    interruption shut down mid-cell, not a fault (the user gets one line from ``bber``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _CTRL_C.is_set()


@contextlib.contextmanager
def _quiet_after_ctrl_c():
    """Run a notebook so that Ctrl-C still raises ``KeyboardInterrupt`` (the default handler is wrapped, in the
    main thread only) and, from then on, the driver's log records are dropped (``_AfterCtrlC``: on the
    papermill and asyncio loggers and on logging's last-resort stderr handler; the filter stays, since a dead
    task is reported when it is garbage-collected)."""
    _CTRL_C.clear()
    for target in (logging.getLogger("papermill"), logging.getLogger("asyncio"), logging.lastResort):
        if target is not None and not any(isinstance(f, _AfterCtrlC) for f in target.filters):
            target.addFilter(_AfterCtrlC())
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def on_sigint(signum, frame):
        _CTRL_C.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_ENGINE = "bber"


def _engine_name() -> str:
    """papermill's nbclient engine, plus a hook called as each code cell starts (registered once)."""
    from papermill.engines import NBClientEngine, papermill_engines

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, bber_on_cell=None, **kwargs):
            if bber_on_cell is not None:
                code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"
                        and "injected-parameters" not in c.metadata.get("tags", [])]
                number = {i: n for n, i in enumerate(code, 1)}
                cell_start = nb_man.cell_start

                def start(cell, cell_index=None, **kw):
                    if cell_index in number:
                        bber_on_cell(number[cell_index], len(code))
                    return cell_start(cell, cell_index, **kw)

                nb_man.cell_start = start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    if _ENGINE not in papermill_engines._engines:
        papermill_engines.register(_ENGINE, Engine)
    return _ENGINE


def _local_kernel_manager(kernel_log: Path | None = None):
    """A kernel manager whose kernels talk to the driver over local IPC sockets, not unencrypted TCP (so the
    kernel has nothing to warn about: no "Kernel is running over TCP without encryption" line), and write their
    own stderr to ``kernel_log``: on Ctrl-C the kernel, interrupted and shut down at once, logs a ZMQError
    traceback there instead of on the user's terminal."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if kernel_log is None:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            kernel_log.parent.mkdir(parents=True, exist_ok=True)
            with open(kernel_log, "ab") as log:  # the kernel gets its own descriptor of the file
                return await super()._async_launch_kernel(kernel_cmd, stderr=log, **kw)

        @default("transport")
        def _transport_default(self):
            return "ipc"

        @default("ip")
        def _ip_default(self):
            # a socket path of its own per kernel: jupyter_client's default ("kernel-ipc" in the working folder,
            # ports counted up from 1) collides when 07 runs two notebooks at once, and messages cross
            import uuid

            from jupyter_core.paths import jupyter_runtime_dir

            os.makedirs(jupyter_runtime_dir(), exist_ok=True)
            return os.path.join(jupyter_runtime_dir(), f"bber-{uuid.uuid4().hex[:12]}")

    return LocalKernelManager


class Progress:
    """Live progress of ``bber reproduce``: the notebook, its code cell, the elapsed time and the last run's
    time for it. On a terminal one status line is rewritten every second; elsewhere (CI logs) a line is
    printed when a notebook has run for ``every`` seconds, and every ``every`` seconds after that."""

    def __init__(self, stream=None, every: float = 60.0, last: dict[str, float] | None = None):
        import threading

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
        import threading

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
    import pandas as pd

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
    """Names assigned at the top level of the notebook's ``parameters`` cell (the .ipynb read as plain JSON:
    importing nbformat costs a second, and ``bber --help`` and every study run ask for this)."""
    import json
    import re

    for cell in json.loads(Path(notebook).read_text(encoding="utf-8")).get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            return set(re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", source, re.M))
    return set()


def known_parameters(params: dict[str, Any], notebooks: list[Path] | None = None) -> set[str]:
    """Every key ``--set`` may name: the profile's keys, the parameters any notebook declares, and the training
    keys (notebook 07 passes the whole profile to its training runs)."""
    import dataclasses

    from .train import TrainConfig

    keys = set(params) | {f.name for f in dataclasses.fields(TrainConfig)}
    for nb in notebooks if notebooks is not None else list_notebooks():
        keys |= declared_parameters(nb)
    return keys - {"profile_params"}


def validate_request(profile: str, from_: str | None, only: list[str] | None,
                     overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Check a ``reproduce`` request before any notebook runs; return the parameters. Raises ``ConfigError``
    (one line, with a "did you mean") for a misspelt profile, an unknown ``--only`` / ``--from`` notebook, an
    unknown ``--set`` key, or a bad training value (``epochs=-3``, ``model=biformerr``)."""
    from .errors import unknown
    from .train import TrainConfig

    notebooks = list_notebooks()
    params = load_profile(profile)
    select_notebooks(notebooks, from_, only)
    bad = sorted(set(overrides or {}) - known_parameters(params, notebooks))
    if bad:
        raise unknown("--set key", bad[0], known_parameters(params, notebooks), "see bber reproduce --help")
    params.update(overrides or {})
    TrainConfig.from_dict(params)
    if "study_runner" in params:  # notebook 07's runner, checked here rather than after notebooks 01-06
        from .experiments import _check_study_runner

        _check_study_runner(params["study_runner"])
    return params


def _kernel_environment() -> None:
    """Settings the notebook kernels inherit: bit-identical CPU maths for a seed (MKL must take the same code
    path whatever ran before; it has to be set before torch loads, hence here) and offline model hubs."""
    os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("BBER_PROGRESS", "text")  # no widget frontend: text progress bars (bber_utils.progress)


def reproduce(profile: str = "demo", from_: str | None = None, only: list[str] | None = None,
              workdir: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
              log: Callable[[str], None] = print, progress: "Progress | None" = None) -> list[NotebookRun]:
    """Run the selected notebooks in order on ``profile``; return one ``NotebookRun`` per notebook. The
    environment (``bber_utils.provenance``) goes to ``environment.json`` beside ``summary.csv`` and into each
    executed notebook's metadata; ``progress`` shows the running notebook and cell (default: on stderr)."""
    import pandas as pd

    from .fileio import atomic_write_text, check_writable

    _kernel_environment()
    validate_request(profile, from_, only, overrides)
    params = load_profile(profile, **(overrides or {}))
    if workdir is not None:
        params["workdir"] = str(workdir)
    dirs = run_dirs(params.get("workdir", f"runs/{params.get('profile', profile)}"))
    params["workdir"] = str(dirs.root)
    check_writable(dirs.root, "the notebooks write their results there; make it writable or choose another "
                              "--workdir")
    notebooks = select_notebooks(list_notebooks(), from_, only)
    kernel = _kernel_name()
    runs: list[NotebookRun] = []
    summary = dirs.notebooks / "summary.csv"
    t_all = time.perf_counter()
    log(f"bber reproduce: profile {params.get('profile', profile)}, {len(notebooks)} notebooks, "
        f"workdir {dirs.root}")
    from .provenance import environment

    env = environment()
    atomic_write_text(dirs.notebooks / "environment.json", json.dumps(env, indent=2))
    progress = Progress(last=last_run_seconds(summary)) if progress is None else progress
    try:
        for nb in notebooks:
            dst = dirs.notebooks / nb.name
            t0 = time.perf_counter()
            status = "failed"
            progress.start(nb.stem)
            try:
                run_notebook(nb, dst, params, kernel, on_cell=progress.on_cell)
                status = "ok"
            except KeyboardInterrupt:
                status = "interrupted"
                raise Interrupted(nb.stem, [r.notebook for r in runs if r.status == "ok"], summary) from None
            finally:
                progress.stop()
                if dst.exists():
                    record_environment(dst, env, str(params.get("profile", profile)))
                run = NotebookRun(nb.stem, status, time.perf_counter() - t0, _peak_child_rss_mb(), str(dst))
                runs.append(run)
                log(f"  {nb.stem:<24} {status:<6} {run.seconds:7.1f} s")
    finally:
        pd.DataFrame([r.__dict__ for r in runs]).to_csv(summary, index=False)
    log(f"done in {time.perf_counter() - t_all:.1f} s; peak notebook memory "
        f"{max((r.peak_rss_mb for r in runs), default=0):.0f} MB; summary: {summary} "
        f"(environment: {summary.with_name('environment.json').name})")
    return runs


def profile_keys_help(profile: str = "demo") -> str:
    """The ``--help`` epilog of ``reproduce``: every key of the profile with its value and the comment the
    profile file gives it."""
    import re

    from .config import profile_path

    lines = [f"--set keys (the {profile} profile's values; any notebook parameter or training key also works):"]
    for line in profile_path(profile).read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(\w+):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
        if m:
            lines.append(f"  {m.group(1):<26} {m.group(2):<14} {m.group(3) or ''}".rstrip())
    return "\n".join(lines)


def register_cli(subparsers) -> None:
    import argparse

    p = subparsers.add_parser("reproduce", help="run every notebook in order with papermill",
                              description=__doc__, epilog=profile_keys_help(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="demo", help="smoke | demo | paper, or a path to a YAML profile")
    p.add_argument("--from", dest="from_", metavar="NN", help="start at notebook NN")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks")
    p.add_argument("--workdir", help="run folder (default: the profile's workdir, runs/<profile>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile parameter (repeatable; values are YAML, e.g. --set epochs=3)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from .config import parse_overrides, resolve_cli_paths

    try:
        reproduce(args.profile, args.from_, args.only, args.workdir,
                  resolve_cli_paths(parse_overrides(args.overrides)))
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"\n{exc.line()}", file=sys.stderr)
        return 130
    return 0
