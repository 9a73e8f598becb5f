"""The built-in demo corpus: MELD and RESD published layouts, designed ambiguity, determinism, idempotence."""

import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bber_utils.core.audio import load_audio
from bber_utils.corpora import demo
from bber_utils.corpora.demo import (CASES, MELD_COLUMNS, RESD_LETTER, build_demo_corpus, plan_rows, split_sizes)
from bber_utils.core.labels import CLASSES, MELD_TO_CLASS, RESD_TO_CLASS

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None,
                                reason="the demo corpus needs espeak-ng and ffmpeg")
PER_CLASS = 3
SIZES = split_sizes(PER_CLASS, 0.4, 0.4)  # train 3, dev 1, test 1 per class and language


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, build_demo_corpus(out, per_class=PER_CLASS, seed=7)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != demo.MARKER}


def test_english_is_in_meld_layout(built):
    out, roots = built
    root = roots["demo_en"]
    assert root == out / "demo_en"
    for split, folder in demo.MELD_FOLDERS.items():
        df = pd.read_csv(root / f"{split}_sent_emo.csv")
        assert list(df.columns) == MELD_COLUMNS
        assert len(df) == 7 * SIZES[split]
        assert set(df["Emotion"]) == set(MELD_TO_CLASS)  # MELD's names: joy, sadness, ...
        assert df["Emotion"].map(MELD_TO_CLASS).value_counts().to_dict() == {c: SIZES[split] for c in CLASSES}
        assert df["Sr No."].tolist() == list(range(1, len(df) + 1))
        assert df["Utterance"].str.split().str.len().between(5, 20).all()
        assert df["StartTime"].str.fullmatch(r"\d\d:\d\d:\d\d,\d\d\d").all()
        assert not df[["Dialogue_ID", "Utterance_ID"]].duplicated().any()
        clips = sorted(p.name for p in (root / folder).iterdir())
        assert clips == sorted(f"dia{d}_utt{u}.mp4" for d, u in zip(df["Dialogue_ID"], df["Utterance_ID"]))
    clip = next((root / "train_splits").glob("*.mp4"))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,sample_rate",
                            "-of", "json", str(clip)], capture_output=True, text=True, check=True)
    streams = json.loads(probe.stdout)["streams"]
    assert [(s["codec_type"], s["codec_name"], s["sample_rate"]) for s in streams] == [("audio", "aac", "16000")]
    wav = load_audio(clip)
    assert len(wav) > 0.5 * 16000 and np.sqrt(np.mean(wav ** 2)) > 0.01


def test_russian_is_in_resd_hub_layout(built):
    _, roots = built
    root = roots["demo_ru"]
    train = pd.read_parquet(root / "data" / "train-00000-of-00001.parquet")
    test = pd.read_parquet(root / "data" / "test-00000-of-00001.parquet")
    assert list(train.columns) == ["name", "path", "emotion", "speech", "text"]
    assert len(train) == 7 * (SIZES["train"] + SIZES["dev"]) and len(test) == 7 * SIZES["test"]  # no dev in RESD
    for df in (train, test):
        assert set(df["emotion"]) == set(RESD_TO_CLASS)  # RESD's names: happiness, enthusiasm, ...
        for _, r in df.iterrows():
            m = re.fullmatch(r"(\d\d)_([a-z]+)_([a-z]+)_([a-z])_(\d{3})", r["name"])
            assert m, r["name"]
            assert m.group(4) == RESD_LETTER[r["emotion"]] and r["emotion"] in (m.group(2), m.group(3))
            assert r["path"] == r["speech"]["path"] == f"{r['name']}.wav"
            assert re.search("[а-яё]", r["text"], re.IGNORECASE)
        wav, sr = sf.read(io.BytesIO(df["speech"].iloc[0]["bytes"]))
        assert sr == 16000 and wav.ndim == 1 and len(wav) > 8000
    assert not set(train["name"]) & set(test["name"])


