"""Where each stage reads and writes inside a run's work folder (``runs/<profile>`` by default).

::

    <workdir>/
      data/          raw corpora generated here (the demo corpus in MELD and RESD layouts)
      manifests/     {corpus}_{split}.parquet, skips.csv          (notebook 01)
      features/      the keyed feature store                        (notebook 02)
      sds/           merged wavs + manifests                        (notebook 03)
      tug/           templates, synthetic wavs + manifests          (notebook 04)
      ls_llm/        soft-label cache and table                     (notebook 05)
      train/         one folder per training run: metrics.json, checkpoints  (notebooks 06, 07)
      figures/       figures of this run                            (notebook 08)
      notebooks/     executed notebooks and summary.csv             (pipeline)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bber_utils.core.fileio import READ_ONLY_ERRNOS

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
# An editable install (the normal case) resolves relative work folders against the repository; a plain
# install against the current directory.
REPO_ROOT = _PACKAGE_PARENT if (_PACKAGE_PARENT / "pyproject.toml").exists() else Path.cwd()


@dataclass(frozen=True)
class RunDirs:
    root: Path

    def _sub(self, name: str) -> Path:
        p = self.root / name
        _make(p)
        return p

    @property
    def data(self) -> Path:
        return self._sub("data")

    @property
    def manifests(self) -> Path:
        return self._sub("manifests")

    @property
    def features(self) -> Path:
        return self._sub("features")

    @property
    def sds(self) -> Path:
        return self._sub("sds")

    @property
    def tug(self) -> Path:
        return self._sub("tug")

    @property
    def ls_llm(self) -> Path:
        return self._sub("ls_llm")

    @property
    def train(self) -> Path:
        return self._sub("train")

    @property
    def figures(self) -> Path:
        return self._sub("figures")

    @property
    def notebooks(self) -> Path:
        return self._sub("notebooks")

    def manifest(self, corpus: str, split: str) -> Path:
        return self.manifests / f"{corpus}_{split}.parquet"


def workdir_path(workdir: str | os.PathLike) -> Path:
    """``workdir`` as an absolute path (relative paths are taken from the repository root); creates nothing,
    for readers of finished work."""
    p = Path(workdir)
    return (p if p.is_absolute() else REPO_ROOT / p).resolve()


def run_dirs(workdir: str | os.PathLike) -> RunDirs:
    """The folder layout for ``workdir`` (relative paths are taken from the repository root); creates it."""
    p = workdir_path(workdir)
    _make(p)
    return RunDirs(p)


def _make(folder: Path) -> None:
    """Create ``folder``; in a read-only place leave it missing (readers find nothing there; a writer checks
    first with ``fileio.check_writable`` and says so in one line)."""

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno not in READ_ONLY_ERRNOS:
            raise
