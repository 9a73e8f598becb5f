"""The papermill driver: notebook selection, parameters, failure reporting, summary."""

from __future__ import annotations

import nbformat
import pandas as pd
import pytest

from bber_utils import pipeline
from bber_utils.pipeline import NotebookFailed, list_notebooks, select_notebooks


def test_select_by_number():
    nbs = list_notebooks()
    assert [p.name[:2] for p in select_notebooks(nbs, from_="07")] == ["07", "08", "09"]
    assert [p.name[:2] for p in select_notebooks(nbs, only=["1", "06"])] == ["01", "06"]
    with pytest.raises(ValueError, match="no notebook numbered"):
        select_notebooks(nbs, only=["42"])


def _write_nb(path, cells):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("workdir = 'x'\nvalue = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_failure_names_notebook_and_cell_and_keeps_output(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _write_nb(nbdir / "01_ok.ipynb", ["from pathlib import Path\nPath(workdir, 'seen.txt').write_text(str(value))"])
    _write_nb(nbdir / "02_bad.ipynb", ["x = 1", "raise ValueError('broken on purpose')"])
    _write_nb(nbdir / "03_never.ipynb", ["x = 2"])
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)
    monkeypatch.setattr(pipeline, "list_notebooks", lambda d=nbdir: sorted(nbdir.glob("*.ipynb")))
    workdir = tmp_path / "wd"
    with pytest.raises(NotebookFailed) as err:
        pipeline.reproduce("smoke", workdir=workdir, overrides={"value": 7}, log=lambda m: None)
    msg = str(err.value)
    assert "02_bad.ipynb" in msg and "code cell 3" in msg and "broken on purpose" in msg
    assert (workdir / "seen.txt").read_text() == "7"  # parameters reached the notebook
    kept = workdir / "notebooks" / "02_bad.ipynb"
    assert kept.exists()
    summary = pd.read_csv(workdir / "notebooks" / "summary.csv")
    assert list(summary["notebook"]) == ["01_ok", "02_bad"]
    assert list(summary["status"]) == ["ok", "failed"]


def test_declared_parameters_reads_the_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('a = 1  # comment\nb: int = 2\nc = None    # None: default\n'
                                     'd = {\n  "k": 1,\n}\n# e = 5\nif a == 1:\n    f = 3\n')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("g = 1"), cell]
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert pipeline.declared_parameters(tmp_path / "x.ipynb") == {"a", "b", "c", "d"}


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    from bber_utils.fileio import atomic_write, atomic_write_text

    target = atomic_write_text(tmp_path / "sub" / "a.txt", "old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["a.txt"]
