"""The papermill driver: notebook selection, parameters, failure reporting, summary."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest


from bber_utils.core import papermill

from bber_utils.notebook import pipeline
from bber_utils.core.papermill import NotebookFailed
from bber_utils.notebook.pipeline import list_notebooks, select_notebooks


def test_select_by_number():
    nbs = list_notebooks()
    assert [p.name[:2] for p in select_notebooks(nbs, from_="07")] == ["07", "08", "09", "10"]
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
    assert papermill.declared_parameters(tmp_path / "x.ipynb") == {"a", "b", "c", "d"}


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    from bber_utils.core.fileio import atomic_write, atomic_write_text

    target = atomic_write_text(tmp_path / "sub" / "a.txt", "old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002], ids=oct)
def test_atomic_write_gives_the_permissions_of_a_normal_write(tmp_path, umask):
    """``mkstemp`` makes 0600 files; renamed, manifests, shards, indexes and checkpoints stayed 0600 under umask
    022 (unreadable to the group and to a web server that serves the figures)."""
    import os
    import stat

    import numpy as np
    import torch

    from bber_utils.corpora.manifest import save_manifest
    from bber_utils.core.fileio import atomic_write, atomic_write_text, current_umask
    from bber_utils.train.runs import save_checkpoint

    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        written = [atomic_write_text(tmp_path / "a.txt", "x"),
                   atomic_write(tmp_path / "b.npy", lambda f: np.save(f, np.zeros(3)), fileobj=True, fsync=True),
                   save_manifest(_manifest_frame(), tmp_path / "m.parquet")]
        save_checkpoint({"w": torch.zeros(2)}, tmp_path / "c.pt")
        for p in [*written, tmp_path / "c.pt"]:
            assert mode(p) == mode(plain) == 0o666 & ~umask, (p.name, oct(mode(p)))
        os.chmod(written[0], 0o640)  # an existing file keeps its own mode, as open(path, "w") would leave it
        atomic_write_text(written[0], "y")
        assert mode(written[0]) == 0o640
    finally:
        os.umask(old)


def _manifest_frame():
    from bber_utils.corpora.manifest import MANIFEST_COLUMNS

    row = dict(utt_id="c-train-1", corpus="c", language="en", split="train", audio_path="", start_s=0.0,
               end_s=float("nan"), duration_s=1.0, text="hi", label="neutral", source="original")
    return pd.DataFrame([{c: row.get(c) for c in MANIFEST_COLUMNS}])


def _two_notebooks(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _write_nb(nbdir / "01_bar.ipynb", ["from bber_utils.core.progress import tqdm\nfor _ in tqdm(range(37)):\n    pass",
                                       "import sys\nprint('to stderr', file=sys.stderr)"])
    _write_nb(nbdir / "02_two.ipynb", ["x = 1"])
    monkeypatch.setattr(pipeline, "list_notebooks", lambda d=nbdir: sorted(nbdir.glob("*.ipynb")))
    return nbdir


class _Recorder(pipeline.Progress):
    def __init__(self):
        super().__init__(every=3600)
        self.cells = []

    def on_cell(self, n, total):
        self.cells.append((self.name, n, total))
        super().on_cell(n, total)


def test_reproduce_is_quiet_records_the_environment_and_shows_cells(tmp_path, monkeypatch, capfd):
    """No kernel warning on the terminal; progress sees every code cell; text bars end at 100 %; the
    environment goes beside summary.csv and into each executed notebook."""
    _two_notebooks(tmp_path, monkeypatch)
    monkeypatch.delenv("BBER_PROGRESS", raising=False)
    rec = _Recorder()
    pipeline.reproduce("smoke", workdir=tmp_path / "wd", log=lambda m: None, progress=rec)
    err = capfd.readouterr().err
    assert "Kernel is running over TCP" not in err and "IPKernelApp" not in err, err
    # 3 code cells in 01 (parameters + 2), 2 in 02; papermill's injected cell is not counted
    assert rec.cells == [("01_bar", 1, 3), ("01_bar", 2, 3), ("01_bar", 3, 3), ("02_two", 1, 2), ("02_two", 2, 2)]
    out = tmp_path / "wd" / "notebooks"
    nb = nbformat.read(out / "01_bar.ipynb", as_version=4)
    bar = "".join(o.get("text", "") for o in nb.cells[-2].outputs if o.get("output_type") == "stream")
    assert "100%" in bar and "37/37" in bar and "\r" not in bar, bar  # the final frame only
    assert not any("widget" in json.dumps(o.get("data", {})) for c in nb.cells for o in c.get("outputs", []))
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            assert "Kernel is running over TCP" not in o.get("text", "")
    env = json.loads((out / "environment.json").read_text())
    assert env["torch"]["version"] and env["lock"]["sha256"]
    assert nb.metadata["bber"]["environment"] == env and nb.metadata["bber"]["profile"] == "smoke"
    assert nbformat.read(out / "02_two.ipynb", as_version=4).metadata["bber"]["environment"] == env


def test_progress_line_estimates_from_the_last_run(tmp_path):
    import io

    summary = tmp_path / "summary.csv"
    pd.DataFrame([{"notebook": "07_ablations", "status": "ok", "seconds": 480.0},
                  {"notebook": "08_results", "status": "failed", "seconds": 3.0}]).to_csv(summary, index=False)
    last = pipeline.last_run_seconds(summary)
    assert last == {"07_ablations": 480.0}
    assert pipeline.last_run_seconds(tmp_path / "none.csv") == {}
    stream = io.StringIO()
    p = pipeline.Progress(stream=stream, every=0.5, last=last)
    p.start("07_ablations")
    p.on_cell(9, 14)
    import time as _t

    _t.sleep(1.6)
    p.stop()
    lines = stream.getvalue().splitlines()
    assert lines, "no heartbeat line on a non-terminal stream"
    assert "07_ablations" in lines[0] and "cell 9/14" in lines[0] and "last run 8:00" in lines[0]
    assert "~7:5" in lines[0]  # about 7:58 left


def test_each_notebook_kernel_gets_its_own_ipc_socket_path():
    """07 runs two notebooks at once: kernels sharing jupyter_client's default IPC path ("kernel-ipc" in the
    working folder) bind each other's sockets and reject each other's messages ("Invalid Signature")."""
    from bber_utils.core.paths import REPO_ROOT
    from bber_utils.core.papermill import _local_kernel_manager

    cls = _local_kernel_manager()
    a, b = cls(kernel_name="python3"), cls(kernel_name="python3")
    assert a.transport == b.transport == "ipc"
    assert a.ip != b.ip
    assert not a.ip.startswith(str(REPO_ROOT)), "IPC sockets belong in the runtime folder, not the checkout"



def test_reproduce_into_a_read_only_workdir_says_so_in_one_line(tmp_path, monkeypatch, capsys, read_only):
    from bber_utils import cli

    ran = []
    monkeypatch.setattr(papermill, "run_notebook", lambda src, *a, **k: ran.append(src.name))
    monkeypatch.setattr(papermill, "_kernel_name", lambda: "python3")
    (tmp_path / "w").mkdir()
    read_only(tmp_path / "w")
    rc = cli.main(["reproduce", "--profile", "smoke", "--only", "01", "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot write to {tmp_path / 'w'}: read-only (Permission denied)" in err and ran == []
    assert list((tmp_path / "w").iterdir()) == []


def test_any_other_permission_error_is_one_line(monkeypatch, capsys, tmp_path):
    """What no up-front check foresaw (a file made read-only inside a writable folder) is still one line."""
    from bber_utils import cli
    from bber_utils.study import cli as study_cli

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.parquet"))

    monkeypatch.setattr(study_cli, "_cli_results", denied)
    rc = cli.main(["results", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"cannot access {tmp_path / 'x.parquet'}: Permission denied" in err


def test_a_kernel_interrupted_mid_cell_is_recorded_as_interrupted(tmp_path, monkeypatch):
    """A KeyboardInterrupt inside the kernel (Jupyter's interrupt, ``kill -INT`` of the kernel) stops the run as
    Ctrl-C does, not as a failed notebook; the kernel's empty log file is not left behind."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _write_nb(nbdir / "01_stop.ipynb", ["raise KeyboardInterrupt"])
    _write_nb(nbdir / "02_never.ipynb", ["x = 1"])
    monkeypatch.setattr(pipeline, "list_notebooks", lambda d=nbdir: sorted(nbdir.glob("*.ipynb")))
    with pytest.raises(pipeline.Interrupted) as exc:
        pipeline.reproduce("smoke", workdir=tmp_path / "wd", log=lambda m: None, progress=_Recorder())
    assert exc.value.line().startswith("bber reproduce: interrupted (Ctrl-C) in 01_stop; no notebook finished")
    assert "rerun with --from 01 to continue" in exc.value.line()
    out = tmp_path / "wd" / "notebooks"
    assert list(pd.read_csv(out / "summary.csv")["status"]) == ["interrupted"]
    assert not list(out.glob("*.kernel.log"))


def test_a_notebook_that_launches_runs_gets_the_profile_as_a_short_path(tmp_path):
    """07 declares ``profile_params``: it receives the path of a file holding the whole profile (its injected cell
    stays one short line), and ``load_profile`` reads every key back, types kept."""
    src = tmp_path / "07_x.ipynb"
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("workdir = 'x'\nprofile_params = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from bber_utils.core.profiles import read_profile\nprint(sorted(read_profile(profile_params).items()))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src)
    full = {"workdir": str(tmp_path), "ablation_seeds": [42, 43, 44], "search_space": {"sds_ratio": [0.0, 1.0]},
            "asr_model": None, "note": "x" * 2000}
    dst = tmp_path / "out" / "07_x.ipynb"
    dst.parent.mkdir()
    papermill.run_notebook(src, dst, full, kernel="python3")
    executed = nbformat.read(str(dst), as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert len(injected.source) < 300 and "x" * 50 not in injected.source
    assert str(sorted(full.items())) in executed.cells[-1].outputs[0]["text"]
    assert (tmp_path / "out" / "07_x.profile.yaml").exists()


def test_the_kernel_client_never_waits_on_its_sockets_without_a_timeout(monkeypatch):
    """A wait with no timeout can miss a reply that has arrived (nbclient issue 312: the notebook hung for good
    with its kernel idle, at a widget cell); the client polls every second instead, and gets the message."""
    import asyncio
    import queue

    from jupyter_client.channels import AsyncZMQSocketChannel

    calls = []

    async def get_msg(self, timeout=None):
        calls.append(timeout)
        if timeout is None:
            raise AssertionError("waited without a timeout")
        if len(calls) < 3:
            raise queue.Empty
        return {"msg_type": "execute_reply"}

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", get_msg)
    client = papermill._local_kernel_manager()(kernel_name="python3").client_factory
    for channel in (client.shell_channel_class.default_value, client.iopub_channel_class.default_value):
        calls.clear()
        msg = asyncio.run(channel.__new__(channel).get_msg())
        assert msg["msg_type"] == "execute_reply" and calls == [1.0, 1.0, 1.0]