def test_nothing_in_the_corpus_tells_the_design(built):
    out, roots = built
    design = pd.read_csv(out / "demo_design.csv")
    assert len(design) == 2 * 7 * sum(SIZES.values()) and (design["status"] == "ok").all()
    leaky = {"case", "text_source", "prosody_emotion", "pitch", "rate", "amplitude"}
    for csv in roots["demo_en"].glob("*.csv"):
        assert not leaky & set(pd.read_csv(csv).columns)
    for pq in roots["demo_ru"].rglob("*.parquet"):
        assert not leaky & set(pd.read_parquet(pq).columns)
    # The design table names every row of the corpora by its manifest utt_id.
    assert design["utt_id"].str.startswith(("demo_en-", "demo_ru-")).all() and design["utt_id"].is_unique


def test_designed_ambiguity(built):
    out, _ = built
    d = pd.read_csv(out / "demo_design.csv")
    emo = d[d["label"] != "neutral"]
    # Each emotional class has all three cases in balance (per corpus and split, counts differ by at most 1).
    counts = emo.groupby(["corpus", "planned_split", "label"])["case"].value_counts().unstack(fill_value=0)
    assert set(counts.columns) == set(CASES)
    assert ((counts.max(axis=1) - counts.min(axis=1)) <= 1).all()
    assert (d.loc[d["label"] == "neutral", "case"] == "neutral").all()
    # Neutral wording with emotional prosody; emotional wording with flat prosody.
    nw = d[d["case"] == "neutral_words"]
    assert (nw["text_source"] == "neutral_wording").all() and (nw["prosody_emotion"] == nw["label"]).all()
    flat = d[d["case"] == "flat_prosody"]
    assert (flat["prosody_emotion"] == "neutral").all() and (flat["text_source"] == flat["label"]).all()
    # Partner words (surprise<->fear, anger<->disgust) only where the prosody can tell the classes apart.
    partner = d[(d["text_source"] != d["label"]) & (d["text_source"] != "neutral_wording")
                & (d["label"] != "neutral")]
    assert (partner["case"] == "both").all()
    assert set(zip(partner["label"], partner["text_source"])) <= set(demo.WORD_PARTNER.items())


def test_prosody_is_audible_in_the_audio(built):
    out, _ = built
    d = pd.read_csv(out / "demo_design.csv")
    d["sec_per_word"] = d["duration_s"] / d["text"].str.split().str.len()
    slow = d[d["prosody_emotion"].isin(["sad", "disgust"])]["sec_per_word"].mean()
    fast = d[d["prosody_emotion"].isin(["anger", "happy", "fear"])]["sec_per_word"].mean()
    assert slow > 1.3 * fast


def test_demo_profile_size_and_unique_texts():
    sizes = split_sizes(40, 0.4, 0.4)
    total = 0
    for language in ("en", "ru"):
        rows = plan_rows(language, 40, 42, 0.4, 0.4)
        total += len(rows)
        texts = [r["text"] for r in rows]
        assert len(set(texts)) == len(texts)
        assert all(5 <= len(t.split()) <= 20 for t in texts)
        assert not any("(" in t for t in texts)  # tags removed from transcripts
    assert total == 2 * 7 * sum(sizes.values()) >= 1000


@pytest.mark.slow
def test_same_seed_same_bytes_and_idempotent(built, tmp_path, monkeypatch):
    out, roots = built
    again = build_demo_corpus(tmp_path, per_class=PER_CLASS, seed=7)
    for corpus in ("demo_en", "demo_ru"):
        assert _digest(again[corpus]) == _digest(roots[corpus])  # CSVs, parquet files and mp4 clips
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "demo_design.csv"), pd.read_csv(out / "demo_design.csv"))
    assert plan_rows("en", PER_CLASS, 8, 0.4, 0.4) != plan_rows("en", PER_CLASS, 7, 0.4, 0.4)

    def boom(*a, **k):
        raise AssertionError("rebuilt although nothing changed")

    monkeypatch.setattr(demo, "_synthesize", boom)
    assert build_demo_corpus(tmp_path, per_class=PER_CLASS, seed=7) == again  # returns at once


