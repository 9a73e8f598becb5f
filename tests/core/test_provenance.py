"""bber_utils.core.provenance: the environment recorded with every result, and ``bber results --env``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bber_utils.core import provenance as P

REPO = Path(__file__).resolve().parents[2]


def _fake_tool(folder: Path, name: str, first_line: str) -> None:
    script = folder / name
    script.write_text(f"#!/bin/sh\necho '{first_line}'\necho 'more text'\n")
    script.chmod(0o755)


def test_tool_versions_are_parsed_from_their_banners(tmp_path, monkeypatch):
    _fake_tool(tmp_path, "espeak-ng", "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/espeak-ng-data")
    _fake_tool(tmp_path, "ffmpeg", "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert P.tool_version("espeak-ng") == "1.51"
    assert P.tool_version("ffmpeg") == "5.1.9-0+deb12u1"
    assert P.tool_version("no-such-tool-bber") is None


def test_environment_records_what_the_issue_lists():
    env = P.environment()
    json.dumps(env)  # JSON-able, as it goes into metrics.json
    for key in ("python", "cpu", "cpu_count", "cpus_usable", "espeak_ng", "ffmpeg", "lock", "packages", "torch",
                "git", "threads_env", "cpu_pin"):
        assert key in env, key
    pin = env["cpu_pin"]
    assert pin["pinned"] == pin["pinnable"], pin  # the test suite runs pinned (tests/conftest.py) where it can
    if pin["pinnable"]:
        assert pin["torch_capability"] == "AVX2" and pin["variables"]["MKL_CBWR"] == "COMPATIBLE", pin
    assert env["python"].startswith("3.")
    assert {"version", "cuda", "num_threads", "num_interop_threads", "gpus"} <= set(env["torch"])
    assert env["torch"]["num_threads"] >= 1
    assert env["lock"]["file"] in ("requirements/cpu.lock", "requirements/gpu.lock")
    assert len(env["lock"]["sha256"]) == 64 and isinstance(env["lock"]["differences"], dict)
    assert env["packages"]["torch"] and env["packages"]["transformers"]
    for tool, key in (("espeak-ng", "espeak_ng"), ("ffmpeg", "ffmpeg")):
        if shutil.which(tool):
            assert env[key] and env[key][0].isdigit(), (tool, env[key])
    if shutil.which("git") and (REPO / ".git").exists():
        assert len(env["git"]["commit"]) == 40 and isinstance(env["git"]["dirty"], bool)


def test_git_state_sees_a_dirty_tree(tmp_path):
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    run("add", "a.txt")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    clean = P.git_state(tmp_path)
    assert clean["dirty"] is False and len(clean["commit"]) == 40
    (tmp_path / "a.txt").write_text("2")
    assert P.git_state(tmp_path) == {"commit": clean["commit"], "dirty": True}
    assert P.git_state(tmp_path / "nowhere") == {"commit": None, "dirty": None}


def test_lock_differences_name_changed_and_missing_packages(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("# header\nnumpy==2.4.6 \\\n    --hash=sha256:ab\n    # via bber\nScikit_Learn==1.9.1 \\\n"
                    "    --hash=sha256:cd\ntorch==2.13.0+cpu \\\n    --hash=sha256:ef\n")
    assert P.read_lock(lock) == {"numpy": "2.4.6", "scikit-learn": "1.9.1", "torch": "2.13.0+cpu"}
    installed = {"numpy": "2.4.6", "scikit-learn": "1.8.0", "pandas": "3.0"}
    assert P.lock_differences(lock, installed) == {
        "scikit-learn": {"lock": "1.9.1", "installed": "1.8.0"},
        "torch": {"lock": "2.13.0+cpu", "installed": None}}


def _metrics(path: Path, torch_version: str, env: bool = True) -> Path:
    path.mkdir(parents=True)
    doc = {"run": path.name, "metrics": {}}
    if env:
        doc["environment"] = {"python": "3.11.7", "torch": {"version": torch_version, "num_threads": 2},
                              "git": {"commit": "abc", "dirty": False}}
    (path / "metrics.json").write_text(json.dumps(doc))
    return path


def _bber(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bber_utils.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_results_env_shows_two_runs_side_by_side(tmp_path):
    wd = tmp_path / "wd"
    _metrics(wd / "train" / "run-a", "2.13.0+cpu")
    b = _metrics(tmp_path / "elsewhere" / "run-b", "2.15.0")
    out = _bber("results", "--workdir", str(wd), "--env", "run-a", str(b))
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.lstrip().startswith("torch.version"))
    assert "2.13.0+cpu" in row and "2.15.0" in row
    assert "python" not in out.stdout.split("B:")[1].split("\n", 1)[1]  # agreeing keys hidden by default
    full = _bber("results", "--workdir", str(wd), "--env", "run-a", str(b), "--all")
    assert "3.11.7" in full.stdout and "git.commit" in full.stdout


def test_results_env_names_the_run_without_an_environment(tmp_path):
    wd = tmp_path / "wd"
    _metrics(wd / "train" / "old", "2.13", env=False)
    _metrics(wd / "train" / "new", "2.13")
    out = _bber("results", "--workdir", str(wd), "--env", "old", "new")
    assert out.returncode == 1 and "old/metrics.json" in out.stdout and "records no environment" in out.stdout
    out = _bber("results", "--workdir", str(wd), "--env", "missing", "new")
    assert out.returncode == 1 and "no run 'missing'" in out.stdout


def test_train_writes_the_environment_into_metrics_json(tmp_path, monkeypatch):
    import bber_utils.train as T
    from tests.train import common as TT

    monkeypatch.setattr(T.inputs, "build_feature_stores", lambda tc, manifest: _stores(manifest))
    wd = TT.make_workdir(tmp_path)
    res = T.train(TT.tiny_config(wd, run_name="env", epochs=1, unimodal_epochs=1))
    m = json.loads((res.run_dir / "metrics.json").read_text())
    assert m["environment"]["torch"]["version"] and m["environment"]["lock"]["sha256"]
    assert P.run_environment("env", wd)[1] == m["environment"]


def _stores(manifest):
    from bber_utils.core.labels import CLASSES
    from tests.train import common as TT

    ids = manifest["utt_id"].tolist()
    y = [CLASSES.index(lbl) for lbl in manifest["label"]]
    return (TT.FakeStore(TT.features_for(ids, y, 6, 0, "audio"), 6, "audio"),
            TT.FakeStore(TT.features_for(ids, y, 5, 1, "text"), 5, "text"))
