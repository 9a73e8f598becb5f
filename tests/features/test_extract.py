"""extract_all over a work folder's manifests, ASR write-back, and the `bber extract` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bber_utils.core.audio import write_wav
from bber_utils.corpora.manifest import load_manifest, save_manifest
from bber_utils.features import extract_all
from bber_utils.core.paths import run_dirs


def _workdir(tmp_path, with_text=True):
    dirs = run_dirs(tmp_path / "wd")
    rng = np.random.default_rng(0)
    for corpus, lang, texts in [("demo_en", "en", ["I am so happy!", "Leave me alone."]),
                                ("demo_ru", "ru", ["Я так рад!", "" if not with_text else "Оставь меня."])]:
        rows = []
        for i, t in enumerate(texts):
            p = write_wav(dirs.data / corpus / f"{i}.wav", (rng.standard_normal(4000 + 2000 * i) * 0.1).astype("f4"))
            rows.append({"utt_id": f"{corpus}-train-{i}", "corpus": corpus, "language": lang, "split": "train",
                         "audio_path": str(p), "start_s": 0.0, "end_s": np.nan, "duration_s": 0.25 + 0.125 * i,
                         "text": t, "label": ["happy", "anger"][i], "source": "original"})
        save_manifest(pd.DataFrame(rows), dirs.manifest(corpus, "train"))
    return dirs


def test_extract_all_covers_every_manifest_and_then_only_loads(tmp_path):
    dirs = _workdir(tmp_path)
    first = extract_all(dirs.root, "logmel", "hashgram", progress=False)
    assert list(first.summary.manifest) == ["demo_en_train", "demo_ru_train"]
    assert first.summary[["audio_extracted", "text_extracted"]].to_numpy().sum() == 8
    assert first.audio.dim == 80 and first.text.dim == 256 and len(first.audio) == len(first.text) == 4
    assert first.audio.path.parent == dirs.features
    shapes = first.shapes()
    assert shapes.loc[shapes.utt_id == "demo_ru-train-0", "text (T, D)"].item() == (4, 256)  # я так рад !
    again = extract_all(dirs.root, "logmel", "hashgram", progress=False)
    assert again.summary[["audio_extracted", "text_extracted"]].to_numpy().sum() == 0
    assert again.summary[["audio_cached", "text_cached"]].to_numpy().sum() == 8


def test_extra_manifests_are_included(tmp_path):
    dirs = _workdir(tmp_path)
    extra = load_manifest(dirs.manifest("demo_en", "train")).assign(
        utt_id=lambda d: d.utt_id + "-sds", source="sds")
    path = save_manifest(extra, dirs.sds / "demo_en_train_sds.parquet")
    out = extract_all(dirs.root, "logmel", "hashgram", extra_manifests=[path], progress=False)
    assert "demo_en_train_sds" in set(out.summary.manifest) and "demo_en-train-1-sds" in out.audio


def test_asr_fills_missing_text_and_the_manifest_is_saved(tmp_path, monkeypatch):
    dirs = _workdir(tmp_path, with_text=False)

    class Echo:
        key, uses_torch = {"backend": "echo", "model": "echo"}, False

        def transcribe(self, wavs):
            return [("оставь меня", "ru") for _ in wavs]

    import bber_utils.features.extract as asr_module  # extract_all calls build_asr by this module's name

    monkeypatch.setattr(asr_module, "build_asr", lambda spec, **kw: Echo() if spec else None)
    out = extract_all(dirs.root, "logmel", "hashgram", asr_model="echo", progress=False)
    assert out.summary.set_index("manifest").loc["demo_ru_train", "asr_filled"] == 1
    saved = load_manifest(dirs.manifest("demo_ru", "train"))
    assert saved.text[1] == "оставь меня" and saved.text_source[1] == "asr" and saved.asr_language[1] == "ru"
    assert out.text.length("demo_ru-train-1") == 2


def test_missing_text_without_asr_is_reported(tmp_path):
    dirs = _workdir(tmp_path, with_text=False)
    with pytest.warns(UserWarning, match="demo_ru_train: 1 utterance"):
        out = extract_all(dirs.root, "logmel", "hashgram", progress=False)
    assert out.summary.set_index("manifest").loc["demo_ru_train", "text_missing"] == 1
    assert out.text.length("demo_ru-train-1") == 1  # one step for the empty text


def test_no_manifests_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebook 01"):
        extract_all(tmp_path / "empty", progress=False)


def test_bber_extract_command(tmp_path, capsys):
    from bber_utils.cli import main

    dirs = _workdir(tmp_path)
    assert main(["extract", "--workdir", str(dirs.root), "--text-encoder", "hashgram", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "demo_ru_train" in out and "audio-logmel-" in out


def test_encoders_from_profile_parameters(tmp_path):
    from bber_utils.train.profiles import load_profile
    from bber_utils.features import encoders_from_params

    audio, text = encoders_from_params(load_profile("smoke"))
    assert audio.key["name"] == "logmel" and text.key["name"] == "e5-words" and text.max_tokens == 95
    audio, text = encoders_from_params({"text_encoder": "hashgram", "text_max_tokens": 7})
    assert audio.key["name"] == "logmel" and text.key["max_tokens"] == 7
    with pytest.raises(ValueError, match="no layers"):
        encoders_from_params({"audio_encoder": "logmel", "audio_layer": 3})


def test_paper_profile_names_the_papers_encoders_without_loading_them(monkeypatch):
    from bber_utils.train.profiles import load_profile
    from bber_utils.features import encoders_from_params

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    audio, text = encoders_from_params(load_profile("paper"))
    assert audio.key["model"] == "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim" and audio._model is None
    assert text.key["model"] == "jinaai/jina-embeddings-v3" and text.trust_remote_code and text._model is None
    assert text.key["max_tokens"] == 95 and text.key["code_revision"] == "da863dd04a4e5dce6814c6625adfba87b83838aa"


def test_extract_in_a_read_only_workdir_reads_finished_work_and_refuses_new_work(tmp_path, read_only, capsys):
    """Extraction ended in an OSError traceback in a read-only folder, even with nothing to do."""
    from bber_utils import cli

    dirs = _workdir(tmp_path)
    extract_all(dirs.root, "logmel", "hashgram", progress=False)
    before = read_only.snapshot(dirs.root)
    read_only(dirs.root)
    argv = ["extract", "--workdir", str(dirs.root), "--text-encoder", "hashgram", "--quiet"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "text_cached" in capsys.readouterr().out and read_only.snapshot(dirs.root) == before
    rc = cli.main([*argv, "--fp16"])  # another store key: everything is missing
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot write to {dirs.features}" in err and ": read-only (Permission denied);" in err, err
    assert read_only.snapshot(dirs.root) == before
