"""Model folders (config.json + model.safetensors + README.md) through huggingface_hub's PyTorchModelHubMixin:
what ``bber export`` writes loads back as the same model, from a folder or an owner/name repository, runs no code
from the folder, and every bad folder is one line (exit 2 on the command line)."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
import torch

from bber_utils import cli
from bber_utils.core.labels import CLASSES
from bber_utils.predict import checkpoint, export, hub, predictor
from bber_utils.predict.checkpoint import CheckpointError
from tests.predict.common import make_run, plant_code, tone


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run folder, its exported model folder) of a tiny biformer."""
    root = tmp_path_factory.mktemp("hub")
    run = make_run(root, "biformer")
    return run, export.export_model(run, root / "model")


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def _edit_config(folder, change):
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


def test_the_folder_holds_config_safetensors_and_a_card(exported):
    run, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == "bber-model" and cfg["model_name"] == "biformer"
    assert cfg["labels"] == list(CLASSES)  # a list of class names: another label set slots in
    assert cfg["encoders"]["audio"]["name"] == "logmel" and cfg["encoders"]["text"]["name"] == "hashgram"
    assert cfg["features"] == {"audio_encoder": "logmel", "text_encoder": "hashgram", "text_max_tokens": 95,
                               "audio_pool": 1}
    assert cfg["model_config"]["hidden_dim"] == 16 and (cfg["d_audio"], cfg["d_text"]) == (80, 256)
    head = (folder / "model.safetensors").read_bytes()[:9]  # safetensors: u64 header length, then JSON
    assert struct.unpack("<Q", head[:8])[0] > 0 and head[8:9] == b"{"


def test_from_pretrained_gives_back_the_trained_weights(exported):
    run, folder = exported
    model = hub.BberModel.from_pretrained(folder)
    trained = torch.load(run / "best.pt", weights_only=True)["model"]
    state = model.model.state_dict()
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[k], trained[k]) for k in trained)
    assert not model.training


def test_predict_from_the_folder_equals_predict_from_the_run(exported, tmp_path, capsys):
    run, folder = exported
    clip = tone(tmp_path / "a.wav", 1.5)
    rows = []
    for source in (run, folder):
        assert cli.main(["predict", str(clip), "--model", str(source), "--text", "so happy", "--json"]) == 0
        rows.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert rows[0] == rows[1]
    assert checkpoint.find_checkpoint(folder) == folder  # notebook 09's inference_checkpoint takes a folder


def test_an_owner_name_repository_is_fetched_with_only_the_model_files(exported, monkeypatch):
    import huggingface_hub

    _, folder = exported
    asked = {}

    def fetch(repo_id, revision=None, allow_patterns=None, **kw):
        asked.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fetch)
    model, meta = hub.load_trained("someone/bber-demo", revision="v1")
    assert asked == {"repo_id": "someone/bber-demo", "revision": "v1",
                     "allow_patterns": ["config.json", "model.safetensors", "README.md", "model.onnx"]}
    assert meta["model_name"] == "biformer" and meta["labels"] == list(CLASSES)
    assert checkpoint.find_checkpoint("someone/bber-demo").as_posix() == "someone/bber-demo"


def test_an_unreachable_repository_is_one_line(monkeypatch):
    import huggingface_hub

    def offline(*a, **k):
        raise huggingface_hub.errors.LocalEntryNotFoundError("Cannot find the requested files in the disk cache\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match=r"^someone/missing: no such local folder, and the Hub repository "
                                              r"could not be fetched \(Cannot find the requested files[^\n]*\)$"):
        hub.BberModel.from_pretrained("someone/missing")


def test_loading_runs_no_code_from_the_folder(exported, tmp_path):
    """Python modules and a pickle planted in the folder are never imported or unpickled: with safetensors weights
    the model loads and predicts; without them it is refused, the pickle left unread."""
    _, folder = exported
    hostile = _copy(folder, tmp_path)
    marker = tmp_path / "pwned"
    plant_code(hostile, marker)
    hub.BberModel.from_pretrained(hostile)
    pred = predictor.Predictor(hostile, device="cpu")
    pred.predict([tone(tmp_path / "a.wav", 0.5)], ["hello"])
    assert not marker.exists(), "loading the model folder ran code from it"
    (hostile / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no model\.safetensors \(pytorch_model\.bin is there, but pickled "
                                              r"weights are never loaded\)"):
        hub.load_trained(hostile)
    assert not marker.exists(), "loading the model folder ran code from it"


# ------------------------------------------------------------------------------------------------- bad folders
def _cli_error(model, tmp_path, capsys) -> str:
    clip = tone(tmp_path / "clip.wav", 0.5)
    assert cli.main(["predict", str(clip), "--model", str(model), "--text", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_folder_without_config_json_is_one_line(exported, tmp_path, capsys):
    folder = _copy(exported[1], tmp_path)
    (folder / "config.json").unlink()
    assert "not a BBER model folder: no config.json" in _cli_error(folder, tmp_path, capsys)
    (folder / "model.safetensors").unlink()
    assert "neither a run folder (no best.pt) nor a model folder (no config.json" in _cli_error(folder, tmp_path,
                                                                                              capsys)


@pytest.mark.parametrize("text, message", [
    ("{not json", "config.json: not readable JSON"),
    ('{"model_type": "wav2vec2", "hidden_size": 1024}', "not the config of a BBER model (format None"),
    ('[1, 2]', "not the config of a BBER model (format 'list'"),
])
def test_a_config_json_that_is_not_ours_is_one_line(exported, tmp_path, capsys, text, message):
    folder = _copy(exported[1], tmp_path)
    (folder / "config.json").write_text(text)
    assert message in _cli_error(folder, tmp_path, capsys)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["model_config"].update(hidden_dim=32),
     r"model\.safetensors: does not fit a biformer of its config\.json: model\.audio_encoder\.proj\.weight has "
     r"shape \[16, 80\] in the file but \[32, 80\] in the config"),
    (lambda c: c["model_config"].update(num_layers=2),
     r"does not fit a biformer of its config\.json: \d+ tensor\(s\) missing, 0 unexpected \(model\.cross\.layers\.1"),
    (lambda c: c.update(d_text=128), r"text_encoder\.proj\.weight has shape \[16, 256\] in the file but \[16, 128\]"),
])
def test_weights_whose_shapes_do_not_match_the_config_are_one_line(exported, tmp_path, capsys, change, message):
    folder = _copy(exported[1], tmp_path)
    _edit_config(folder, change)
    with pytest.raises(CheckpointError, match=message):
        hub.BberModel.from_pretrained(folder)
    assert "does not fit a biformer" in _cli_error(folder, tmp_path, capsys)


