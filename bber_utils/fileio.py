"""Atomic file writes: a temporary file beside the target, then a rename, so that a killed job never leaves a
half-written manifest, checkpoint, cache or wav behind (readers see the old file or the new one)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable


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
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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
