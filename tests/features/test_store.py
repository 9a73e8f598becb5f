"""The keyed feature store: round trip, keys, changed inputs, resume after a crash, bad inputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from bber_utils.features import store as store_mod
import json
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bber_utils.core.audio import write_wav
from bber_utils.features import FeatureError, FeatureStore, build_audio_encoder, ensure_features
from bber_utils.features.store import store_dir_name


def _manifest(tmp_path, seconds=(0.5, 0.3, 1.0, 0.2, 0.7, 0.4), texts=None):
    rows = []
    rng = np.random.default_rng(0)
    for i, s in enumerate(seconds):
        path = write_wav(tmp_path / "wav" / f"{i}.wav", (rng.standard_normal(int(s * 16000)) * 0.1).astype("f4"))
        rows.append({"utt_id": f"demo_en-train-{i}", "audio_path": str(path), "start_s": 0.0, "end_s": np.nan,
                     "duration_s": s, "text": (texts or ["hello"] * len(seconds))[i], "label": "happy"})
    return pd.DataFrame(rows)


class CountingEncoder:
    """Wraps an encoder; counts utterances encoded and can fail after ``fail_after`` batches."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.fail_after, self.batches, self.utterances = inner, fail_after, 0, 0
        self.modality, self.dim, self.key, self.uses_torch = inner.modality, inner.dim, inner.key, False

    def encode(self, batch):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.batches += 1
        self.utterances += len(batch)
        return self.inner.encode(batch)


