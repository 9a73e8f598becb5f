"""A study's ``bber train`` runs forked from a training server that has imported the trainer once: the same
command as ``python -m bber_utils.cli train --config CONFIG`` (the same ``main``, arguments, working folder and
pinned CPU environment), without the 3-4 CPU seconds of imports (torch, the torch compiler its optimisers load,
pandas, the package) that each run of a study paid before.

Only the runs of a study or sweep (inside ``serving``) are forked; ``run_one`` on its own starts a fresh process.
The server is ``python -m bber_utils.cli _train-server`` (``serve``), started by ``TrainServer`` with its stdin
and stdout as pipes. For each request line ``{"argv": [...], "log": PATH}`` it forks a child that writes its
output to ``PATH`` and runs ``main(argv)``, answers ``{"pid": N}``, waits for the child and answers
``{"exit": status}`` (negative: killed by that signal, as ``subprocess`` says it). One run at a time per server;
the study gives each of its worker threads its own server (``server_for_this_thread``). ``ForkedRun`` answers
like ``subprocess.Popen`` (``wait``, ``poll``, ``terminate``, ``kill``, ``pid``), so the runner waits for and
stops it as it does any child. ``stop_servers`` closes them and waits for them, so that the CPU time and memory
of their runs count among this process's children (``resource.RUSAGE_CHILDREN``, reported by ``bber
reproduce``). A server that dies takes its run with it (status -9, as a killed process); the next run starts a
new server.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Callable

from bber_utils.core.paths import REPO_ROOT
from bber_utils.core.processes import die_with_parent

SERVE = "_train-server"  # the argument of ``python -m bber_utils.cli`` that runs ``serve`` instead of a command
COMMAND = "bber_utils.cli"

_SERVERS: list["TrainServer"] = []
_LOCAL = threading.local()
_LOCK = threading.Lock()
_STUDIES = [0]  # studies and sweeps running now (``serving``): only their runs are forked


def enabled() -> bool:
    """Inside a study or sweep (``serving``), on Linux (``os.fork``), unless ``BBER_FORK_TRAIN=0``; otherwise
    each run is a fresh ``python -m bber_utils.cli train`` (a ``run_one`` on its own keeps no server, so a long
    session never trains with code or settings older than its own)."""
    return (_STUDIES[0] > 0 and sys.platform.startswith("linux")
            and os.environ.get("BBER_FORK_TRAIN", "1") != "0")


@contextlib.contextmanager
def serving():
    """The runs of a study or sweep inside this block are forked from training servers, closed at its end (and
    waited for, so that their CPU time and memory count among this process's children)."""
    with _LOCK:
        _STUDIES[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STUDIES[0] -= 1
            last = _STUDIES[0] == 0
        if last:
            stop_servers()


def is_plain_train_command(argv: list[str], config) -> bool:
    """True when ``argv`` is this interpreter's ``-m bber_utils.cli train --config CONFIG`` (what the server runs
    the same way), not ``torchrun`` or another command."""
    return argv == [sys.executable, "-m", COMMAND, "train", "--config", str(config)]


# ----------------------------------------------------------------------------------------- the server process
def serve(run_command: Callable[[list[str]], int]) -> int:
    """The server's loop (see the module docstring); ends when its stdin closes."""
    from bber_utils.train import stages  # noqa: F401 - imported once here, inherited by every run
    import torch._dynamo  # noqa: F401 - every optimiser's first use imports it (torch._compile)
    from bber_utils.models.mamba import load_fused_kernels

    load_fused_kernels()  # the scan's compiled kernels, loaded once here (serial builds: no threads before a fork)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the runs; the server stays
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_child(run_command, request["argv"], request["log"])  # never returns
        out.write(json.dumps({"pid": pid}).encode() + b"\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        out.flush()
    return 0


def _run_child(run_command: Callable[[list[str]], int], argv: list[str], log: str) -> None:
    """In the forked child: output to ``log``, the default Ctrl-C, then the command; exits with its status."""
    code = 1
    try:
        die_with_parent()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the server's requests are not the run's input
        os.close(devnull)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = run_command(argv)
    except SystemExit as exc:  # as Python exits: an int is the status, anything else is printed, status 1
        code = exc.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:  # noqa: BLE001 - as an uncaught exception of `python -m`: the traceback, status 1
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code or 0))


# ------------------------------------------------------------------------------------------- the study's side
class TrainServer:
    """One server process (started here, from this process's environment, in the repository's root). Its answers
    are read by one thread at a time (``lock``): a study's worker waiting for its run and the main thread stopping
    it on Ctrl-C read the same pipe."""

    def __init__(self, command: list[str] | None = None):
        self.proc = subprocess.Popen(command or [sys.executable, "-m", COMMAND, SERVE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=str(REPO_ROOT))
        self.lock = threading.Lock()
        self.pending = b""  # the start of an answer line not complete yet
        self.run: ForkedRun | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start(self, argv: list[str], log) -> "ForkedRun":
        """Fork ``main(argv)`` with its output appended to ``log`` (a previous run not waited for is killed and
        its answer read first)."""
        if self.run is not None and self.run.poll() is None:
            self.run.kill()
            self.run.wait(30)
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log)}).encode() + b"\n")
        self.proc.stdin.flush()
        with self.lock:
            answer = self.read(60)
        if answer is None or "pid" not in answer:
            raise RuntimeError(f"the training server (pid {self.proc.pid}) stopped before starting a run "
                               f"(status {self.proc.poll()})")
        self.run = ForkedRun(self, int(answer["pid"]))
        return self.run

    def read(self, timeout: float | None) -> dict | None:
        """The next answer line, None at end of file; ``subprocess.TimeoutExpired`` when none is complete in time
        (what arrived is kept for the next call). Read a byte at a time from the pipe itself, so nothing waits in
        a buffer that ``select`` cannot see. The caller holds ``lock``."""
        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.pending.endswith(b"\n"):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left is not None and not select.select([fd], [], [], left)[0]:
                raise subprocess.TimeoutExpired("bber training server", timeout)
            byte = os.read(fd, 1)
            if not byte:
                return None
            self.pending += byte
        line, self.pending = self.pending, b""
        return json.loads(line)

    def close(self) -> None:
        """Close its input (the loop ends) and wait for it; killed after 10 s."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ForkedRun:
    """One run of a ``TrainServer``, with ``subprocess.Popen``'s waiting and stopping methods (thread-safe)."""

    def __init__(self, server: TrainServer, pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def wait(self, timeout: float | None = None) -> int:
        acquired = self.server.lock.acquire(timeout=-1 if timeout is None else timeout)
        if not acquired:
            raise subprocess.TimeoutExpired(f"bber train (pid {self.pid})", timeout)
        try:
            if self.returncode is None:
                answer = self.server.read(timeout)
                if answer is None:  # the server died: so does its run (PR_SET_PDEATHSIG), as a killed process
                    self._signal(signal.SIGKILL)
                    self.returncode = -signal.SIGKILL
                else:
                    self.returncode = int(answer["exit"])
        finally:
            self.server.lock.release()
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def _signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


def server_for_this_thread() -> TrainServer:
    """This thread's server, started on first use (or again after it died)."""
    server = getattr(_LOCAL, "server", None)
    if server is None or not server.alive():
        server = TrainServer()
        _LOCAL.server = server
        with _LOCK:
            _SERVERS.append(server)
    return server


def stop_servers() -> None:
    """Close every server this process started and wait for them."""
    with _LOCK:
        servers = list(_SERVERS)
        _SERVERS.clear()
    for server in servers:
        server.close()
