"""Shared fixtures. ``smoke_run`` executes every notebook once, on the smoke profile, for the whole session."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bber_utils.core import cpu

cpu.pin()  # before any test loads numpy or torch: the CPU code paths of every entry point (core/cpu.py)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _sigint_raises_keyboard_interrupt():
    """A test run started in the background (``cmd &`` without job control) inherits SIGINT ignored, and Python
    then installs no handler: the Ctrl-C tests need SIGINT to raise KeyboardInterrupt (children they start reset
    it with ``preexec_fn``)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (reference material); skips when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference material not available: {SHARED} is absent")
    return SHARED


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Run notebooks 01–10 on configs/smoke.yaml into a fresh work folder; yields (RunDirs, runs)."""
    from bber_utils.core.paths import run_dirs
    from bber_utils.notebook.pipeline import reproduce

    workdir = tmp_path_factory.mktemp("smoke_run")
    runs = reproduce("smoke", workdir=workdir, log=lambda msg: print(msg, flush=True))
    return run_dirs(workdir), runs


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: from now on, Python code that creates, changes, renames or removes anything under
    ``folder`` gets ``PermissionError`` (EACCES), as under ``chmod -R a-w`` for a normal user; reading works.

    Why not chmod: the tests run as root, whom chmod does not stop, and a read-only mount needs privileges. So
    the calls every writer goes through are patched: ``os.open`` with write flags (``tempfile.mkstemp``,
    ``Path.touch``), ``open``/``io.open`` in a write mode (``Path.write_text``, ``to_csv``, ``np.save``,
    ``torch.save``), ``os.mkdir`` (``Path.mkdir``; an existing folder still gives ``FileExistsError`` first, as
    the kernel does), rename/replace/link/unlink/rmdir/chmod. A writer in C given a path (pyarrow, libsndfile) is
    not caught: the tests also compare ``read_only.snapshot(folder)`` before and after."""
    import builtins
    import errno
    import io

    folders: list[str] = []
    real = {name: getattr(os, name) for name in ("open", "mkdir", "rename", "replace", "link", "symlink", "unlink",
                                                 "remove", "rmdir", "chmod", "utime", "truncate")}
    real_open = builtins.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path, dir_fd=None) -> bool:
        if isinstance(path, int) or path is None:
            return False
        path = os.fsdecode(path)
        if dir_fd is not None and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        path = os.path.abspath(path)
        return any(path == f or path.startswith(f + os.sep) for f in folders)

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    def guard(name, *path_args):
        def patched(*args, **kwargs):
            dir_fd = kwargs.get("dir_fd", kwargs.get("src_dir_fd"))
            for i in path_args:
                if i < len(args) and inside(args[i], dir_fd if i == 0 else kwargs.get("dst_dir_fd", dir_fd)):
                    if name == "mkdir" and os.path.lexists(args[0]):
                        raise FileExistsError(errno.EEXIST, "File exists", os.fsdecode(args[0]))
                    refuse(args[i])
            return real[name](*args, **kwargs)
        return patched

    def os_open(path, flags, *args, **kwargs):
        if flags & write_flags and inside(path, kwargs.get("dir_fd")):
            refuse(path)
        return real["open"](path, flags, *args, **kwargs)

    def py_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and inside(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def make(folder) -> None:
        if not folders:
            monkeypatch.setattr(os, "open", os_open)
            for name in ("mkdir", "unlink", "remove", "rmdir", "chmod", "utime", "truncate"):
                monkeypatch.setattr(os, name, guard(name, 0))
            for name in ("rename", "replace", "link", "symlink"):
                monkeypatch.setattr(os, name, guard(name, 0, 1))
            monkeypatch.setattr(builtins, "open", py_open)
            monkeypatch.setattr(io, "open", py_open)
        folders.append(os.path.abspath(folder))

    make.snapshot = snapshot
    return make


def snapshot(folder) -> dict:
    """``{relative path: (size, mtime_ns)}`` of everything under ``folder`` (a read-only check's before/after)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def openai_stub():
    """A fresh loopback OpenAI-compatible server for one test."""
    from tests.openai_stub import OpenAIStub

    stub = OpenAIStub()
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest (and steadiest on a shared 2-core machine) on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_qwen3"))
