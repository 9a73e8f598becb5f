"""Stage 1's text encoder in a second process (``bber_utils/train/parallel_stage1.py``): the same run as training
both encoders here one after the other, a failed second process is made up for here, and the second process is
started only where it helps."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

import bber_utils.train as T
from bber_utils.train import parallel_stage1
from bber_utils.train.config import TrainConfig
from tests.train.common import make_workdir, tiny_config

pytestmark = pytest.mark.usefixtures("fake_features")


def _checkpoints(run_dir):
    """Every checkpoint's tensors of a run and of its stage-1 cache entries, by path below the work folder."""
    import torch

    out = {}
    root = run_dir.parents[1]
    for path in sorted([*run_dir.glob("best.pt"), *(root / "train" / "_unimodal").glob("*/full/best.pt")]):
        state = torch.load(path, weights_only=True, map_location="cpu")["model"]
        out[str(path.relative_to(root)).replace(run_dir.name, "RUN")] = state
    return out


def _train(tmp_path, name, parallel):
    wd = make_workdir(tmp_path / name, per_class=(4, 1, 1))
    return T.train(tiny_config(wd, unimodal_epochs=4, epochs=3, parallel_stage1=parallel, run_name="r"))


def test_the_text_encoder_trained_in_a_second_process_gives_the_same_run(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(parallel_stage1, "MIN_SAMPLE_EPOCHS", 0)
    monkeypatch.setattr(parallel_stage1, "_cores", lambda: 2)
    here = _train(tmp_path, "here", parallel=False)
    assert "second process" not in capsys.readouterr().out
    side = _train(tmp_path, "side", parallel=True)
    assert "second process" in capsys.readouterr().out
    a, b = _checkpoints(here.run_dir), _checkpoints(side.run_dir)
    assert len(a) == 3 and a.keys() == b.keys()  # stage 2, audio-only, text-only
    for path in a:
        assert a[path].keys() == b[path].keys()
        assert all(torch.equal(a[path][k], b[path][k]) for k in a[path]), path
    assert here.metrics["metrics"] == side.metrics["metrics"]


def _exit(code):
    sys.exit(code)


def test_a_second_process_that_fails_is_made_up_for_here(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel_stage1, "MIN_SAMPLE_EPOCHS", 0)
    monkeypatch.setattr(parallel_stage1, "_cores", lambda: 2)
    started = []

    def failing(tc1, store, args):
        proc = multiprocessing.get_context("spawn").Process(target=_exit, args=(3,))
        proc.start()
        started.append(proc)
        return proc

    monkeypatch.setattr(parallel_stage1, "_start_text_process", failing)
    with pytest.warns(UserWarning, match="second process exited with status 3; training it here"):
        run = _train(tmp_path, "failed", parallel=True)
    assert started and (run.run_dir / "metrics.json").exists()
    assert set(run.unimodal_history) == {"audio_only", "text_only"}


@pytest.mark.parametrize("case", ["two threads", "one core", "cached", "tiny", "interrupt_after",
                                  "text only", "cuda"])
def test_the_second_process_starts_only_where_it_helps(tmp_path, monkeypatch, case):
    import torch

    wd = make_workdir(tmp_path, per_class=(4, 1, 1))
    tc = TrainConfig.from_dict(tiny_config(wd, unimodal_epochs=4, interrupt_after=2 if case == "interrupt_after"
                                           else 0))
    monkeypatch.setattr(parallel_stage1, "MIN_SAMPLE_EPOCHS", 10**9 if case == "tiny" else 0)
    monkeypatch.setattr(parallel_stage1, "_cores", lambda: 1 if case == "one core" else 2)
    monkeypatch.setattr(parallel_stage1.unimodal, "is_cached", lambda *a, **k: case == "cached")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2 if case == "two threads" else 1)
    store = object()
    stores = (None, store) if case == "text only" else (store, store)
    device = torch.device("cuda" if case == "cuda" else "cpu")
    splits = {"train": list(range(50))}
    helps = parallel_stage1._side_process_helps(tc, stores, device, splits, {}, None)
    assert helps is False
    if case == "tiny":  # the same inputs, only big enough: it helps
        monkeypatch.setattr(parallel_stage1, "MIN_SAMPLE_EPOCHS", 0)
        assert parallel_stage1._side_process_helps(tc, stores, device, splits, {}, None) is True


SCRIPT = """
import sys
print("TOP LEVEL RAN", flush=True)
sys.path.insert(0, sys.argv[2])
from pathlib import Path
import bber_utils.train as T
from bber_utils.train import parallel_stage1
from tests.train.common import real_workdir, tiny_config
parallel_stage1.MIN_SAMPLE_EPOCHS = 0
parallel_stage1._cores = lambda: 2
wd = real_workdir(Path(sys.argv[1]))
T.train(tiny_config(wd, epochs=1, unimodal_epochs=2, text_encoder="hashgram", audio_pool=2, num_threads=1))
"""


def test_a_users_script_that_trains_at_its_top_level_runs_once(tmp_path):
    """The second process does not import the main script again (multiprocessing's spawn would)."""
    import subprocess
    from pathlib import Path

    script = tmp_path / "my_training.py"
    script.write_text(SCRIPT)
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "work"), str(repo)], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("TOP LEVEL RAN") == 1 and "second process beside" in out.stdout, out.stdout
    assert "exited with status" not in out.stderr, out.stderr[-2000:]