def test_a_truncated_safetensors_file_is_one_line(exported, tmp_path):
    folder = _copy(exported[1], tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        hub.load_trained(folder)


def test_a_model_of_another_label_set_is_refused(exported, tmp_path, capsys):
    folder = _copy(exported[1], tmp_path)
    _edit_config(folder, lambda c: c.update(labels=list(reversed(CLASSES))))
    err = _cli_error(folder, tmp_path, capsys)
    assert "its label set ['fear', 'disgust'" in err and "differs from the one given ['neutral', 'happy'" in err
    _edit_config(folder, lambda c: c.update(labels=list(CLASSES[:6])))
    assert "6 labels but the model has 7 outputs" in _cli_error(folder, tmp_path, capsys)


def test_a_model_whose_encoders_differ_from_the_features_given_is_refused(exported, tmp_path, capsys):
    folder = _copy(exported[1], tmp_path)
    _edit_config(folder, lambda c: c["encoders"]["audio"].update(n_mels=64, hop=160))
    err = _cli_error(folder, tmp_path, capsys)
    assert "its audio encoder differs from the features given: hop=160 in the model, 320 in the features " \
           "(2 setting(s) differ)" in err
    with pytest.raises(CheckpointError, match="text encoder differs from the features given: dim=512"):
        hub.check_encoders({"encoders": {"text": {"name": "hashgram", "dim": 512}}},
                           {"text": {"name": "hashgram", "dim": 256}}, "m")


def test_a_config_that_asks_for_remote_code_is_refused_without_the_users_consent(exported, tmp_path, capsys):
    folder = _copy(exported[1], tmp_path)
    code = tmp_path / "encoder"
    code.mkdir()
    _edit_config(folder, lambda c: c["features"].update(text_encoder=str(code), text_trust_remote_code=True))
    assert "runs code of its own, and a checkpoint cannot allow that" in _cli_error(folder, tmp_path, capsys)


def test_push_to_hub_uploads_the_folder_bber_export_writes(exported, monkeypatch):
    """Publishing is the mixin's ``push_to_hub``; on this machine the Hub is a stub that records the upload."""
    import huggingface_hub.hub_mixin as mixin

    seen = {}

    class Api:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kw):
            seen.update(repo_id=repo_id, files=sorted(p.name for p in folder_path.iterdir()),
                        card=(folder_path / "README.md").read_text())
            return "https://huggingface.co/someone/bber-demo/commit/0"

    monkeypatch.setattr(mixin, "HfApi", Api)
    model = hub.BberModel.from_pretrained(exported[1])
    model.push_to_hub("someone/bber-demo")
    assert seen["repo_id"] == "someone/bber-demo"
    assert seen["files"] == ["README.md", "config.json", "model.safetensors"]
    assert "# BBER biformer" in seen["card"] and "library_name: bber" in seen["card"]


def test_the_unimodal_and_fused_probabilities_come_from_the_folder(exported, tmp_path):
    pred = predictor.Predictor(exported[1], device="cpu")
    (out,) = pred.predict([tone(tmp_path / "a.wav", 1.0)], ["I am so happy"])
    for probs in (out.fused, out.audio, out.text_probs):
        assert len(probs) == 7 and abs(sum(probs) - 1) < 1e-4
    assert not np.allclose(out.audio, out.text_probs)


def test_predict_texts_reads_a_model_folder(tmp_path):
    from bber_utils.predict import texts

    run = make_run(tmp_path, "text_only")
    folder = export.export_model(run, tmp_path / "model")
    lines = ["I am so happy", "this is awful"]
    assert texts.predict_texts(folder, lines, device="cpu").equals(texts.predict_texts(run, lines, device="cpu"))
