"""Atomic file writes: a temporary file beside the target, then a rename, so that a killed job never leaves a
half-written manifest, checkpoint, cache or wav behind (readers see the old file or the new one)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

from bber_utils.core.errors import ReadOnlyError

_UMASK_LOCK = threading.Lock()


def atomic_write(path: str | os.PathLike, write: Callable, suffix: str = ".tmp", *, fileobj: bool = False,
                 fsync: bool = False) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file in ``path``'s folder, then rename it to ``path``.

    The folder is created if needed; on any error the temporary file is removed and ``path`` is untouched.
    ``suffix`` lets format-sniffing writers (soundfile, ffmpeg) see the right extension. ``fileobj=True``:
    ``write`` gets the open binary file instead of its path (``np.save`` would append ``.npy`` to a path).
    ``fsync=True``: the file and then its folder are flushed to disk (the feature store's shards and index).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    if not fileobj:
        os.close(fd)
    try:
        if fileobj:
            with os.fdopen(fd, "wb") as f:
                write(f)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
        else:
            write(tmp)
            if fsync:
                _fsync(tmp)
        os.chmod(tmp, _normal_mode(path))
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _normal_mode(path: Path) -> int:
    """The permissions a plain ``open(path, "w")`` would leave: an existing file's own, else ``0o666 & ~umask``
    (``mkstemp`` makes its file 0600, which a rename would keep)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # not Linux: set it and put it back at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync(path: str | os.PathLike) -> None:
    """Flush a file or a folder (the rename) to disk; best effort where the OS refuses."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def locked(path: str | os.PathLike, *, shared: bool = False, waiting: str | None = None):
    """An advisory lock (``flock``) on the file ``path``: exclusive (one writer at a time; the file is created)
    or ``shared`` (readers; the file is only opened for reading, and where it cannot be, e.g. a read-only copy
    without it, the block runs without a lock: nobody can be writing there). ``waiting``: a line printed on
    stderr when another process holds the lock and this one waits for it."""
    import fcntl

    try:
        f = open(path, "r" if shared else "a+")
    except OSError:
        if not shared:
            raise
        yield
        return
    with f:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(f.fileno(), op | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(waiting, file=sys.stderr, flush=True)
            fcntl.flock(f.fileno(), op)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


def check_writable(folder: str | os.PathLike, hint: str = "make it writable or choose another --workdir") -> None:
    """Raise ``ReadOnlyError`` ("cannot write to X: read-only; …", one line) unless a file can be created in
    ``folder`` (or, where it does not exist yet, in its nearest existing parent). It tries it: ``os.access``
    says yes to root on a read-only mount."""

    folder = Path(folder)
    probe = next((p for p in (folder, *folder.parents) if p.is_dir()), None)
    if probe is None:
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".bber-write-check.")
    except OSError as exc:
        if exc.errno not in READ_ONLY_ERRNOS:
            raise
        raise ReadOnlyError(f"cannot write to {folder}: read-only ({exc.strerror}); {hint}") from None
    os.close(fd)
    os.unlink(tmp)
