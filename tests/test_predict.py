"""Inference: checkpoints, per-file errors that never stop a batch, folders/CSVs, the command's exit status."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from bber_utils import predict
from bber_utils.labels import CLASSES
from bber_utils.models import build_model
from bber_utils.models.config import ModelConfig

ENCODERS = {"audio_encoder": "logmel", "text_encoder": "hashgram", "text_max_tokens": 32, "audio_pool": 4}


def _checkpoint(path, name="biformer", d_audio=None, d_text=None):
    from bber_utils.features import build_audio_encoder, build_text_encoder

    d_audio = d_audio or build_audio_encoder("logmel").dim
    d_text = d_text or build_text_encoder("hashgram", max_tokens=32).dim
    cfg = ModelConfig.from_dict({"hidden_dim": 16, "num_heads": 2, "num_layers": 1, "mamba_layers": 1,
                                 "out_features": 16, "gated_dim": 16, "model": name})
    torch.manual_seed(0)
    model = build_model(name, cfg, d_audio, d_text)
    torch.save({"model": model.state_dict(), "model_name": name, "d_audio": d_audio, "d_text": d_text,
                "model_config": cfg.to_dict(), "features": ENCODERS, "config": {}}, path)
    return path


def _wav(path, seconds=1.0, sr=22050):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), sr)
    return path


def test_bad_files_are_reported_and_the_rest_scored(tmp_path):
    pred = predict.Predictor(_checkpoint(tmp_path / "best.pt"), device="cpu")
    good = _wav(tmp_path / "a.wav")
    stereo = tmp_path / "b.flac"
    sf.write(stereo, np.stack([np.sin(np.arange(16000) / 9), np.cos(np.arange(16000) / 7)], 1) * .2, 16000)
    short = _wav(tmp_path / "short.wav", seconds=0.02)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really audio")
    out = pred.predict([good, stereo, short, broken, tmp_path / "missing.wav"],
                       ["I am so happy", "Мне очень грустно", "x", "y", "z"])
    assert [p.error is None for p in out] == [True, True, False, False, False]
    assert "too short" in out[2].error and "not found" in out[4].error
    for p in out[:2]:
        for probs in (p.fused, p.audio, p.text_probs):
            assert len(probs) == 7 and abs(sum(probs) - 1) < 1e-4
        assert p.label == CLASSES[int(np.argmax(p.fused))]
    # the unimodal heads really are different views, not copies of the fused output
    assert not np.allclose(out[0].audio, out[0].text_probs)


def test_no_transcript_and_no_asr_is_a_clear_per_file_error(tmp_path):
    pred = predict.Predictor(_checkpoint(tmp_path / "best.pt"), device="cpu")
    out = pred.predict([_wav(tmp_path / "a.wav")])
    assert out[0].fused is None and "no transcript" in out[0].error and "--asr" in out[0].error


def test_audio_frames_are_pooled_as_in_training(tmp_path, monkeypatch):
    pred = predict.Predictor(_checkpoint(tmp_path / "best.pt"), device="cpu")
    seen = []
    forward = pred.model.forward
    monkeypatch.setattr(pred.model, "forward", lambda batch: seen.append(batch["audio"].shape) or forward(batch))
    pred.predict([_wav(tmp_path / "a.wav", seconds=1.0)], ["hello there"])
    assert pred.audio_pool == 4 and seen[0][1] == 13  # 50 log-mel frames per second, averaged in fours


def test_audio_only_checkpoint_needs_no_text(tmp_path):
    pred = predict.Predictor(_checkpoint(tmp_path / "best.pt", "audio_only"), device="cpu")
    out = pred.predict([_wav(tmp_path / "a.wav")])
    assert out[0].error is None and out[0].audio == out[0].fused and out[0].text_probs is None


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path / "best.pt", d_audio=40)  # logmel gives 80-d frames
    with pytest.raises(predict.CheckpointError, match="audio features of width 40"):
        predict.Predictor(ckpt, device="cpu")
    state = torch.load(ckpt, weights_only=False)
    state["model_config"]["hidden_dim"] = 8
    torch.save(state, ckpt)
    with pytest.raises(predict.CheckpointError, match="do not fit"):
        predict.load_model(ckpt)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(predict.CheckpointError, match="not a readable checkpoint"):
        predict.load_model(tmp_path / "junk.pt")


def test_missing_default_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(predict.CheckpointError, match="make reproduce"):
        predict.find_checkpoint(None, workdir=tmp_path)


def test_folders_and_csvs_expand(tmp_path):
    (tmp_path / "clips").mkdir()
    _wav(tmp_path / "clips" / "b.wav")
    _wav(tmp_path / "clips" / "a.wav")
    (tmp_path / "clips" / "notes.txt").write_text("x")
    (tmp_path / "list.csv").write_text("path,text\nclips/a.wav,hello there\nclips/b.wav,\n")
    paths, texts = predict.collect_inputs([tmp_path / "clips", tmp_path / "list.csv"])
    assert [p.split("/")[-1] for p in paths] == ["a.wav", "b.wav", "a.wav", "b.wav"]
    assert texts == [None, None, "hello there", None]
    with pytest.raises(ValueError, match="'path' column"):
        (tmp_path / "bad.csv").write_text("file\nx.wav\n")
        predict.collect_inputs([tmp_path / "bad.csv"])


def test_cli_exit_status_and_json(tmp_path, capsys):
    from bber_utils.cli import main

    ckpt = _checkpoint(tmp_path / "best.pt")
    a = _wav(tmp_path / "a.wav")
    assert main(["predict", str(a), "--text", "what a wonderful day", "--checkpoint", str(ckpt), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["label"] in CLASSES and abs(sum(row[f"fused_{c}"] for c in CLASSES) - 1) < 1e-4
    code = main(["predict", str(a), str(tmp_path / "nope.wav"), "--text", "hi there", "--text", "x",
                 "--checkpoint", str(ckpt)])
    captured = capsys.readouterr()
    assert code == 1 and "nope.wav\tERROR\tfile not found" in captured.out and "1 of 2 clips failed" in captured.err
    assert main(["predict", str(a), "--checkpoint", str(tmp_path / "none.pt")]) == 2
