"""ONNX export and onnxruntime inference: probabilities within 1e-4 of PyTorch's for every family on one-frame,
typical and the longest clips, with and without text; dynamic batch and length axes; ``bber predict --onnx``
imports no torch; an ONNX file of another model (or other weights, or no model of ours) is one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bber_utils import cli
from bber_utils.features import build_audio_encoder, build_text_encoder
from bber_utils.predict import export, hub, onnx_model, predictor
from bber_utils.predict.checkpoint import CheckpointError
from tests.predict.common import make_run, tone

FAMILIES = ["biformer", "bigraphformer", "audio_only", "text_only"]
# audio seconds (50 log-mel frames a second) and transcript words: one frame, a typical clip, the longest clip
# scored without --window (predictor.LONG_SECONDS) with the longest transcript read (text_max_tokens 95)
CASES = {"one frame": (0.0, 1), "typical": (4.0, 12), "longest": (predictor.LONG_SECONDS, 95)}
WORDS = "oh no I cannot believe you did that again why would anyone".split()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> its exported model folder with model.onnx (each family exported once for the module)."""
    folders = {}

    def get(name):
        if name not in folders:
            root = tmp_path_factory.mktemp(f"onnx-{name}")
            folders[name] = export.export_model(make_run(root, name), root / "model", onnx=True)
        return folders[name]

    return get


@pytest.fixture(params=FAMILIES)
def folder(request, exported):
    return exported(request.param)


@pytest.fixture
def biformer(exported):
    return exported("biformer")


def _features(seconds: float, words: int, text: bool) -> dict[str, np.ndarray]:
    """A batch of two clips (the second about half as long, so padding is exercised) as the predictor makes it."""
    audio_enc, text_enc = build_audio_encoder("logmel"), build_text_encoder("hashgram", max_tokens=95)
    wavs = [np.sin(np.arange(int(s * 16000)) / 7.0).astype(np.float32) * 0.3 for s in (seconds, seconds / 2)]
    sentence = " ".join((WORDS * 10)[:words]) if text else ""
    arrays = {}
    arrays["audio"], arrays["audio_mask"] = predictor.pad_arrays(audio_enc.encode(wavs))
    arrays["text"], arrays["text_mask"] = predictor.pad_arrays(text_enc.encode([sentence, sentence[: len(sentence) // 2]]))
    return arrays


@pytest.mark.parametrize("text", [True, False], ids=["with text", "without text"])
@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_matches_pytorch(folder, case, text):
    seconds, words = CASES[case]
    arrays = _features(seconds, words, text)
    if case == "longest":
        assert arrays["audio"].shape[1] == 2999 and arrays["text"].shape[1] == (95 if text else 1)
    if case == "one frame":
        assert arrays["audio"].shape[1] == 1 and arrays["text"].shape[1] == 1
    cfg = hub.read_config(folder)
    model, _ = hub.load_trained(folder)
    ref = predictor.TorchBackend(model, "cpu").probabilities(arrays)
    got = onnx_model.OnnxModel(folder / "model.onnx", cfg).probabilities(arrays)
    assert ref.keys() == got.keys() == ({"fused"} if cfg["model_name"].endswith("_only") else {"fused", "audio", "text"})
    for k in ref:
        assert got[k].shape == ref[k].shape
        assert np.abs(got[k] - ref[k]).max() <= 1e-4, k


def test_batch_and_lengths_are_dynamic_axes(folder):
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    cfg = hub.read_config(folder)
    for i in session.get_inputs():
        modality = i.name.removesuffix("_mask")
        assert i.shape[:2] == ["batch", f"{modality}_frames"], i
        assert i.shape[2:] == ([] if i.name.endswith("_mask") else [cfg[f"d_{modality}"]])
    assert all(o.shape == ["batch", 7] for o in session.get_outputs())


def test_bber_predict_onnx_gives_the_pytorch_probabilities(biformer, tmp_path, capsys):
    clips = [str(tone(tmp_path / f"{s}.wav", s)) for s in (0.1, 3.0, 8.0)]
    rows = {}
    for flags in ([], ["--onnx"]):
        args = ["predict", *clips, "--model", str(biformer), "--json", *flags]
        assert cli.main(args + [a for t in ("so happy", "", "why") for a in ("--text", t or "x")]) == 0
        rows[bool(flags)] = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    for torch_row, onnx_row in zip(rows[False], rows[True]):
        assert torch_row["label"] == onnx_row["label"]
        for k, v in torch_row.items():
            if isinstance(v, float):
                assert abs(v - onnx_row[k]) <= 1e-4, k


def test_bber_predict_onnx_imports_no_torch(biformer, tmp_path):
    """Log-mel and hashgram features are numpy; the model runs on onnxruntime: torch is never imported."""
    clip = tone(tmp_path / "a.wav", 1.0)
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        from bber_utils import cli
        rc = cli.main(["predict", {str(clip)!r}, "--model", {str(biformer)!r}, "--onnx", "--text", "so happy"])
        assert rc == 0, rc
        assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_export_refuses_a_graph_that_differs_from_pytorch(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_model, "PARITY_ATOL", -1.0)
    with pytest.raises(CheckpointError, match=r"the ONNX graph of audio_only differs from PyTorch by .* not written"):
        export.export_model(make_run(tmp_path, "audio_only"), tmp_path / "m", onnx=True)
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------------ bad ONNX files
def _onnx_error(model, tmp_path, capsys, *flags) -> str:
    clip = tone(tmp_path / "clip.wav", 0.5)
    assert cli.main(["predict", str(clip), "--model", str(model), "--text", "hi", "--onnx", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_onnx_file_of_another_model_is_refused(biformer, exported, tmp_path, capsys):
    other = exported("audio_only")
    err = _onnx_error(biformer, tmp_path, capsys, "--onnx-file", str(other / "model.onnx"))
    assert "model.onnx: the ONNX export of another model: its model_name (audio_only) differs from" in err


def test_the_onnx_file_of_other_weights_is_refused(biformer, tmp_path, capsys):
    folder = shutil.copytree(biformer, tmp_path / "copy")
    retrained = export.export_model(make_run(tmp_path, "biformer", seed=1), tmp_path / "retrained")
    shutil.copyfile(retrained / "model.safetensors", folder / "model.safetensors")
    assert "exported from other weights than" in _onnx_error(folder, tmp_path, capsys)


def test_an_onnx_file_that_is_not_ours_or_not_onnx_is_refused(biformer, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "foreign.onnx")
    assert "not an ONNX export of a BBER model (no bber_config metadata)" in _onnx_error(
        biformer, tmp_path, capsys, "--onnx-file", str(tmp_path / "foreign.onnx"))
    (tmp_path / "text.onnx").write_text("hello")
    assert "text.onnx: not a readable ONNX model" in _onnx_error(biformer, tmp_path, capsys, "--onnx-file",
                                                                 str(tmp_path / "text.onnx"))


def test_onnx_needs_a_model_folder_with_its_graph(biformer, tmp_path, capsys):
    folder = shutil.copytree(biformer, tmp_path / "copy")
    (folder / "model.onnx").unlink()
    assert "model.onnx: no such ONNX file (write one with `bber export" in _onnx_error(folder, tmp_path, capsys)
    run = make_run(tmp_path, "biformer")
    assert "ONNX runs from a model folder; write one with `bber export --run" in _onnx_error(run, tmp_path, capsys)
    with pytest.raises(ValueError, match="--onnx runs on the CPU"):
        predictor.Predictor(biformer, device="cuda", onnx=True)
