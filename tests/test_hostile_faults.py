"""Faults (issue 18): a killed extraction loses only what was not flushed (the store flushes by time as well as
by count); long recordings get a warning or windowed prediction; ``predict --workdir`` creates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bber_utils import cli
from bber_utils.core.labels import CLASSES

from bber_utils.predict import predictor
from bber_utils.features import store as store_mod

ROOT = Path(__file__).resolve().parents[1]


class _SlowText:
    """A text encoder that takes ``delay`` seconds per batch (dim 2)."""

    modality, dim, uses_torch = "text", 2, False

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.key = {"name": "slow"}

    def encode(self, texts):
        time.sleep(self.delay)
        return [np.ones((1, 2), np.float32) * len(t) for t in texts]


def _manifest(n: int) -> pd.DataFrame:
    return pd.DataFrame({"utt_id": [f"u{i:04d}" for i in range(n)], "text": [f"t{i}" for i in range(n)]})


def test_the_store_flushes_by_time_with_a_fake_clock(tmp_path, monkeypatch):
    ticks = iter(range(0, 10_000, 11))  # every reading of the clock is 11 s later
    monkeypatch.setattr(store_mod, "_clock", lambda: next(ticks))
    flushed = []
    real = store_mod._Writer.flush
    monkeypatch.setattr(store_mod._Writer, "flush", lambda self: (flushed.append(len(self.pending)), real(self)))
    st = store_mod.ensure_features(_manifest(40), "text", _SlowText(), tmp_path, batch_size=4, flush_every=512,
                                   flush_seconds=30, progress=False)
    assert len(st) == 40
    # one flush every three batches (33 s), not one at the end: a kill would lose at most 3 batches
    assert flushed[:3] == [12, 12, 12]


def test_a_killed_extraction_keeps_what_was_flushed_by_time(tmp_path):
    code = ("import sys, time, numpy as np, pandas as pd\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from tests.test_hostile_faults import _SlowText, _manifest\n"
            "from bber_utils.features.store import ensure_features\n"
            "print('start', flush=True)\n"
            "ensure_features(_manifest(400), 'text', _SlowText(0.1), sys.argv[2], batch_size=4, "
            "flush_every=512, flush_seconds=0.5, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(tmp_path)], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert proc.stdout.readline().strip() == b"start"
    time.sleep(3.0)
    proc.send_signal(signal.SIGKILL)  # no finally, no flush on the way out
    proc.wait(timeout=30)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    kept = len(store_mod.FeatureStore(folder))
    assert 0 < kept < 400, kept  # the 512-utterance count alone would have flushed nothing before the kill
    # and a rerun extracts only the rest
    st = store_mod.ensure_features(_manifest(400), "text", _SlowText(), tmp_path, batch_size=64, progress=False)
    assert len(st) == 400 and st.stats["extracted"] == 400 - kept


# ---------------------------------------------------------------------------------------------- predict
def _checkpoint(path):
    import torch

    from bber_utils.features import build_audio_encoder
    from bber_utils.models import build_model
    from bber_utils.models.config import ModelConfig

    d = build_audio_encoder("logmel").dim
    cfg = ModelConfig.from_dict({"hidden_dim": 8, "num_heads": 2, "num_layers": 1, "gated_dim": 8, "mamba_layers": 1,
                                 "out_features": 8, "model": "audio_only"})
    torch.manual_seed(0)
    model = build_model("audio_only", cfg, d, 1)
    torch.save({"model": model.state_dict(), "model_name": "audio_only", "d_in": d, "model_config": cfg.to_dict(),
                "features": {"audio_encoder": "logmel", "text_encoder": "hashgram", "audio_pool": 4},
                "config": {}}, path)
    return path


def _tone(path, seconds, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * (200 + 20 * t) * t)).astype(np.float32), sr)
    return path


def test_long_recordings_warn_and_can_be_windowed(tmp_path):
    pred = predictor.Predictor(_checkpoint(tmp_path / "best.pt"), device="cpu")
    long = _tone(tmp_path / "long.wav", predictor.LONG_SECONDS + 2)
    with pytest.warns(UserWarning, match=r"long.wav: 62 s long \(> 60 s\).*--window"):
        pred.predict([long])
    clip = _tone(tmp_path / "clip.wav", 25)
    (out,) = pred.predict([clip], window_s=10)
    wins = out.extra["windows"]
    assert [(w["start_s"], w["end_s"]) for w in wins] == [(0, 10), (10, 20), (20, 25)]
    mean = np.average([w["fused"] for w in wins], axis=0, weights=[10, 10, 5])
    assert np.allclose(out.fused, mean, atol=1e-5) and out.label == CLASSES[int(np.argmax(mean))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # windowed: no long-clip warning
        pred.predict([long], window_s=10)


def test_predict_window_on_the_command_line_prints_windows(tmp_path, capsys):
    import json

    ckpt = _checkpoint(tmp_path / "best.pt")
    clip = _tone(tmp_path / "clip.wav", 12)
    assert cli.main(["predict", str(clip), "--checkpoint", str(ckpt), "--window", "5", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(row["windows"]) == 3 and row["label"]


def test_predict_workdir_creates_no_folders(tmp_path, capsys):
    clip = _tone(tmp_path / "clip.wav", 1)
    target = tmp_path / "X"
    target.mkdir()
    rc = cli.main(["predict", str(clip), "--workdir", str(target)])
    assert rc == 2 and "no trained model under" in capsys.readouterr().err
    assert list(target.iterdir()) == []
