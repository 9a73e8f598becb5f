"""ASR: Whisper through transformers (a tiny random model saved to a folder and loaded by path), the
faster-whisper backend, and ``fill_missing_text``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bber_utils.core.audio import write_wav
from bber_utils.features.asr import FasterWhisperASR, TransformersWhisperASR, build_asr, fill_missing_text

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|ru|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A 1-layer Whisper whose decoder always prefers the letter "h" and, among languages, English:
    its output is predictable, so the test can check the transcript and the detected language."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}  # byte-level, no merges
    tok = WhisperTokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    eos = ids["<|endoftext|>"]
    cfg = WhisperConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500, max_target_positions=448,
                        pad_token_id=eos, bos_token_id=eos, eos_token_id=eos,
                        decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # constant decoder output b, so logits = W @ b: "h" > <|en|> > <|ru|> > rest (0)
        norm = model.model.decoder.layer_norm
        norm.weight.zero_()
        norm.bias.copy_(torch.randn(32))
        b = norm.bias / norm.bias.norm()
        w = model.proj_out.weight
        w.zero_()
        w[tok.convert_tokens_to_ids("h")] = 3 * b
        w[ids["<|en|>"]] = 2 * b
        w[ids["<|ru|>"]] = 1 * b
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=eos, pad_token_id=eos, bos_token_id=eos,
        is_multilingual=True, lang_to_id={"<|en|>": ids["<|en|>"], "<|ru|>": ids["<|ru|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], max_length=448, suppress_tokens=[], begin_suppress_tokens=[])
    path = tmp_path_factory.mktemp("tiny_whisper")
    model.save_pretrained(path)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok).save_pretrained(path)
    return path


def _manifest(tmp_path, texts):
    rng = np.random.default_rng(0)
    rows = []
    for i, t in enumerate(texts):
        p = write_wav(tmp_path / f"{i}.wav", (rng.standard_normal(8000) * 0.1).astype("f4"))
        rows.append({"utt_id": f"resd-train-{i}", "audio_path": str(p), "start_s": 0.0, "end_s": np.nan,
                     "duration_s": 0.5, "text": t, "language": "ru"})
    return pd.DataFrame(rows)


def test_transformers_whisper_transcribes_and_detects_language(tiny_whisper):
    asr = build_asr(str(tiny_whisper), max_new_tokens=5)
    assert isinstance(asr, TransformersWhisperASR) and asr.key["content_hash"]
    out = asr.transcribe([np.zeros(8000, np.float32), (np.random.default_rng(1).standard_normal(20000) * 0.1)
                          .astype(np.float32)])
    assert out == [("hhhhh", "en"), ("hhhhh", "en")]
    forced = build_asr(str(tiny_whisper), max_new_tokens=3, language="ru")
    assert forced.transcribe([np.zeros(8000, np.float32)]) == [("hhh", "ru")]


def test_fill_missing_text_fills_only_empty_rows_and_caches(tiny_whisper, tmp_path):
    df = _manifest(tmp_path, ["Я очень рад.", "", "  "])
    asr = build_asr(str(tiny_whisper), max_new_tokens=4)
    cache = tmp_path / "asr.parquet"
    filled = fill_missing_text(df, asr, cache_path=cache, progress=False)
    assert list(filled.text) == ["Я очень рад.", "hhhh", "hhhh"]
    assert list(filled.text_source) == ["original", "asr", "asr"]
    assert list(filled.asr_language) == ["", "en", "en"] and list(filled.language) == ["ru"] * 3
    assert filled.attrs["asr_stats"]["transcribed"] == 2
    assert list(df.text) == ["Я очень рад.", "", "  "]  # the input manifest is not changed

    class Forbidden:
        key, uses_torch = asr.key, False

        def transcribe(self, wavs):
            raise AssertionError("a cached transcript was recomputed")

    again = fill_missing_text(df, Forbidden(), cache_path=cache, progress=False)
    assert list(again.text) == list(filled.text) and again.attrs["asr_stats"]["cached"] == 2


def test_fill_missing_text_without_asr_or_with_bad_audio(tmp_path):
    df = _manifest(tmp_path, ["hello", ""])
    with pytest.warns(UserWarning, match="1 utterance"):
        kept = fill_missing_text(df, None)
    assert list(kept.text) == ["hello", ""] and list(kept.text_source) == ["original", "missing"]
    df.loc[1, "audio_path"] = str(tmp_path / "gone.wav")

    class Echo:
        key, uses_torch = {"backend": "echo"}, False

        def transcribe(self, wavs):
            return [("x", "en") for _ in wavs]

    with pytest.warns(UserWarning, match="ASR skipped 1"):
        out = fill_missing_text(df, Echo(), progress=False)
    assert out.text_source[1] == "missing" and out.text[1] == ""


def test_build_asr_picks_the_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id is only named here, never resolved
    assert build_asr(None) is None and build_asr("none") is None
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"\0")
    (ct2 / "config.json").write_text(json.dumps({}))
    assert isinstance(build_asr(str(ct2)), FasterWhisperASR)
    assert isinstance(build_asr("faster-whisper:tiny"), FasterWhisperASR)
    hub = build_asr("openai/whisper-base")
    assert isinstance(hub, TransformersWhisperASR) and hub._model is None  # loaded lazily
    assert hub.key["model"] == "openai/whisper-base" and hub.key["revision"] == "main"


def test_faster_whisper_backend_runs_a_converted_model(tiny_whisper, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    out = tmp_path / "ct2"
    try:
        ctranslate2.converters.TransformersConverter(str(tiny_whisper)).convert(str(out), quantization="int8")
    except Exception as exc:  # the converter lags behind new transformers releases
        pytest.skip(f"ctranslate2 cannot convert the tiny Whisper here: {exc}")
    import shutil

    shutil.copyfile(tiny_whisper / "tokenizer.json", out / "tokenizer.json")
    asr = build_asr(str(out), max_new_tokens=6)
    assert isinstance(asr, FasterWhisperASR)
    (text, lang), = asr.transcribe([np.zeros(16000, np.float32)])
    assert lang == "en" and isinstance(text, str)  # int8 weights: the letters may differ


def test_interrupted_asr_keeps_what_it_transcribed(tmp_path):
    df = _manifest(tmp_path, ["", "", ""])

    class Flaky:
        key, uses_torch, calls = {"backend": "flaky"}, False, 0

        def transcribe(self, wavs):
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise RuntimeError("killed")
            return [("ok", "en") for _ in wavs]

    cache = tmp_path / "asr.parquet"
    with pytest.raises(RuntimeError, match="killed"):
        fill_missing_text(df, Flaky(), cache_path=cache, batch_size=1, progress=False)
    assert len(pd.read_parquet(cache)) == 2
    out = fill_missing_text(df, Flaky(), cache_path=cache, batch_size=1, progress=False)
    assert out.attrs["asr_stats"]["cached"] == 2 and out.attrs["asr_stats"]["transcribed"] == 1
    assert list(out.text) == ["ok"] * 3
