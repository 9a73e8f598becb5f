"""Transformers encoders, tested with tiny randomly initialised models saved to a folder and loaded by path:
the code path a real run takes with the paper's wav2vec2 and jina-v3 checkpoints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bber_utils.features import build_audio_encoder, build_text_encoder, ensure_features
from bber_utils.features.store import store_dir_name

SENTENCES = ["I am so happy to see you!", "Why did you do that?", "This is terrible, I hate it.",
             "Я так рад тебя видеть!", "Почему ты это сделал?", "Это ужасно, я ненавижу это."]


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    import torch

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    path = tmp_path_factory.mktemp("tiny_wav2vec2")
    Wav2Vec2Model(cfg).eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    import torch

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[
        ("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    torch.manual_seed(0)
    cfg = XLMRobertaConfig(vocab_size=fast.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130, pad_token_id=1)
    path = tmp_path_factory.mktemp("tiny_xlmr")
    XLMRobertaModel(cfg).eval().save_pretrained(path)
    fast.save_pretrained(path)
    return path


def _wavs(*seconds):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(int(s * 16000)) * 0.1).astype(np.float32) for s in seconds]


def test_audio_model_frames_follow_wav2vec2_geometry(tiny_wav2vec2):
    enc = build_audio_encoder(str(tiny_wav2vec2))
    wavs = _wavs(1.0, 0.3, 0.01)  # the last one is a 10 ms clip
    feats = enc.encode(wavs)
    assert enc.dim == 32
    assert [f.shape for f in feats] == [(49, 32), (14, 32), (1, 32)]
    assert all(f.dtype == np.float32 and np.isfinite(f).all() for f in feats)


def test_audio_model_output_does_not_depend_on_the_batch(tiny_wav2vec2):
    """Reference bug 3: features depended on which utterances shared the batch."""
    enc = build_audio_encoder(str(tiny_wav2vec2))
    wavs = _wavs(1.2, 0.4)
    together = enc.encode(wavs)
    alone = [enc.encode([w])[0] for w in wavs]
    for a, b in zip(together, alone):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_audio_model_layer_choice_and_key(tiny_wav2vec2):
    last = build_audio_encoder(str(tiny_wav2vec2))
    first = build_audio_encoder(str(tiny_wav2vec2), layer=1)
    wav = _wavs(0.5)
    assert first.encode(wav)[0].shape == last.encode(wav)[0].shape
    assert not np.allclose(first.encode(wav)[0], last.encode(wav)[0])
    assert last.key["content_hash"] and last.key["layer"] is None and first.key["layer"] == 1
    assert last.key != first.key


def test_local_model_key_changes_with_the_weights(tiny_wav2vec2, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_wav2vec2, copy)
    same = build_audio_encoder(str(copy)).key
    original = build_audio_encoder(str(tiny_wav2vec2)).key
    assert store_dir_name("audio", same).split("-")[-1] == store_dir_name("audio", original).split("-")[-1]
    weights = next(copy.glob("*.safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    assert build_audio_encoder(str(copy)).key["content_hash"] != same["content_hash"]


def test_text_model_tokens_truncation_and_empty_text(tiny_xlmr):
    enc = build_text_encoder(str(tiny_xlmr), max_tokens=8)
    long_text = " ".join(["happy"] * 50)
    feats = enc.encode(["I am so happy", "Я так рад", "", long_text])
    assert enc.dim == 32
    assert feats[0].shape == (6, 32)  # <s> I am so happy </s>
    assert feats[1].shape == (5, 32)
    assert feats[2].shape[0] >= 1  # an empty transcript still gives a token
    assert feats[3].shape == (8, 32)  # cut to max_tokens
    alone = enc.encode(["Я так рад"])[0]
    np.testing.assert_allclose(alone, feats[1], atol=1e-5)  # padding does not leak into the tokens


def test_text_model_layer_option(tiny_xlmr):
    a = build_text_encoder(str(tiny_xlmr), layer=1).encode(["Why did you do that?"])[0]
    b = build_text_encoder(str(tiny_xlmr)).encode(["Why did you do that?"])[0]
    assert a.shape == b.shape and not np.allclose(a, b)


def test_warm_store_never_loads_the_model(tiny_xlmr, tmp_path):
    df = pd.DataFrame({"utt_id": [f"u{i}" for i in range(len(SENTENCES))], "text": SENTENCES})
    first = build_text_encoder(str(tiny_xlmr), max_tokens=16)
    store = ensure_features(df, "text", first, tmp_path, batch_size=4, device="cpu", progress=False)
    assert first._model is not None and store.stats["extracted"] == len(df)
    again = build_text_encoder(str(tiny_xlmr), max_tokens=16)
    warm = ensure_features(df, "text", again, tmp_path, batch_size=4, device="cpu", progress=False)
    assert again._model is None and warm.stats["cached"] == len(df)
    np.testing.assert_array_equal(warm["u3"], store["u3"])
    other = build_text_encoder(str(tiny_xlmr), max_tokens=4)  # another setting: another store folder
    assert ensure_features(df, "text", other, tmp_path, device="cpu", progress=False).path != store.path


@pytest.fixture(scope="module")
def tiny_whisper_encoder(tmp_path_factory):
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=32)
    path = tmp_path_factory.mktemp("tiny_whisper_encoder")
    WhisperModel(cfg).eval().save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def test_whisper_encoder_as_audio_encoder(tiny_whisper_encoder):
    enc = build_audio_encoder(str(tiny_whisper_encoder))
    wavs = _wavs(1.0, 0.01)
    feats = enc.encode(wavs)
    # 50 frames/s, cut to the clip (the 10 ms clip is first padded to 400 samples: 2 frames)
    assert enc.dim == 16 and [f.shape for f in feats] == [(50, 16), (2, 16)]
    np.testing.assert_allclose(enc.encode([wavs[0]])[0], feats[0], atol=1e-5)
