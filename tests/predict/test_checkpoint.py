"""Hostile input: a checkpoint must never run code when it is loaded (issue 18, security).

The crafted file is written here: a pickle whose ``__reduce__`` opens a marker file for writing, so loading it
with ``weights_only=False`` creates the marker. Every loader must refuse it without creating the marker.
"""

from __future__ import annotations

import pathlib

import pytest
import torch

from bber_utils import train

from bber_utils.predict import checkpoint

from bber_utils.predict import predictor

from bber_utils.predict import texts
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
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load_model(ckpt)
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
    root = pathlib.Path(checkpoint.__file__).parents[1]
    for py in root.rglob("*.py"):
        src = py.read_text(encoding="utf-8")
        assert "weights_only=False" not in src, py
        assert "allow_pickle=True" not in src, py
        assert "pickle.load" not in src, py
        for i, line in enumerate(src.splitlines()):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{py}:{i + 1}"


# ---------------------------------------------------------------- remote code named by a checkpoint's settings

_CODE = '''import pathlib
pathlib.Path({marker!r}).write_text("code from the model folder ran")
from transformers import PretrainedConfig, PreTrainedModel


class EvilConfig(PretrainedConfig):
    model_type = "evil"


class EvilModel(PreTrainedModel):
    config_class = EvilConfig
'''


def _code_folder(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """A "model folder" whose config names its own code (``auto_map``): importing that code writes a marker."""
    import json

    marker, folder = tmp_path / "code_ran", tmp_path / "innocent_model"
    folder.mkdir()
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text(_CODE.format(marker=str(marker)))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "hidden_size": 8,
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}}))
    return folder, marker


def _checkpoint_naming(tmp_path, text_encoder: str, where: str = "features", trust=True) -> pathlib.Path:
    """A weights-only ``text_only`` checkpoint whose stored settings ask for the encoder's remote code."""
    from bber_utils.models import build_model
    from bber_utils.models.config import ModelConfig

    cfg = ModelConfig.from_dict({"hidden_dim": 8, "num_heads": 2, "mamba_layers": 1, "out_features": 8,
                                 "model": "text_only"})
    settings = {"audio_encoder": "logmel", "text_encoder": text_encoder, "text_trust_remote_code": trust,
                "text_code_revision": None}
    ckpt = tmp_path / "best.pt"
    torch.save({"model": build_model("text_only", cfg, 1, 8).state_dict(), "model_name": "text_only", "d_audio": 1,
                "d_text": 8, "model_config": cfg.to_dict(), "features": settings if where == "features" else {},
                "config": settings if where == "config" else {}}, ckpt)
    return ckpt


@pytest.mark.parametrize("where", ["features", "config"])
def test_a_checkpoint_cannot_grant_trust_to_its_encoder_code(tmp_path, where):
    folder, marker = _code_folder(tmp_path)
    ckpt = _checkpoint_naming(tmp_path, str(folder), where)
    with pytest.raises(checkpoint.CheckpointError, match="--trust-remote-code") as err:
        predictor.Predictor(ckpt, device="cpu")
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(checkpoint.CheckpointError, match="--trust-remote-code"):
        texts.predict_texts(ckpt, ["hi"], device="cpu")
    assert not marker.exists(), "a checkpoint's settings ran the model folder's code"


def test_bber_predict_refuses_in_one_line_and_the_flag_allows_it(tmp_path, capsys):
    from bber_utils.cli import main

    folder, marker = _code_folder(tmp_path)
    ckpt = _checkpoint_naming(tmp_path, str(folder))
    wav = tmp_path / "clip.wav"
    import soundfile as sf
    import numpy as np

    sf.write(wav, np.zeros(16000, np.float32), 16000)
    assert main(["predict", str(wav), "--text", "hi", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--trust-remote-code" in err and str(folder) in err
    assert not marker.exists(), "bber predict ran the code a checkpoint named"
    # the person running the command may allow it: then (and only then) the folder's code is imported
    predictor.Predictor(ckpt, device="cpu", trust_remote_code=True)
    assert marker.exists()


def test_a_model_folder_with_code_but_no_trust_stored_is_refused_without_running_it(tmp_path):
    folder, marker = _code_folder(tmp_path)
    ckpt = _checkpoint_naming(tmp_path, str(folder), trust=False)
    for allowed in (False, True):  # the user's flag alone does not widen what the checkpoint asked for
        with pytest.raises(checkpoint.CheckpointError, match="cannot load its text encoder") as err:
            predictor.Predictor(ckpt, device="cpu", trust_remote_code=allowed)
        assert "\n" not in str(err.value)
    assert not marker.exists()


def test_a_hub_id_asking_for_remote_code_is_refused_before_any_download(tmp_path, monkeypatch):
    import transformers

    def no_download(*a, **kw):
        raise AssertionError("contacted the hub for a model whose code the user did not allow")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_download)
    ckpt = _checkpoint_naming(tmp_path, "someone/innocent-embeddings")
    with pytest.raises(checkpoint.CheckpointError, match="someone/innocent-embeddings.*--trust-remote-code"):
        predictor.Predictor(ckpt, device="cpu")


@pytest.mark.parametrize("settings, problem", [
    ({"text_trust_remote_code": "yes"}, "text_trust_remote_code"),
    ({"text_encoder": "../../no/such/folder"}, "text encoder"),
    ({"audio_encoder": ["logmel"]}, "audio_encoder"),
    ({"audio_pool": 0}, "audio_pool"),
    ({"text_context": -1}, "text_context"),
    ({"text_context_mode": "all"}, "text_context_mode"),
    ({"text_max_tokens": "95"}, "text_max_tokens"),
    ({"evil_option": 1}, "evil_option"),
])
def test_stored_settings_are_checked_as_data(tmp_path, settings, problem):
    from bber_utils.models import build_model
    from bber_utils.models.config import ModelConfig

    cfg = ModelConfig.from_dict({"hidden_dim": 8, "num_heads": 2, "mamba_layers": 1, "out_features": 8, "model": "text_only"})
    ckpt = tmp_path / "best.pt"
    torch.save({"model": build_model("text_only", cfg, 1, 256).state_dict(), "model_name": "text_only",
                "d_audio": 1, "d_text": 256, "model_config": cfg.to_dict(),
                "features": {"text_encoder": "hashgram", **settings}}, ckpt)
    with pytest.raises(checkpoint.CheckpointError, match=problem) as err:
        predictor.Predictor(ckpt, device="cpu")
    assert "\n" not in str(err.value)
