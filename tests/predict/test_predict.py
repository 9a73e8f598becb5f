"""Inference: checkpoints, per-file errors that never stop a batch, folders/CSVs, the command's exit status."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numpy as np
import pytest
import soundfile as sf
import torch

from bber_utils.predict import checkpoint

from bber_utils.predict import inputs

from bber_utils.predict import predictor
from bber_utils.core.labels import CLASSES
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
    pred = predictor.Predictor(_checkpoint(tmp_path / "best.pt"), device="cpu")
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
    pred = predictor.Predictor(_checkpoint(tmp_path / "best.pt"), device="cpu")
    out = pred.predict([_wav(tmp_path / "a.wav")])
    assert out[0].fused is None and "no transcript" in out[0].error and "--asr" in out[0].error


def test_audio_frames_are_pooled_as_in_training(tmp_path, monkeypatch):
    pred = predictor.Predictor(_checkpoint(tmp_path / "best.pt"), device="cpu")
    seen = []
    score = pred.backend.probabilities
    monkeypatch.setattr(pred.backend, "probabilities", lambda arrays: seen.append(arrays["audio"].shape) or score(arrays))
    pred.predict([_wav(tmp_path / "a.wav", seconds=1.0)], ["hello there"])
    assert pred.audio_pool == 4 and seen[0][1] == 13  # 50 log-mel frames per second, averaged in fours


def test_audio_only_checkpoint_needs_no_text(tmp_path):
    pred = predictor.Predictor(_checkpoint(tmp_path / "best.pt", "audio_only"), device="cpu")
    out = pred.predict([_wav(tmp_path / "a.wav")])
    assert out[0].error is None and out[0].audio == out[0].fused and out[0].text_probs is None


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path / "best.pt", d_audio=40)  # logmel gives 80-d frames
    with pytest.raises(checkpoint.CheckpointError, match="audio features of width 40"):
        predictor.Predictor(ckpt, device="cpu")
    state = torch.load(ckpt, weights_only=False)
    state["model_config"]["hidden_dim"] = 8
    torch.save(state, ckpt)
    with pytest.raises(checkpoint.CheckpointError, match="do not fit"):
        checkpoint.load_model(ckpt)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load_model(tmp_path / "junk.pt")


def test_missing_default_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="make reproduce"):
        checkpoint.find_checkpoint(None, workdir=tmp_path)


def test_folders_and_csvs_expand(tmp_path):
    (tmp_path / "clips").mkdir()
    _wav(tmp_path / "clips" / "b.wav")
    _wav(tmp_path / "clips" / "a.wav")
    (tmp_path / "clips" / "notes.txt").write_text("x")
    (tmp_path / "list.csv").write_text("path,text\nclips/a.wav,hello there\nclips/b.wav,\n")
    paths, texts = inputs.collect_inputs([tmp_path / "clips", tmp_path / "list.csv"])
    assert [p.split("/")[-1] for p in paths] == ["a.wav", "b.wav", "a.wav", "b.wav"]
    assert texts == [None, None, "hello there", None]
    with pytest.raises(ValueError, match="'path' column"):
        (tmp_path / "bad.csv").write_text("file\nx.wav\n")
        inputs.collect_inputs([tmp_path / "bad.csv"])


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


# ------------------------------------------------------------- every model `bber train` can produce predicts

TINY = dict(hidden_dim=8, num_heads=2, num_layers=1, mamba_layers=1, mamba_d_state=4, mamba_d_conv=2,
            bimamba_layers=1, gated_dim=8, out_features=8, dropout=0.1, graph_heads=1)
# The training options that change what the prediction path must feed the model.
OPTIONS = {"plain": {}, "context": {"text_context": 1}, "context_mean": {"text_context": 1,
                                                                         "text_context_mode": "mean"},
           "pool": {"audio_pool": 2}, "context2_pool": {"text_context": 2, "audio_pool": 2},
           "unfrozen": {"freeze_encoders": False, "ff_expansion": 2, "norm_first": True}}


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
    """One English corpus of dialogues (7 classes x 2 train, 1 dev, 1 test; 0.3 s tones), its log-mel and
    hashgram features extracted once for the whole matrix."""
    import pandas as pd

    from bber_utils.corpora.manifest import save_manifest
    from bber_utils.features.extract import extract_all

    root = tmp_path_factory.mktemp("predict_matrix")
    wd, wavs = root / "wd", root / "wavs"
    wavs.mkdir()
    for split, n in (("train", 2), ("dev", 1), ("test", 1)):
        rows = []
        for k, label in enumerate(CLASSES):
            for i in range(n):
                t = np.arange(int(16000 * 0.3)) / 16000
                wav = wavs / f"{split}-{k}-{i}.wav"
                sf.write(wav, (0.3 * np.sin(2 * np.pi * (150 + 60 * k) * t)).astype(np.float32), 16000)
                rows.append({"utt_id": f"demo_en-{split}-{k}_{i}", "corpus": "demo_en", "language": "en",
                             "split": split, "audio_path": str(wav), "start_s": 0.0, "end_s": np.nan,
                             "duration_s": 0.3, "text": f"{label} words {i}", "label": label, "source": "original",
                             "dialogue_id": f"{split}{i}", "utterance_id": k})
        save_manifest(pd.DataFrame(rows), wd / "manifests" / f"demo_en_{split}.parquet")
    extract_all(wd, audio_spec="logmel", text_spec="hashgram", text_max_tokens=8, progress=False)
    return wd


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("model", __import__("bber_utils.models", fromlist=["MODEL_NAMES"]).MODEL_NAMES)
def test_every_trainable_model_predicts(tiny_workdir, model, option, one_torch_thread, recwarn):
    """Each model x option trains (1 epoch, tiny) and predicts a clip without and with a previous turn; a model
    trained with text_context reads the turn (its text-branch output changes), another one warns it is unused."""
    from bber_utils.train import train

    res = train(dict(workdir=str(tiny_workdir), model=model, epochs=1, unimodal_epochs=1, batch_size=8, lr=3e-3,
                     device="cpu", progress=False, oof_folds=2, seed=1, audio_encoder="logmel",
                     text_encoder="hashgram", text_max_tokens=8, **TINY, **OPTIONS[option]))
    pred = predictor.Predictor(res.run_dir, device="cpu")
    clip = _wav(tiny_workdir.parent / "clip.wav", seconds=0.5, sr=16000)
    alone, with_turn = (pred.predict([clip], ["joy words 0"], contexts=c)[0] for c in (None, [["anger words 1"]]))
    for p in (alone, with_turn):
        assert p.error is None, p.error
        assert p.label in CLASSES and abs(sum(p.fused) - 1) < 1e-4
    reads_context = bool(OPTIONS[option].get("text_context")) and model != "audio_only"
    text_view = (lambda p: p.text_probs if p.text_probs is not None else p.fused)
    assert (text_view(alone) != text_view(with_turn)) == reads_context
    unused = [w for w in recwarn if "trained without dialogue context" in str(w.message)]
    assert bool(unused) == (not OPTIONS[option].get("text_context") and model != "audio_only")


# ------------------------------------------------------------------------- bad input: one line, exit 2

@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("extra, says", [
    (["--window", "nan"], "--window must be a finite number"),
    (["--window", "inf"], "--window must be a finite number"),
    (["--window", "0.5"], "--window must be a finite number"),
    (["--device", "gpu"], "device 'gpu' is not a device"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--device", "cuda:x"], "is not a device"),
    (["--checkpoint", "CONFIG"], "config.json: not a readable checkpoint (not a PyTorch checkpoint"),
    (["--checkpoint", "PICKLE"], "loading them could run code"),
])
def test_cli_bad_options_are_one_line(tmp_path, capsys, no_cuda, extra, says):
    from bber_utils.cli import main

    (tmp_path / "config.json").write_text('{"model": "biformer",\n "epochs": 3}\n')
    torch.save({"model": {}, "model_name": "biformer", "x": np.float64(1.0)}, tmp_path / "pickle.pt")
    swap = {"CONFIG": str(tmp_path / "config.json"), "PICKLE": str(tmp_path / "pickle.pt")}
    extra = [swap.get(a, a) for a in extra]
    ckpt = [] if "--checkpoint" in extra else ["--checkpoint", str(_checkpoint(tmp_path / "best.pt"))]
    code = main(["predict", str(_wav(tmp_path / "a.wav")), "--text", "hi", *ckpt, *extra])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    assert len(out.err.strip().splitlines()) == 1 and says in out.err, out.err


@pytest.mark.parametrize("what", ["empty folder", "empty path", "blank path", "empty csv", "bad context"])
def test_cli_inputs_that_name_no_clip_are_refused(tmp_path, capsys, monkeypatch, what):
    """An empty folder (or one of other files), ``""`` (used to scan the current folder), a CSV without rows and
    a malformed context cell: one line, exit 2 -- a usage error, before any model is loaded (exit 1 means that
    some clips could not be scored)."""
    from bber_utils.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    (tmp_path / "none.csv").write_text("path,text\n")
    (tmp_path / "bad.csv").write_text('path,text,context\na.wav,hi,"[1, 2]"\n')
    _wav(tmp_path / "a.wav")
    monkeypatch.chdir(tmp_path)  # "" used to mean the current folder, which holds a.wav
    arg, says = {"empty folder": (str(tmp_path / "empty"), "no audio files in this folder"),
                 "empty path": ("", "an empty path"), "blank path": ("  ", "an empty path"),
                 "empty csv": (str(tmp_path / "none.csv"), "no clips to score"),
                 "bad context": (str(tmp_path / "bad.csv"), "row 2: context")}[what]
    code = main(["predict", arg, "--checkpoint", str(_checkpoint(tmp_path / "best.pt"))])
    out = capsys.readouterr()
    assert code == 2 and out.out == "" and len(out.err.strip().splitlines()) == 1 and says in out.err, out.err


def test_csv_context_column_and_context_flag(tmp_path):
    (tmp_path / "list.csv").write_text('path,text,context\na.wav,hi,\nb.wav,ok,so tired\n'
                                       'c.wav,fine,"[""first turn"", ""second, turn""]"\nd.wav,no,[laughs]\n')
    paths, texts, contexts = inputs.collect_clips([tmp_path / "list.csv"])
    assert contexts == [[], ["so tired"], ["first turn", "second, turn"], ["[laughs]"]]
    assert texts == ["hi", "ok", "fine", "no"]
    args = __import__("bber_utils.cli", fromlist=["build_parser"]).build_parser().parse_args(
        ["predict", "x.wav", "--context", "one", "--context", "two", "--lang", "EN"])
    assert args.context == ["one", "two"] and args.lang == "en"
    for lang in ("auto", "en", "ru", "RU"):
        assert __import__("bber_utils.cli", fromlist=["build_parser"]).build_parser().parse_args(
            ["predict", "x.wav", "--lang", lang]).lang == lang.lower()
    with pytest.raises(SystemExit):
        __import__("bber_utils.cli", fromlist=["build_parser"]).build_parser().parse_args(
            ["predict", "x.wav", "--lang", "fr"])


@pytest.mark.parametrize("spec, says", [("gpu", "not a device"), ("cuda", "CUDA is not available"),
                                        ("cuda:1", "CUDA is not available"), ("meta", "not a device"),
                                        ("cpu:x", "not a device"), (3.5, "not a device")])
def test_device_specs_are_checked_in_one_line(no_cuda, spec, says):
    from bber_utils.core.device import resolve_device
    from bber_utils.core.errors import ConfigError

    with pytest.raises(ConfigError, match=says) as err:
        resolve_device(spec)
    assert "\n" not in str(err.value)
    assert resolve_device("cpu").type == resolve_device("auto").type == resolve_device(None).type == "cpu"


def test_every_command_taking_a_device_refuses_a_bad_one_in_one_line(tmp_path, tiny_workdir, capsys, no_cuda):
    from bber_utils.cli import main

    for argv in (["extract", "--workdir", str(tmp_path), "--device", "gpu"],
                 ["train", f"workdir={tmp_path}", "device=gpu"],
                 ["train", f"workdir={tmp_path}", "feature_device=cuda"],
                 ["label", "--workdir", str(tiny_workdir), "--backend", "transformers", "--model", str(tmp_path),
                  "--device", "gpu"]):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and ("not a device" in err or "CUDA" in err), (argv, err)


def test_a_checkpoint_may_store_exactly_what_the_trainer_writes():
    from bber_utils.train import TrainConfig, feature_spec

    every = TrainConfig(audio_norm="speaker", text_context_speaker=True)  # later keys are stored only when set
    assert set(checkpoint.STORED_SETTINGS) == set(feature_spec(every)) > set(feature_spec(TrainConfig()))
    assert checkpoint.stored_settings({"features": feature_spec(TrainConfig())}, "x.pt")["text_encoder"] == "e5-words"


def test_manifest_contexts_are_the_previous_turns_of_the_same_dialogue():
    import pandas as pd

    df = pd.DataFrame({"utt_id": ["a", "b", "c", "d"], "corpus": "c", "split": "test", "source": "original",
                       "text": ["one", "two", "three", "other"], "dialogue_id": ["1", "1", "1", "2"],
                       "utterance_id": [0, 1, 2, 0]})
    assert inputs.manifest_contexts(df, 1) == [[], ["one"], ["two"], []]
    assert inputs.manifest_contexts(df, 2)[2] == ["one", "two"] and inputs.manifest_contexts(df, 0) == [[]] * 4


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"),
                              max_size=12), max_size=3))
def test_csv_context_cells_read_back_what_was_written(tmp_path, turns):
    import pandas as pd

    one = turns[0] if turns else ""
    pd.DataFrame({"path": ["a.wav", "b.wav"], "text": ["x", "y"],
                  "context": [json.dumps(turns, ensure_ascii=False), one]}).to_csv(tmp_path / "c.csv", index=False)
    _, _, contexts = inputs.collect_clips([tmp_path / "c.csv"])
    assert contexts[0] == turns
    try:
        as_list = json.loads(one)
    except ValueError:
        as_list = None
    assert contexts[1] == ([] if not one.strip() else as_list if isinstance(as_list, list) else [one])