def test_round_trip_shapes_and_warm_store(tmp_path):
    df = _manifest(tmp_path)
    enc = CountingEncoder(build_audio_encoder("logmel"))
    store = ensure_features(df, "audio", enc, tmp_path / "store", batch_size=4, progress=False)
    assert isinstance(store, FeatureStore) and store.dim == 80 and len(store) == len(df)
    assert store.stats["extracted"] == len(df) and store.stats["cached"] == 0
    x = store["demo_en-train-2"]
    assert x.dtype == np.float32 and x.shape == ((16000 - 400) // 320 + 1, 80)
    np.testing.assert_array_equal(x, enc.inner.frames(sf.read(df.audio_path[2], dtype="float32")[0]))
    again = ensure_features(df, "audio", enc, tmp_path / "store", batch_size=4, progress=False)
    assert enc.utterances == len(df)  # nothing recomputed
    assert again.stats["cached"] == len(df) and "demo_en-train-0" in again and "nope" not in again
    with pytest.raises(KeyError, match="nope"):
        again["nope"]


def test_key_holds_every_setting_and_names_the_folder(tmp_path):
    df = _manifest(tmp_path, seconds=(0.3,))
    a = ensure_features(df, "audio", build_audio_encoder("logmel"), tmp_path / "s", progress=False)
    b = ensure_features(df, "audio", build_audio_encoder("logmel", n_mels=64), tmp_path / "s", progress=False)
    c = ensure_features(df, "audio", build_audio_encoder("logmel"), tmp_path / "s", store_dtype="float16",
                        progress=False)
    assert len({a.path, b.path, c.path}) == 3 and b.dim == 64
    saved = json.loads((a.path / "key.json").read_text())
    assert saved["key"]["n_mels"] == 80 and saved["key"]["hop"] == 320 and saved["key"]["sample_rate"] == 16000
    assert a.path.name == store_dir_name("audio", a.key)
    assert c["demo_en-train-0"].dtype == np.float32  # fp16 on disk, float32 out
    np.testing.assert_allclose(c["demo_en-train-0"], a["demo_en-train-0"], rtol=2e-3, atol=2e-3)


def test_changed_audio_file_is_re_extracted(tmp_path):
    df = _manifest(tmp_path)
    enc = CountingEncoder(build_audio_encoder("logmel"))
    before = ensure_features(df, "audio", enc, tmp_path / "s", progress=False)["demo_en-train-1"]
    write_wav(df.audio_path[1], np.full(8000, 0.3, dtype="f4"))  # same utt_id, new content
    after = ensure_features(df, "audio", enc, tmp_path / "s", progress=False)
    assert enc.utterances == len(df) + 1 and after.stats["extracted"] == 1
    assert after["demo_en-train-1"].shape != before.shape
    spans = df.copy()
    spans.loc[0, "end_s"] = 0.25  # same file, another span: another input
    ensure_features(spans, "audio", enc, tmp_path / "s", progress=False)
    assert enc.utterances == len(df) + 2


def test_changed_text_is_re_extracted(tmp_path):
    from bber_utils.features import build_text_encoder

    df = _manifest(tmp_path, seconds=(0.1, 0.1), texts=["good day", "bad day"])
    enc = CountingEncoder(build_text_encoder("hashgram"))
    ensure_features(df, "text", enc, tmp_path / "s", progress=False)
    df.loc[1, "text"] = "a very bad day"
    store = ensure_features(df, "text", enc, tmp_path / "s", progress=False)
    assert enc.utterances == 3 and store["demo_en-train-1"].shape == (4, 256)


def test_killed_extraction_resumes_where_it_stopped(tmp_path):
    df = _manifest(tmp_path, seconds=[0.2 + 0.05 * i for i in range(10)])
    crashing = CountingEncoder(build_audio_encoder("logmel"), fail_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_features(df, "audio", crashing, tmp_path / "s", batch_size=3, flush_every=1, progress=False)
    assert crashing.utterances == 6
    resumed = CountingEncoder(build_audio_encoder("logmel"))
    store = ensure_features(df, "audio", resumed, tmp_path / "s", batch_size=3, progress=False)
    assert resumed.utterances == 4 and store.stats["cached"] == 6 and len(store) == 10
    fresh = ensure_features(df, "audio", build_audio_encoder("logmel"), tmp_path / "fresh", progress=False)
    for u in df.utt_id:
        np.testing.assert_array_equal(store[u], fresh[u])


def test_shards_are_plain_numpy_without_pickles(tmp_path):
    df = _manifest(tmp_path, seconds=(0.3, 0.4))
    store = ensure_features(df, "audio", build_audio_encoder("logmel"), tmp_path / "s", progress=False)
    shards = list((store.path / "shards").glob("*.npy"))
    assert shards and all(np.load(p, allow_pickle=False).dtype == np.float32 for p in shards)
    index = pd.read_parquet(store.path / "index.parquet")
    assert list(index.columns[:5]) == ["utt_id", "shard", "offset", "length", "content_hash"]
    reopened = FeatureStore(store.path)  # a store opens by its folder alone, e.g. on another machine
    np.testing.assert_array_equal(reopened["demo_en-train-1"], store["demo_en-train-1"])


def test_empty_and_tiny_clips_give_one_frame(tmp_path):
    df = _manifest(tmp_path, seconds=(0.01, 0.3))
    empty = tmp_path / "wav" / "empty.wav"
    sf.write(empty, np.zeros(0, dtype="f4"), 16000)
    df = pd.concat([df, df.iloc[[0]].assign(utt_id="demo_en-train-empty", audio_path=str(empty))],
                   ignore_index=True)
    store = ensure_features(df, "audio", build_audio_encoder("logmel"), tmp_path / "s", progress=False)
    assert store["demo_en-train-0"].shape == (1, 80)
    assert store["demo_en-train-empty"].shape == (1, 80)


def test_nan_audio_and_missing_files_are_counted_skips_or_named_errors(tmp_path):
    df = _manifest(tmp_path, seconds=(0.3, 0.3, 0.3))
    bad = np.full(4800, 0.1, dtype="f4")
    bad[100] = np.nan
    sf.write(df.audio_path[1], bad, 16000, subtype="FLOAT")
    df.loc[2, "audio_path"] = str(tmp_path / "wav" / "missing.wav")
    with pytest.warns(UserWarning, match="2 utterance"):
        store = ensure_features(df, "audio", build_audio_encoder("logmel"), tmp_path / "s", progress=False)
    assert store.stats["skipped"] == 2 and len(store) == 1
    assert set(store.skipped.utt_id) == {"demo_en-train-1", "demo_en-train-2"}
    assert store.skipped.reason.str.contains("NaN").any()
    with pytest.raises(FeatureError, match="demo_en-train-1"):
        ensure_features(df.iloc[:2], "audio", build_audio_encoder("logmel"), tmp_path / "s2", on_error="raise",
                        progress=False)


def test_bad_arguments_are_named(tmp_path):
    df = _manifest(tmp_path, seconds=(0.3,))
    with pytest.raises(ValueError, match="modality"):
        ensure_features(df, "video", build_audio_encoder("logmel"), tmp_path)
    with pytest.raises(ValueError, match="text encoder cannot|audio encoder cannot"):
        ensure_features(df, "text", build_audio_encoder("logmel"), tmp_path)
    with pytest.raises(ValueError, match="duplicate utt_id"):
        ensure_features(pd.concat([df, df]), "audio", build_audio_encoder("logmel"), tmp_path)


# ------------------------------------------------------------------------------------- sharded extraction
def _same_store(a: FeatureStore, b: FeatureStore) -> None:
    assert sorted(a.utt_ids) == sorted(b.utt_ids) and a.dim == b.dim
    for u in a.utt_ids:
        np.testing.assert_array_equal(a[u], b[u])


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_two_shards_then_a_merge_equal_one_unsharded_run(tmp_path, modality):
    from bber_utils.features import build_text_encoder
    from bber_utils.features.store import part_dir

    df = _manifest(tmp_path, texts=["hello there", "a", "no way", "what now", "yes", "fine then"])
    encoder = build_audio_encoder("logmel") if modality == "audio" else build_text_encoder("hashgram")
    whole = ensure_features(df, modality, encoder, tmp_path / "one", batch_size=2, progress=False)

    counting = CountingEncoder(encoder)
    parts = [ensure_features(df, modality, counting, tmp_path / "two", batch_size=2, progress=False, shard=(i, 2))
             for i in range(2)]
    assert [sorted(p.utt_ids) for p in parts] == [sorted(df.utt_id[0::2]), sorted(df.utt_id[1::2])]
    assert all(p.path == part_dir(whole.path.parent.parent / "two" / whole.path.name, (i, 2))
               for i, p in enumerate(parts))
    assert counting.utterances == len(df)
    merged = ensure_features(df, modality, counting, tmp_path / "two", batch_size=2, progress=False)
    assert counting.utterances == len(df)  # the merge computed nothing again
    assert merged.stats["cached"] == len(df) and not (merged.path / "parts").exists()
    _same_store(merged, whole)
    _same_store(FeatureStore(merged.path), whole)  # and from disk


def test_a_shard_skips_what_the_store_has_and_resumes(tmp_path):
    df = _manifest(tmp_path)
    enc = build_audio_encoder("logmel")
    ensure_features(df.iloc[:2], "audio", enc, tmp_path / "s", progress=False)  # rows 0, 1 in the main store
    crashing = CountingEncoder(enc, fail_after=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_features(df, "audio", crashing, tmp_path / "s", batch_size=1, progress=False, shard=(0, 2))
    assert crashing.utterances == 1  # row 2 (row 0 is in the main store), kept in the part
    resumed = CountingEncoder(enc)
    part = ensure_features(df, "audio", resumed, tmp_path / "s", batch_size=1, progress=False, shard=(0, 2))
    assert resumed.utterances == 1 and sorted(part.utt_ids) == ["demo_en-train-2", "demo_en-train-4"]
    store = ensure_features(df, "audio", resumed, tmp_path / "s", batch_size=1, progress=False)
    assert resumed.utterances == 1 + 2  # shard 1 never ran: rows 3 and 5 extracted by the unsharded call
    assert len(store) == len(df)
    _same_store(store, ensure_features(df, "audio", enc, tmp_path / "ref", progress=False))


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0), "x", "1/2/3", 5])
def test_a_bad_shard_is_a_clear_error(tmp_path, shard):
    with pytest.raises(ValueError, match="shard"):
        ensure_features(_manifest(tmp_path, seconds=(0.3,)), "audio", build_audio_encoder("logmel"),
                        tmp_path / "s", progress=False, shard=shard)