@pytest.mark.slow
def test_changed_options_rebuild_and_wav_clips(tmp_path):
    build_demo_corpus(tmp_path, per_class=1, seed=1, clip_format="wav")
    clips = list((tmp_path / "demo_en" / "train_splits").iterdir())
    assert clips and all(p.suffix == ".wav" for p in clips)
    assert sf.info(clips[0]).samplerate == 16000
    build_demo_corpus(tmp_path, per_class=2, seed=1, clip_format="mp4")
    clips = list((tmp_path / "demo_en" / "train_splits").iterdir())
    assert len(clips) == 14 and all(p.suffix == ".mp4" for p in clips)
    assert not (tmp_path / ".demo_build").exists() and not (tmp_path / ".demo_en.partial").exists()


def test_never_removes_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "demo_en").mkdir()
    (tmp_path / "demo_en" / "precious.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="demo_en"):
        build_demo_corpus(tmp_path, per_class=1)
    assert (tmp_path / "demo_en" / "precious.txt").exists()
    with pytest.raises(ValueError, match="clip_format"):
        build_demo_corpus(tmp_path / "x", per_class=1, clip_format="mp3")


@pytest.mark.slow
def test_failed_syntheses_are_dropped_and_reported(tmp_path, monkeypatch):
    from bber_utils.synthesis import tts

    real = tts.EspeakBackend._one

    def flaky(self, text, language, voice, p):
        if language == "en" and text == first_en:
            raise RuntimeError("espeak crashed")
        return real(self, text, language, voice, p)

    first_en = plan_rows("en", 1, 5, 0.4, 0.4)[0]["text"]
    monkeypatch.setattr(tts.EspeakBackend, "_one", flaky)
    with pytest.warns(UserWarning, match="1 utterances dropped"):
        roots = build_demo_corpus(tmp_path, per_class=1, seed=5)
    design = pd.read_csv(tmp_path / "demo_design.csv")
    bad = design[design["status"] != "ok"]
    assert len(bad) == 1 and "espeak crashed" in bad["reason"].iloc[0]
    csv = pd.read_csv(roots["demo_en"] / "train_sent_emo.csv")
    assert first_en not in set(csv["Utterance"]) and len(csv) == 7 * 1 - 1


def test_read_back_by_the_real_readers(built, tmp_path):
    from bber_utils.corpora.meld import read_meld
    from bber_utils.corpora.resd import read_resd

    _, roots = built
    en, en_skips = read_meld(roots["demo_en"], tmp_path / "en_wav", corpus="demo_en", language="en", progress=False)
    ru, ru_skips = read_resd(roots["demo_ru"], tmp_path / "ru_wav", corpus="demo_ru", language="ru", progress=False)
    assert len(en_skips) == len(ru_skips) == 0
    assert {s: len(df) for s, df in en.items()} == {s: 7 * n for s, n in SIZES.items()}
    assert sum(len(df) for df in ru.values()) == 7 * sum(SIZES.values())
    for frames in (en, ru):
        for df in frames.values():
            assert set(df["label"]) <= set(CLASSES) and (df["text"].str.len() > 0).all()


@pytest.mark.slow
def test_interrupted_build_resumes_without_resynthesising(tmp_path, monkeypatch):
    from bber_utils.synthesis import tts

    calls = []
    real_one = tts.EspeakBackend._one
    monkeypatch.setattr(tts.EspeakBackend, "_one", lambda self, *a: calls.append(a[1]) or real_one(self, *a))
    real_resd = demo._write_resd

    def crash(*a, **k):
        raise KeyboardInterrupt("interrupted while writing the Russian parquet")

    monkeypatch.setattr(demo, "_write_resd", crash)
    with pytest.raises(KeyboardInterrupt):
        build_demo_corpus(tmp_path, per_class=1, seed=3)
    assert not (tmp_path / "demo_ru").exists() and not (tmp_path / "demo_design.csv").exists()
    n_first = len(calls)
    assert n_first == 2 * 7 * sum(split_sizes(1, 0.4, 0.4).values())
    monkeypatch.setattr(demo, "_write_resd", real_resd)
    roots = build_demo_corpus(tmp_path, per_class=1, seed=3)
    assert len(calls) == n_first  # every wav of the first attempt was reused
    assert (roots["demo_ru"] / "data" / "train-00000-of-00001.parquet").exists()
    assert not (tmp_path / ".demo_build").exists()
