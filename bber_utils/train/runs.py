"""What a run leaves on disk and how it is read back: the run folder ``<workdir>/train/<run>/`` (``metrics.json``,
``history.csv``, ``config.json``, ``best.pt``, ``last.pt``), the unimodal cache's logit tables, ``RunResult`` and
``load_run``. Every file is written by rank 0 only, through ``fileio.atomic_write``; checkpoints are read with
``weights_only=True`` (a crafted pickle cannot run code).

A cache file that cannot be read back (truncated, corrupt) is reported in one warning line and computed again
(``read_cache``), never a crash on every rerun.

Owns: ``RunResult``, ``load_run``, ``Interrupted``, ``save_json``, ``save_checkpoint``, ``load_checkpoint``,
``write_history``, ``read_history``, ``save_parquet``, ``load_parquet``, ``read_cache``, ``logit_frame``,
``logit_dict``, ``git_commit``.
Imports from this package: ``distributed`` only. Must not import: ``loop``, ``inputs``, the stages.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bber_utils.core.fileio import atomic_write
from bber_utils.core.labels import CLASSES
from bber_utils.core.paths import REPO_ROOT
from bber_utils.train.distributed import is_main_process
from bber_utils.train.metrics import METRIC_NAMES

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


class Interrupted(RuntimeError):
    """Raised by ``train`` when ``interrupt_after`` stopped a run early; rerun with ``resume=True``."""


@dataclass
class RunResult:
    """What ``train`` returns: the run folder and what it wrote."""

    run_dir: Path
    metrics: dict[str, Any]                 # the content of metrics.json
    history: pd.DataFrame                   # one row per epoch of stage 2 (history.csv)
    unimodal_history: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def best_epoch(self) -> int:
        return int(self.metrics["best_epoch"])

    def table(self, splits: tuple[str, ...] = ("dev", "test")) -> pd.DataFrame:
        """Rows ``model, corpus, split, uar, war, mf1, wf1, mean`` for this model and the unimodal baselines."""
        rows = []
        sources = {self.metrics["model"]: self.metrics["metrics"], **self.metrics.get("unimodal", {})}
        for model, per_corpus in sources.items():
            for corpus, per_split in per_corpus.items():
                for split in splits:
                    if split in per_split:
                        rows.append({"model": model, "corpus": corpus, "split": split,
                                     **{m: per_split[split][m] for m in (*METRIC_NAMES, "mean")}})
        return pd.DataFrame(rows).drop_duplicates(["model", "corpus", "split"]).reset_index(drop=True)


def load_run(run_dir: str | os.PathLike) -> RunResult:
    """Read a finished run folder back (metrics.json + history.csv)."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the run has not finished")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    hist = run_dir / "history.csv"
    return RunResult(run_dir, metrics, pd.read_csv(hist) if hist.exists() else pd.DataFrame())


def save_json(obj: Any, path: Path) -> None:
    """``obj`` as indented UTF-8 JSON, atomically (rank 0 only)."""
    if not is_main_process():
        return

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False, default=str)

    atomic_write(path, write)


def save_checkpoint(obj: dict, path: Path) -> None:
    """``torch.save`` atomically (rank 0 only); tensors are moved to CPU first."""
    if not is_main_process():
        return
    import torch

    atomic_write(path, lambda tmp: torch.save(_to_cpu(obj), tmp))


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint on CPU, whatever device wrote it. ``weights_only=True``: tensors and plain containers
    only, so a crafted pickle cannot run code (it fails with ``UnpicklingError`` instead)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _to_cpu(obj):
    import torch

    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def write_history(df: pd.DataFrame, path: Path) -> None:
    """``history.csv``: one row per epoch (rank 0 only)."""
    if is_main_process():
        atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def save_parquet(df: pd.DataFrame, path: Path, data: str | None = None) -> None:
    """``df`` as Parquet, atomically (rank 0 only); ``data``: the fingerprint of the data it was computed from,
    kept in the file's metadata (``load_parquet``)."""
    if not is_main_process():
        return

    table = pa.Table.from_pandas(df, preserve_index=False)
    if data is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"bber_data": data.encode()})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def load_parquet(path: Path) -> tuple[pd.DataFrame, str | None]:
    """``(table, data fingerprint or None)`` of a ``save_parquet`` file (None: written without one)."""

    table = pq.read_table(path)
    data = (table.schema.metadata or {}).get(b"bber_data")
    return table.to_pandas(), data.decode() if data else None


# What reading a truncated or corrupt JSON, CSV, Parquet or torch file raises.
CACHE_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError,
                zipfile.BadZipFile)


def read_cache(read: Callable[[Path], Any], path: Path) -> Any | None:
    """``read(path)``, or None with one warning line when the file cannot be read back (truncated, corrupt): it
    is removed (rank 0) and the caller computes it again."""
    try:
        return read(path)
    except CACHE_ERRORS as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"{path}: unreadable ({type(exc).__name__}: {first}); computing it again", stacklevel=2)
        if is_main_process():
            Path(path).unlink(missing_ok=True)
        return None


def read_history(path: Path) -> pd.DataFrame:
    """``history.csv`` back; ``ValueError`` when it lacks its ``epoch`` / ``dev_mean`` columns (a cut file)."""
    df = pd.read_csv(path)
    if not {"epoch", "dev_mean"} <= set(df.columns):
        raise ValueError(f"not a complete history (columns {list(df.columns)[:4]} …)")
    return df


def logit_frame(utt_ids, logits) -> pd.DataFrame:
    """``utt_id`` + the 7 class columns from logits ``(N, 7)``: the unimodal cache's ``logits.parquet`` rows."""
    df = pd.DataFrame(np.asarray(logits, np.float32), columns=list(CLASSES))
    df.insert(0, "utt_id", list(utt_ids))
    return df


def logit_dict(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """``{utt_id: (7,) float32}`` from a ``logit_frame`` table."""
    return dict(zip(df["utt_id"].astype(str), df[list(CLASSES)].to_numpy(np.float32)))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
