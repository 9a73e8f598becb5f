"""Atomic file writes: a temporary file beside the target, then a rename, so that a killed job never leaves a
half-written manifest, checkpoint, cache or wav behind (readers see the old file or the new one)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file in ``path``'s folder, then rename it to ``path``.

    The folder is created if needed; on any error the temporary file is removed and ``path`` is untouched.
    ``suffix`` lets format-sniffing writers (soundfile, ffmpeg) see the right extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
