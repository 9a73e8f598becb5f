"""``bber export``: a run (folder, best.pt or the newest of a work folder) or a model folder into a model folder,
written whole or not at all; what is at ``--out`` is replaced only when it is a model folder."""

from __future__ import annotations

import pytest

from bber_utils import cli
from bber_utils.predict import export, onnx_model
from bber_utils.predict.checkpoint import CheckpointError
from tests.predict.common import make_run

FILES = ["README.md", "config.json", "model.safetensors"]


def test_bber_export_writes_the_folder_and_says_what(tmp_path, capsys):
    run = make_run(tmp_path, "audio_only")
    assert cli.main(["export", "--run", str(run / "best.pt"), "--out", str(tmp_path / "m")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'm'}: README.md, config.json, model.safetensors"


def test_without_run_the_newest_run_of_the_workdir_is_exported(tmp_path):
    work = tmp_path / "work"
    make_run(work / "train", "audio_only")
    out = export.export_model(None, tmp_path / "m", workdir=work)
    assert '"model_name": "audio_only"' in (out / "config.json").read_text()


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    run = make_run(tmp_path, "audio_only")

    def fail(*a, **k):
        raise CheckpointError("the ONNX graph of audio_only differs from PyTorch by 1.00e+00 (> 0.0001); not written")

    monkeypatch.setattr(onnx_model, "export_onnx", fail)
    with pytest.raises(CheckpointError, match="differs from PyTorch"):
        export.export_model(run, tmp_path / "m", onnx=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio_only"]  # no folder, no temporary one


def test_an_earlier_export_is_replaced_anything_else_refused(tmp_path, capsys):
    run = make_run(tmp_path, "audio_only")
    out = export.export_model(run, tmp_path / "m")
    (out / "README.md").write_text("my own card")
    make_run(tmp_path, "audio_only", seed=1)
    export.export_model(run, out)
    assert sorted(p.name for p in out.iterdir()) == FILES and "my own card" not in (out / "README.md").read_text()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    assert cli.main(["export", "--run", str(run), "--out", str(other)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {other}: exists and is not a model folder; choose another " \
                                              f"--out (an earlier export there would be replaced)"
    assert (other / "todo.txt").read_text() == "keep me"


def test_re_exporting_a_model_folder_keeps_its_card(tmp_path):
    out = export.export_model(make_run(tmp_path, "text_only"), tmp_path / "m")
    (out / "README.md").write_text("---\nlicense: mit\n---\nmy own card\n")
    again = export.export_model(out, tmp_path / "m2")
    assert (again / "README.md").read_text() == "---\nlicense: mit\n---\nmy own card\n"
    assert (again / "config.json").read_text() == (out / "config.json").read_text()


def test_a_run_folder_without_a_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert cli.main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'run'}: neither a run folder (no best.pt) nor a model folder")
    assert len(err.splitlines()) == 1


def test_a_hub_repository_can_be_exported_again(tmp_path, monkeypatch):
    """``--run owner/name``: the repository's folder (fetched with only the model files) is the source."""
    import huggingface_hub

    folder = export.export_model(make_run(tmp_path, "audio_only"), tmp_path / "m")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(folder))
    again = export.export_model("someone/bber-demo", tmp_path / "m2")
    assert (again / "config.json").read_text() == (folder / "config.json").read_text()
