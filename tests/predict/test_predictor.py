"""The predictor on long recordings (a warning, windows) and a work folder it must not write into."""

from __future__ import annotations

import json
import warnings
import numpy as np
import pytest
import soundfile as sf
from bber_utils import cli
from bber_utils.core.labels import CLASSES
from bber_utils.predict import predictor


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


def test_a_model_of_a_three_class_corpus_predicts_only_its_classes_and_normalises_as_trained(tmp_path):
    """A checkpoint storing ``classes`` (its training corpora's label sets) gives probability 0 to the others;
    ``audio_norm: speaker`` normalises the clips of one call together (one warning line under 10 clips)."""
    import torch

    ckpt = _checkpoint(tmp_path / "m.pt")
    state = torch.load(ckpt, weights_only=True)
    state["classes"] = ["neutral", "anger", "fear"]
    state["features"]["audio_norm"] = "speaker"
    torch.save(state, ckpt)
    clips = [str(_tone(tmp_path / f"c{i}.wav", 0.5 + 0.3 * i)) for i in range(3)]
    p = predictor.Predictor(ckpt, device="cpu")
    with pytest.warns(UserWarning, match="audio_norm=speaker; the 3 clip"):
        preds = p.predict(clips)
    for pred in preds:
        probs = dict(zip(CLASSES, pred.fused))
        assert pred.label in ("neutral", "anger", "fear") and sum(pred.fused) == pytest.approx(1, abs=1e-5)
        assert all(probs[c] == 0 for c in ("happy", "sad", "surprise", "disgust"))
    state["features"]["audio_norm"] = "none"
    torch.save(state, ckpt)
    plain = predictor.Predictor(ckpt, device="cpu").predict(clips)
    assert any(a.fused != b.fused for a, b in zip(preds, plain))  # the normalisation changed the inputs


def test_a_three_class_model_keeps_its_label_set_in_a_model_folder_and_its_onnx_graph(tmp_path):
    """``bber export`` of a label-set checkpoint writes ``classes`` into config.json and masks the other classes'
    logits in the ONNX graph: PyTorch and onnxruntime from the folder give those classes probability 0, as the
    checkpoint does (their logits were never trained, so they must not reach the softmax)."""
    import torch

    from bber_utils.predict.export import export_model

    ckpt = _checkpoint(tmp_path / "m.pt")
    state = torch.load(ckpt, weights_only=True)
    state["classes"] = ["neutral", "anger", "fear"]
    torch.save(state, ckpt)
    folder = export_model(ckpt, tmp_path / "folder", onnx=True)
    assert json.loads((folder / "config.json").read_text())["classes"] == ["neutral", "anger", "fear"]
    clips = [str(_tone(tmp_path / f"c{i}.wav", 0.5 + 0.3 * i)) for i in range(2)]
    runs = {name: predictor.Predictor(spec, device="cpu", onnx=onnx).predict(clips)
            for name, spec, onnx in (("checkpoint", ckpt, False), ("folder", folder, False), ("onnx", folder, True))}
    for name, preds in runs.items():
        for pred in preds:
            probs = dict(zip(CLASSES, pred.fused))
            assert all(probs[c] == 0 for c in ("happy", "sad", "surprise", "disgust")), name
            assert pred.label in ("neutral", "anger", "fear"), name
    assert np.allclose([p.fused for p in runs["onnx"]], [p.fused for p in runs["checkpoint"]], atol=1e-4)