@pytest.mark.parametrize("lock_file", ["kept", "absent"])
def test_a_complete_store_in_a_read_only_folder_is_read_without_writing(tmp_path, read_only, lock_file):
    """A complete store could not be read from a read-only folder: ``ensure_features`` opened ``.lock`` for
    writing first. Nothing is missing, so nothing is written (a shared lock where ``.lock`` can be opened)."""
    df = _manifest(tmp_path)
    enc = CountingEncoder(build_audio_encoder("logmel"))
    first = ensure_features(df, "audio", enc, tmp_path / "store", progress=False)
    if lock_file == "absent":  # a copy of the store without its lock file
        (first.path / ".lock").unlink()
    before = read_only.snapshot(tmp_path / "store")
    read_only(tmp_path / "store")
    again = ensure_features(df, "audio", enc, tmp_path / "store", progress=False)
    assert again.stats["cached"] == len(df) and again.stats["extracted"] == 0 and enc.utterances == len(df)
    np.testing.assert_array_equal(again["demo_en-train-2"], first["demo_en-train-2"])
    assert read_only.snapshot(tmp_path / "store") == before


def test_a_read_only_store_that_lacks_rows_says_so_in_one_line(tmp_path, read_only):
    from bber_utils.core.errors import ReadOnlyError

    df = _manifest(tmp_path)
    ensure_features(df.iloc[:3], "audio", build_audio_encoder("logmel"), tmp_path / "store", progress=False)
    read_only(tmp_path / "store")
    with pytest.raises(ReadOnlyError, match=r"cannot write to .*store.*: read-only \(Permission denied\); some "
                                            r"audio features are not in the store yet") as exc:
        ensure_features(df, "audio", build_audio_encoder("logmel"), tmp_path / "store", progress=False)
    assert "\n" not in str(exc.value)


