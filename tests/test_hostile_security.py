"""Hostile input: a checkpoint must never run code when it is loaded (issue 18, security).

The crafted file is written here: a pickle whose ``__reduce__`` opens a marker file for writing, so loading it
with ``weights_only=False`` creates the marker. Every loader must refuse it without creating the marker.
"""

from __future__ import annotations

import pathlib

import pytest
import torch

from bber_utils import predict, train


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker's existence proves code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "best.pt"
    torch.save({"model": {}, "model_name": "biformer", "evil": _Payload(marker)}, ckpt)
    assert not marker.exists()
    return ckpt, marker


def test_predict_refuses_a_checkpoint_that_runs_code(tmp_path):
    ckpt, marker = _crafted(tmp_path)
    with pytest.raises(predict.CheckpointError, match="not a readable checkpoint"):
        predict.load_model(ckpt)
    assert not marker.exists(), "loading the checkpoint ran code from it"


def test_train_load_checkpoint_refuses_a_checkpoint_that_runs_code(tmp_path):
    ckpt, marker = _crafted(tmp_path)
    with pytest.raises(Exception):  # UnpicklingError: "Weights only load failed"
        train.load_checkpoint(ckpt)
    assert not marker.exists(), "loading the checkpoint ran code from it"


def test_a_real_training_checkpoint_loads_with_weights_only(tmp_path):
    """What ``fit`` writes (model, optimizer, scheduler, scaler, history rows, meta) holds plain types only."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "scaler": scaler.state_dict(), "epoch": 3, "best_score": 0.5, "best_epoch": 2, "bad_epochs": 1,
             "history": [{"epoch": 0, "train_loss": 1.0, "dev_mean": 0.4}], "finished": False,
             "meta": {"model_name": "biformer", "model_config": {"hidden_dim": 16}, "config": {"lr": 1e-4}}}
    train.save_checkpoint(state, tmp_path / "last.pt")
    back = train.load_checkpoint(tmp_path / "last.pt")
    assert back["epoch"] == 3 and back["history"][0]["dev_mean"] == 0.4


def test_no_loader_in_the_package_unpickles_with_code():
    """Every ``torch.load`` passes ``weights_only=True``; no ``pickle.load`` / ``allow_pickle=True`` at all."""
    root = pathlib.Path(predict.__file__).parent
    for py in root.rglob("*.py"):
        src = py.read_text(encoding="utf-8")
        assert "weights_only=False" not in src, py
        assert "allow_pickle=True" not in src, py
        assert "pickle.load" not in src, py
        for i, line in enumerate(src.splitlines()):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{py}:{i + 1}"
