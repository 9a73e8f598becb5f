"""Audio features normalised per speaker or per utterance (``audio_norm``, ``features.normalise``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bber_utils.features.normalise import NormalisedAudioStore, speaker_groups, with_audio_norm


class S(dict):
    dim, path = 2, "audio-store"


def _store():
    rng = np.random.default_rng(0)
    return S({"a1": rng.normal(10, 2, (5, 2)).astype(np.float32), "a2": rng.normal(12, 2, (3, 2)).astype(np.float32),
              "b1": rng.normal(-4, 1, (4, 2)).astype(np.float32)})


def _manifest():
    return pd.DataFrame({"utt_id": ["a1", "a2", "b1"], "corpus": "pl", "speaker": ["m2", "m2", "m3"]})


def test_speaker_norm_uses_every_frame_of_the_speaker_and_keeps_differences_between_their_utterances():
    store = _store()
    norm = with_audio_norm(store, "speaker", _manifest())
    frames = np.concatenate([norm["a1"], norm["a2"]])
    assert frames.mean(0) == pytest.approx([0, 0], abs=1e-5) and frames.std(0) == pytest.approx([1, 1], abs=1e-3)
    assert norm["b1"].mean(0) == pytest.approx([0, 0], abs=1e-5)
    assert norm["a2"].mean() > norm["a1"].mean()  # a louder utterance of a speaker stays louder
    assert norm.dim == 2 and str(norm.path).endswith("+norm-speaker") and "a1" in norm


def test_utterance_norm_and_none():
    store = _store()
    assert with_audio_norm(store, "none", _manifest()) is store
    x = with_audio_norm(store, "utterance", _manifest())["a2"]
    assert x.mean(0) == pytest.approx([0, 0], abs=1e-5)
    with pytest.raises(ValueError, match="audio_norm must be one of"):
        NormalisedAudioStore(store, "corpus")


def test_rows_without_a_speaker_are_grouped_by_corpus():
    df = pd.DataFrame({"utt_id": ["x", "y", "z"], "corpus": ["c", "c", "d"], "speaker": ["", None, "s"]})
    assert speaker_groups(df) == {"x": "corpus:c", "y": "corpus:c", "z": "d:s"}
    assert speaker_groups(df.drop(columns="speaker")) == {"x": "corpus:c", "y": "corpus:c", "z": "corpus:d"}
