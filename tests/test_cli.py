"""Hostile input on the command line (issue 18): typos and bad values give one line and exit 2 before any work,
Ctrl-C gives one line and exit 130, paths typed on the command line are taken from the current folder."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bber_utils import cli

from bber_utils.core import papermill

from bber_utils.study import runner
from bber_utils.core.profiles import profile_path
from bber_utils.core.paths import REPO_ROOT
from tests.train.common import make_workdir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_notebooks(monkeypatch):
    """Records every notebook ``reproduce`` would run (none must run for a bad request)."""
    ran = []
    monkeypatch.setattr(papermill, "run_notebook", lambda src, *a, **k: ran.append(src.name))
    monkeypatch.setattr(papermill, "_kernel_name", lambda: "python3")
    return ran


def _one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("argv, needles", [
    (["--set", "epoch=50"], ["unknown --set key 'epoch'", "did you mean 'epochs'"]),
    (["--set", "epochs=5", "--set", "lrr=0.5"], ["'lrr'", "did you mean 'lr'"]),
    (["--only", "11"], ["no notebook numbered '11'"]),
    (["--only", "06_trian"], ["did you mean '06'"]),
    (["--from", "6b"], ["no notebook numbered '6b'"]),
    (["--profile", "dmeo"], ["no profile or file 'dmeo'", "did you mean 'demo'"]),
    (["--set", "model=biformerr"], ["unknown model 'biformerr'", "did you mean 'biformer'"]),
    (["--set", "epochs=-3"], ["epochs must be >= 1 (got -3)"]),
    (["--set", "epochs"], ["'epochs' is not key=value"]),
    (["--set", "study_runner=proces"], ["unknown study_runner 'proces'", "did you mean 'process'"]),
])
def test_reproduce_rejects_typos_before_any_notebook_runs(argv, needles, no_notebooks, capsys, tmp_path):
    rc = cli.main(["reproduce", "--profile", "smoke", "--workdir", str(tmp_path / "w"), *argv])
    _one_line_error(capsys, rc, *needles)
    assert no_notebooks == []


def test_reproduce_accepts_declared_keys(no_notebooks, capsys, tmp_path):
    rc = cli.main(["reproduce", "--profile", "smoke", "--workdir", str(tmp_path / "w"), "--only", "06",
                   "--set", "epochs=2", "--set", "grad_clip=0.5"])
    assert rc == 0 and no_notebooks == ["06_train.ipynb"]


@pytest.mark.parametrize("argv, needles", [
    (["model=biformerr"], ["unknown model 'biformerr'", "did you mean 'biformer'", "bimamba"]),
    (["epochs=-3"], ["epochs must be >= 1 (got -3)"]),
    (["epochs=ten"], ["epochs must be a number (got 'ten')"]),
    (["epochs"], ["'epochs' is not key=value"]),
    (["lrr=0.1"], ["unknown parameter 'lrr'", "did you mean 'lr'"]),
    (["audio_encoder=wav2vecc"], ["audio_encoder 'wav2vecc' is not a built-in encoder", "hub id"]),
    (["--config", "smoek"], ["no profile or file 'smoek'", "did you mean 'smoke'"]),
])
def test_train_config_errors_are_one_line_exit_2(argv, needles, capsys, monkeypatch):
    from bber_utils.train import stages

    monkeypatch.setattr(stages, "train", lambda *a, **k: pytest.fail("training started"))
    _one_line_error(capsys, cli.main(["train", *argv]), *needles)


@pytest.mark.parametrize("argv, needles", [
    (["epochs=.inf"], ["epochs must be an integer (got inf)"]),
    (["epochs=.nan"], ["epochs must be an integer (got nan)"]),
    (["seed=1.5"], ["seed must be an integer (got 1.5)"]),
    (["batch_size=1e9"], ["batch_size must be an integer (got '1e9')"]),
    (["train_corpora=[]"], ["train_corpora must be all, a corpus name or a non-empty list"]),
    (["hidden_dim=10", "num_heads=3"], ["hidden_dim 10 is not divisible by num_heads 3"]),
    (["dropout=1.5"], ["dropout must be in [0, 1) (got 1.5)"]),
    (["lr=-1"], ["lr must be > 0 (got -1)"]),
    (["label_smoothing=1.0"], ["label_smoothing must be in [0, 1) (got 1.0)"]),
    (["text_context=-1"], ["text_context must be >= 0 (got -1)"]),
    (["epochs=2.5"], ["epochs must be an integer (got 2.5)"]),
    (["epochs=.inf", "lr=-1", "seed=1.5", "dropout=1.5"],
     ["epochs must be an integer", "lr must be > 0", "seed must be an integer", "dropout must be in [0, 1)"]),
])
def test_train_values_out_of_range_are_one_line_exit_2(argv, needles, capsys, monkeypatch):
    """Issue 25: these passed the up-front check (or crashed in it) and failed later with a traceback."""
    from bber_utils.train import stages

    monkeypatch.setattr(stages, "train", lambda *a, **k: pytest.fail("training started"))
    _one_line_error(capsys, cli.main(["train", "--config", "smoke", *argv]), *needles)


def test_train_on_an_empty_train_split_is_one_line_exit_2(tmp_path, capsys):
    import pandas as pd

    from bber_utils.corpora.manifest import MANIFEST_COLUMNS, save_manifest

    wd = tmp_path / "wd"
    for split in ("train", "dev", "test"):
        save_manifest(pd.DataFrame(columns=MANIFEST_COLUMNS), wd / "manifests" / f"demo_en_{split}.parquet")
    rc = cli.main(["train", "--config", "smoke", f"workdir={wd}", "device=cpu", "progress=false"])
    _one_line_error(capsys, rc, "split 'train' of ['demo_en'] is empty", "demo_en_train.parquet")


def test_extract_with_a_misspelt_encoder_stops_before_any_download(tmp_path, capsys, monkeypatch):
    from bber_utils.features import audio_encoders

    monkeypatch.setattr(audio_encoders.TransformersAudioEncoder, "__init__",
                        lambda *a, **k: pytest.fail("an encoder was built for a typo"))
    rc = cli.main(["extract", "--workdir", str(tmp_path), "--audio-encoder", "wav2vecc"])
    _one_line_error(capsys, rc, "'wav2vecc' is not a built-in encoder (logmel)")


def test_config_path_from_another_folder(tmp_path, monkeypatch):
    from bber_utils.core.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    assert profile_path("demo") == REPO_ROOT / "configs" / "demo.yaml"        # a bare name is a profile
    with pytest.raises(ConfigError) as exc:                                      # not a file here: both named
        profile_path("configs/demo.yaml")
    msg = str(exc.value)
    assert str(tmp_path / "configs" / "demo.yaml") in msg and "configs/demo.yaml.yaml" not in msg
    assert "did you mean 'demo'" in msg
    mine = tmp_path / "mine.yaml"
    mine.write_text("epochs: 2\n")
    assert profile_path("mine.yaml") == mine                                    # an existing file is a file


def test_paths_typed_on_the_command_line_are_taken_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = cli.build_parser()
    for argv, dest, want in ([["prepare", "demo", "--out", "work"], "out", tmp_path / "work"],
                             [["prepare", "meld", "--root", "data/MELD", "--out", "/abs"], "root",
                              tmp_path / "data" / "MELD"],
                             [["predict", "a.wav", "--workdir", "runs/x"], "workdir", tmp_path / "runs" / "x"]):
        args = parser.parse_args(argv)
        cli.resolve_typed_paths(parser, argv, args)
        assert getattr(args, dest) == str(want)
    argv = ["predict", "a.wav"]  # a default stays repository-relative (the notebooks' convention)
    args = parser.parse_args(argv)
    cli.resolve_typed_paths(parser, argv, args)
    assert args.workdir == "runs/demo"
    from bber_utils.core.profiles import resolve_cli_paths

    assert resolve_cli_paths({"workdir": "runs/x", "epochs": 3}) == {"workdir": str(tmp_path / "runs/x"),
                                                                   "epochs": 3}


def test_train_help_lists_every_key_with_default_and_description(capsys):
    from bber_utils.train import TrainConfig, config_key_descriptions

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    desc = config_key_descriptions()
    for f in dataclasses.fields(TrainConfig):
        assert desc[f.name], f"TrainConfig.{f.name} has no description"
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [f.name]), None)
        assert line is not None, f"{f.name} missing from bber train --help"
        assert repr(f.default) in line


def test_reproduce_help_lists_the_profile_keys(capsys):
    import yaml

    from bber_utils.train.profiles import load_profile

    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--help"])
    out = capsys.readouterr().out
    for key, value in load_profile("demo").items():  # every key, with the demo profile's value
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [key]), None)
        assert line is not None, key
        assert isinstance(value, (list, dict)) or yaml.safe_load(line.split()[1]) == value, line


@pytest.mark.parametrize("command, target, argv", [
    ("train", "bber_utils.train.stages.train", ["train", "--config", "smoke"]),
    ("extract", "bber_utils.features.cli.extract_all", ["extract", "--workdir", "WD"]),
    ("reproduce", "bber_utils.core.papermill.run_notebook", ["reproduce", "--profile", "smoke", "--only", "01",
                                                       "--workdir", "WD"]),
    ("label", "bber_utils.augment.ls_llm.cli._cli_label", ["label", "--workdir", "WD"]),
])
def test_ctrl_c_is_one_line_and_exit_130(command, target, argv, capsys, monkeypatch, tmp_path):
    import importlib

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    mod, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(mod), name, interrupted)
    if command == "label":  # the parser binds the function at registration
        parser = cli.build_parser()
        monkeypatch.setattr(cli, "build_parser", lambda: parser)
        parser._subparsers._group_actions[0].choices["label"].set_defaults(func=interrupted)
    monkeypatch.setattr(papermill, "_kernel_name", lambda: "python3")
    try:
        rc = cli.main([str(tmp_path) if a == "WD" else a for a in argv])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped bber's main (a traceback for the user)")
    err = capsys.readouterr().err
    assert rc == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"bber {command}: interrupted" in err and "rerun" in err


def _default_sigint() -> None:
    """``preexec_fn``: the child reacts to SIGINT even when this test run was started with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_to_a_running_reproduce_prints_one_line(tmp_path):
    """Ctrl-C as a terminal sends it: SIGINT to the whole process group, while a real kernel runs notebook 02
    (two tiny notebooks stand in for the project's). This test once replaced the notebook run by a sleep and
    signalled one pid, so it missed the kernel's ZMQError traceback on stderr and the summary's "failed"."""
    import nbformat

    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    started = tmp_path / "started"
    for name, code in [("01_quick", "x = 1"),
                       ("02_sleep", f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(120)")]:
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("workdir = 'x'")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(code)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nbdir / f"{name}.ipynb")
    code = ("import bber_utils.notebook.pipeline as p\nfrom pathlib import Path\n"
            f"p.list_notebooks = lambda d=None: sorted(Path({str(nbdir)!r}).glob('*.ipynb'))\n"
            "from bber_utils.cli import main\n"
            f"raise SystemExit(main(['reproduce', '--profile', 'smoke', '--workdir', {str(tmp_path / 'w')!r}]))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path, preexec_fn=_default_sigint, start_new_session=True)
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists(), proc.communicate(timeout=30)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: every process of the foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "ZMQError" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted (Ctrl-C) in 02_sleep; finished: 01_quick" in err and "--from 02 to continue" in err, err
    summary = pd.read_csv(tmp_path / "w" / "notebooks" / "summary.csv")
    assert list(summary["status"]) == ["ok", "interrupted"]
    assert not list((tmp_path / "w" / "notebooks").glob("*.kernel.log"))


@pytest.mark.parametrize("argv, needles", [
    (["epoch=5"], ["unknown sweep key 'epoch'", "did you mean 'epochs'"]),
    (["model=biformerr,bimamba"], ["unknown model 'biformerr'", "did you mean 'biformer'"]),
    (["epochs"], ["'epochs' is not key=v1,v2"]),
    (["epochs=,"], ["'epochs=,' is not key=v1,v2"]),
    (["epochs=-1,2"], ["epochs must be >= 1 (got -1)"]),
])
def test_sweep_rejects_typos_before_any_run(argv, needles, capsys, monkeypatch):
    """A misspelt sweep key used to be passed on and ignored by the trainer: a sweep that varied nothing."""
    runs = []
    monkeypatch.setattr(runner, "run_sweep", lambda *a, **k: runs.append(a))
    rc = cli.main(["sweep", "--profile", "smoke", *argv])
    _one_line_error(capsys, rc, *needles)
    assert runs == []


def test_sweep_paths_typed_on_the_command_line_are_taken_from_the_current_folder(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(runner, "run_sweep", lambda base, settings, seeds, workdir: seen.update(
        settings=settings, workdir=workdir))
    monkeypatch.chdir(tmp_path)
    make_workdir(tmp_path)  # tmp_path/wd/manifests
    rc = cli.main(["sweep", "--profile", "smoke", "--workdir", "wd", "soft_labels=a.parquet", "epochs=1,2"])
    assert rc == 1 and "no finished run of this sweep" in capsys.readouterr().out  # run_sweep is a stand-in
    assert seen["workdir"] == str(tmp_path / "wd")
    assert {s["soft_labels"] for s in seen["settings"]} == {str(tmp_path / "a.parquet")}
    assert sorted(s["epochs"] for s in seen["settings"]) == [1, 2]


@pytest.mark.parametrize("argv, needles", [
    (["hidden_dim=10", "num_heads=3"], ["hidden_dim 10 is not divisible by num_heads 3"]),
    (["epochs=.inf,2"], ["epochs must be an integer (got inf)"]),
    (["num_heads=3,4", "hidden_dim=8"], ["hidden_dim 8 is not divisible by num_heads 3"]),
    (["train_corpora=[demo_en,demo_ru"], ["unbalanced"]),
])
def test_sweep_checks_every_combination_before_any_run(argv, needles, capsys, monkeypatch, tmp_path):
    """Issue 25: a heads/width mismatch or epochs=.inf used to start the runs and give a traceback per run."""
    runs = []
    monkeypatch.setattr(runner, "run_sweep", lambda *a, **k: runs.append(a))
    wd = make_workdir(tmp_path)
    _one_line_error(capsys, cli.main(["sweep", "--profile", "smoke", "--workdir", str(wd), *argv]), *needles)
    assert runs == []


def test_sweep_list_values_keep_their_commas(tmp_path, monkeypatch, capsys):
    """``train_corpora=[a,b]`` is one value, a list (it used to be split into "[a" and "b]")."""
    seen = {}
    monkeypatch.setattr(runner, "run_sweep", lambda base, settings, seeds, workdir: seen.update(
        settings=settings))
    wd = make_workdir(tmp_path)
    rc = cli.main(["sweep", "--profile", "smoke", "--workdir", str(wd),
                   "train_corpora=[demo_en,demo_ru],demo_ru,[demo_en]"])
    assert rc == 1, capsys.readouterr()  # run_sweep is a stand-in: nothing finished
    assert [s["train_corpora"] for s in seen["settings"]] == [["demo_en", "demo_ru"], "demo_ru", ["demo_en"]]


@pytest.mark.parametrize("grid", [["epochs=1,2"], ["train_corpora=[demo_en,nosuch]"]])
def test_sweep_without_manifests_stops_before_any_run(grid, tmp_path, capsys, monkeypatch):
    """Issue 25: a work folder without (some of) the manifests used to spawn every run, each failing."""
    runs = []
    monkeypatch.setattr(runner, "run_sweep", lambda *a, **k: runs.append(a))
    wd = tmp_path / "empty" if grid == ["epochs=1,2"] else make_workdir(tmp_path)
    rc = cli.main(["sweep", "--profile", "smoke", "--workdir", str(wd), *grid])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "manifests" in err, err
    assert runs == []


def test_sweep_varies_every_training_key(tmp_path, monkeypatch, capsys):
    """The sweep's keys are the training keys (notebook 06's parameters cell now declares only a few of them),
    listed in ``bber sweep --help``; a key 06 never declared is passed to the runs."""
    from bber_utils.study import cli as study_cli
    from bber_utils.train import TrainConfig

    assert study_cli._sweep_keys() == set(TrainConfig.__dataclass_fields__) - {"workdir", "run_name"}
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    listed = {ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ") and ln.split()}
    assert study_cli._sweep_keys() <= listed
    seen = {}
    monkeypatch.setattr(runner, "run_sweep", lambda base, settings, seeds, workdir: seen.update(settings=settings))
    wd = make_workdir(tmp_path)
    assert cli.main(["sweep", "--profile", "smoke", "--workdir", str(wd), "grad_clip=0.5,2", "batch_size=4"]) == 1
    assert seen["settings"] == [{"grad_clip": 0.5, "batch_size": 4}, {"grad_clip": 2, "batch_size": 4}]
