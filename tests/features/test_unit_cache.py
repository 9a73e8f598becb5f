"""The e5 word vectors kept on disk beside their store (``bber_utils/features/unit_cache.py``): a later process
embeds no word again and gets the same features bit for bit; a damaged cache file is left out with a warning."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bber_utils.features import text_encoders, unit_cache
from bber_utils.features.store import ensure_features
from bber_utils.features.text_encoders import E5WordsEncoder

TEXTS = ["I am so happy today", "Why would you do that?!", "Я сегодня очень счастлив", "so happy"]


def _new_process(monkeypatch):
    """What a new process starts with: no word vectors in memory, no cache file read."""
    monkeypatch.setattr(text_encoders, "_E5_WORDS", {})
    monkeypatch.setattr(text_encoders, "_E5_SENTENCES", {})
    monkeypatch.setattr(unit_cache, "_READ", {})


def _count_passages(monkeypatch) -> list:
    calls = []
    model = text_encoders.load_e5()
    real = type(model).passage
    monkeypatch.setattr(type(model), "passage", lambda self, texts: calls.append(list(texts)) or real(self, texts))
    return calls


def _manifest(texts):
    return pd.DataFrame({"utt_id": [f"u{i}" for i in range(len(texts))], "text": texts})


def test_a_later_process_embeds_no_word_again_and_gets_the_same_features(tmp_path, monkeypatch):
    _new_process(monkeypatch)
    calls = _count_passages(monkeypatch)
    first = ensure_features(_manifest(TEXTS[:2]), "text", E5WordsEncoder(), tmp_path, progress=False,
                            batch_size=1)
    assert len(list((first.path / "units").glob("units-*.npz"))) == 1  # one file per extraction, not per batch
    embedded_first = {w for c in calls for w in c}
    fresh = {u: first[u] for u in first.utt_ids}

    _new_process(monkeypatch)
    calls.clear()
    later = ensure_features(_manifest(TEXTS), "text", E5WordsEncoder(), tmp_path, progress=False)
    embedded = [w for c in calls for w in c]
    words = {w for t in TEXTS[2:] for w in text_encoders.words(t)}
    # only the new texts' sentences and the words no earlier process embedded
    assert not set(embedded) & (embedded_first - set(TEXTS))
    assert set(embedded) == set(TEXTS[2:]) | (words - embedded_first)
    assert all(np.array_equal(later[u], fresh[u]) for u in fresh)

    _new_process(monkeypatch)  # the same features as a process without any cache file
    monkeypatch.setattr(unit_cache, "load_units", lambda *a, **k: 0)
    alone = E5WordsEncoder().encode(TEXTS)
    assert all(np.array_equal(a, later[f"u{i}"]) for i, a in enumerate(alone))


def test_a_damaged_cache_file_is_left_out_with_one_warning(tmp_path, monkeypatch):
    _new_process(monkeypatch)
    folder = tmp_path / "units"
    unit_cache.save_units(folder, ["happy", "sad"], [np.ones(384, np.float32), np.zeros(384, np.float32)])
    good = next(folder.glob("*.npz"))
    (folder / "units-1-truncated.npz").write_bytes(good.read_bytes()[:50])
    np.savez(folder / "units-2-wrongdim.npz", units=np.array(["x"]), vectors=np.ones((1, 5), np.float32))
    np.savez(folder / "units-3-nan.npz", units=np.array(["y"]), vectors=np.full((1, 384), np.nan, np.float32))
    monkeypatch.setattr(unit_cache, "_READ", {})
    into = {}
    with pytest.warns(UserWarning, match="left out") as record:
        assert unit_cache.load_units(folder, 384, into) == 2
    ours = [str(w.message) for w in record if "left out" in str(w.message)]
    assert sorted(into) == ["happy", "sad"] and len(ours) == 3
    assert all(str(folder) in m for m in ours)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=600))
def test_any_bytes_as_a_cache_file_never_raise(tmp_path_factory, blob):
    folder = tmp_path_factory.mktemp("units")
    (folder / "units-0-any.npz").write_bytes(blob)
    into = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unit_cache.load_units(folder, 384, into)
    assert all(v.shape == (384,) and v.dtype == np.float32 for v in into.values())


def test_a_cache_that_cannot_be_written_is_one_warning(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(unit_cache, "atomic_write", fail)
    with pytest.warns(UserWarning, match="not written"):
        assert unit_cache.save_units(tmp_path, ["a"], [np.ones(384, np.float32)]) is None