def test_a_reader_waits_for_a_writer_of_the_store(tmp_path):
    """The shared lock: a complete store is read only once the writer holding ``.lock`` lets go."""
    import threading
    import time

    from bber_utils.core.fileio import locked

    df = _manifest(tmp_path, seconds=(0.3, 0.2))
    store = ensure_features(df, "audio", build_audio_encoder("logmel"), tmp_path / "store", progress=False)
    done = []
    with locked(store.path / ".lock"):
        reader = threading.Thread(target=lambda: done.append(ensure_features(
            df, "audio", build_audio_encoder("logmel"), tmp_path / "store", progress=False)))
        reader.start()
        time.sleep(0.5)
        assert done == []
    reader.join(10)
    assert done and done[0].stats["cached"] == 2


ROOT = Path(__file__).resolve().parents[2]


def _text_manifest(n: int) -> pd.DataFrame:
    """``n`` text-only rows."""
    return pd.DataFrame({"utt_id": [f"u{i:04d}" for i in range(n)], "text": [f"t{i}" for i in range(n)]})


class _SlowText:
    """A text encoder that takes ``delay`` seconds per batch (dim 2)."""

    modality, dim, uses_torch = "text", 2, False

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.key = {"name": "slow"}

    def encode(self, texts):
        time.sleep(self.delay)
        return [np.ones((1, 2), np.float32) * len(t) for t in texts]


def test_the_store_flushes_by_time_with_a_fake_clock(tmp_path, monkeypatch):
    ticks = iter(range(0, 10_000, 11))  # every reading of the clock is 11 s later
    monkeypatch.setattr(store_mod, "_clock", lambda: next(ticks))
    flushed = []
    real = store_mod._Writer.flush
    monkeypatch.setattr(store_mod._Writer, "flush", lambda self: (flushed.append(len(self.pending)), real(self)))
    st = store_mod.ensure_features(_text_manifest(40), "text", _SlowText(), tmp_path, batch_size=4, flush_every=512,
                                   flush_seconds=30, progress=False)
    assert len(st) == 40
    # one flush every three batches (33 s), not one at the end: a kill would lose at most 3 batches
    assert flushed[:3] == [12, 12, 12]


def test_a_killed_extraction_keeps_what_was_flushed_by_time(tmp_path):
    code = ("import sys, time, numpy as np, pandas as pd\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from tests.features.test_store import _SlowText, _text_manifest\n"
            "from bber_utils.features.store import ensure_features\n"
            "print('start', flush=True)\n"
            "ensure_features(_text_manifest(400), 'text', _SlowText(0.1), sys.argv[2], batch_size=4, "
            "flush_every=512, flush_seconds=0.5, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(tmp_path)], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert proc.stdout.readline().strip() == b"start"
    time.sleep(3.0)
    proc.send_signal(signal.SIGKILL)  # no finally, no flush on the way out
    proc.wait(timeout=30)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    kept = len(store_mod.FeatureStore(folder))
    assert 0 < kept < 400, kept  # the 512-utterance count alone would have flushed nothing before the kill
    # and a rerun extracts only the rest
    st = store_mod.ensure_features(_text_manifest(400), "text", _SlowText(), tmp_path, batch_size=64, progress=False)
    assert len(st) == 400 and st.stats["extracted"] == 400 - kept
