"""Executing one notebook with papermill (``run_notebook``) and reading the
parameters a notebook declares in its ``parameters`` cell (``declared_parameters``, plain JSON: no nbformat).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import signal
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

from bber_utils.core import cpu
from bber_utils.core.fileio import atomic_write_text
from bber_utils.core.paths import REPO_ROOT

# Heavy libraries (jupyter_client, jupyter_core, nbformat, papermill, traitlets) are imported inside the functions
# that use them, so that importing this module, and `bber --help`, stays fast.


KERNEL_NAME = "bber"


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; names the notebook, the cell and the kept executed copy."""


def _kernel_name() -> str:
    """The project's kernel if registered (``make`` does it), else the current interpreter's ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def _peak_child_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux; children = the finished notebook kernels.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished child process (kernels, and what they started) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_notebook(src: Path, dst: Path, parameters: dict[str, Any], kernel: str | None = None,
                 on_cell: Callable[[int, int], None] | None = None) -> None:
    """Execute one notebook with papermill, passing it ``injected_parameters`` (``profile_params``, the whole
    parameter map, as the path of a file holding it: ``write_profile_params``); raise ``NotebookFailed`` naming the
    cell on error.
    ``on_cell(n, total)`` is called as the n-th of ``total`` code cells starts (papermill's parameters cell
    not counted, as in the failure message). The kernel's own log (not the cells' output) goes to
    ``<dst stem>.kernel.log``, kept only when not empty: a kernel stopped by Ctrl-C prints no traceback. The kernel
    starts with the pinned CPU environment (``core.cpu.pin``)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    cpu.pin(warn=False)  # the kernel inherits the environment: pinned CPU code paths whoever runs this
    parameters = injected_parameters(src, parameters)
    if "profile_params" in parameters:  # one short path in the injected cell instead of a dump of every key
        parameters["profile_params"] = str(write_profile_params(parameters["profile_params"], dst))
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
        if exc.ename == "KeyboardInterrupt":  # the kernel itself was interrupted (its log: "KeyboardInterrupt caught")
            kernel_log.unlink(missing_ok=True)
            raise KeyboardInterrupt(f"{src.name} interrupted") from None
        first = (exc.source or "").strip().splitlines()
        raise NotebookFailed(
            f"{src.name} failed in code cell {_stored_code_cell_number(dst)} "
            f"starting {first[0][:80] if first else ''!r}: {exc.ename}: {exc.evalue}\n"
            f"The executed notebook is kept at {dst}") from None
    finally:
        if kernel_log.exists() and kernel_log.stat().st_size == 0:
            kernel_log.unlink()


def write_profile_params(params: dict[str, Any], executed: Path) -> Path:
    """The whole parameter map as ``<executed stem>.profile.yaml`` beside the executed notebook (JSON, which is
    YAML: ``train.profiles.load_profile`` reads it), so that the notebook's injected cell holds one short path
    instead of a dump of every key."""
    path = Path(executed).with_name(f"{Path(executed).stem}.profile.yaml")
    atomic_write_text(path, json.dumps(params, indent=1, default=str) + "\n")
    return path


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
        @default("client_factory")
        def _client_factory_default(self):
            return _repolling_client()

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

            from jupyter_core.paths import jupyter_runtime_dir

            os.makedirs(jupyter_runtime_dir(), exist_ok=True)
            return os.path.join(jupyter_runtime_dir(), f"bber-{uuid.uuid4().hex[:12]}")

    return LocalKernelManager


def _repolling_client():
    """jupyter_client's async kernel client, except that a wait without a timeout polls its socket again every
    second. Waiting on a zmq socket with no timeout can miss the wake-up of a message that has arrived (nbclient
    issue 312, with widget cells): the cell's reply sits unread and the notebook hangs forever while the kernel is
    idle. A repeated poll finds the message; a wait with a timeout is unchanged."""
    import queue

    from jupyter_client.asynchronous.client import AsyncKernelClient
    from jupyter_client.channels import AsyncZMQSocketChannel
    from traitlets import Type

    class RepollingChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout: float | None = None):
            if timeout is not None:
                return await super().get_msg(timeout)
            while True:
                try:
                    return await super().get_msg(1.0)
                except queue.Empty:
                    continue

    class RepollingKernelClient(AsyncKernelClient):
        shell_channel_class = Type(RepollingChannel)
        iopub_channel_class = Type(RepollingChannel)

    return RepollingKernelClient


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

    for cell in json.loads(Path(notebook).read_text(encoding="utf-8")).get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            return set(re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", source, re.M))
    return set()


def injected_parameters(notebook: Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """What papermill injects into ``notebook`` from the whole parameter map: the keys its ``parameters`` cell
    declares (an undeclared one would make papermill warn), and, where it declares ``profile_params`` (06, 07), the
    whole map under that name (06 trains with every training key; 07 passes the profile to its runs)."""
    declared = declared_parameters(notebook)
    out = {k: v for k, v in parameters.items() if k in declared}
    if "profile_params" in declared:
        out["profile_params"] = dict(parameters)
    return out
