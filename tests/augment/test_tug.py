"""bber_utils.augment.tug.build_synthetic_corpus and ``bber tug``: seeded ids in composer order, manifests in
the contract, resumable synthesis, failed or silent syntheses dropped with reasons (never saved), per-language
TTS choice."""

from __future__ import annotations

from types import SimpleNamespace
from bber_utils.augment import tug
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from bber_utils.core.audio import load_audio
from bber_utils.synthesis.templates import compose_utterances, has_tag
from bber_utils.synthesis.tts import TTSBackend
from bber_utils.augment.tug import (build_synthetic_corpus, dropped_path, load_dropped, load_synthetic,
                                    synthetic_manifest_path, tts_for_language)
from bber_utils.augment.tug_llm import TemplateSet, resolve_templates, stable_int
from bber_utils.corpora.manifest import load_manifest
from tests.openai_stub import StubReply

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
EMOTIONS = ("happy", "sad", "fear")


class FakeTTS(TTSBackend):
    """A tone per text; texts containing a trigger word come back silent or raise."""

    name = "fake"

    def __init__(self, languages=("en", "ru")):
        super().__init__()
        self.languages = tuple(languages)
        self.spoken: list[str] = []

    def _generate(self, texts, emotions, language, speakers, **options):
        out = []
        for t in texts:
            self.spoken.append(t)
            if "SILENT" in t:
                out.append((np.zeros(16000, dtype=np.float32), 16000))
            elif "BOOM" in t:
                out.append(RuntimeError("the voice exploded"))
            else:
                n = 8000 + 40 * len(t)
                out.append((0.3 * np.sin(np.arange(n) * 0.05).astype(np.float32), 8000))
        return out


def _set(language, emotion, subjects):
    tpl = {"subjects": subjects, "verbs": ["really did surprise everyone here", "changed the whole plan today"],
           "interjections": ["Oh", "(gasps) Oh"], "contexts": ["at the station", "after the long meeting"],
           "templates": ["{i}, {s} {v} {c}.", "{s} {v}, {c}!"]}
    return TemplateSet(language, emotion, tpl, "test", report=None)


def test_builds_a_manifest_in_composer_order(tmp_path):
    sets = resolve_templates(tmp_path, ["en"], "builtin", emotions=EMOTIONS)
    tts = FakeTTS()
    df = build_synthetic_corpus(tmp_path, "en", 3, tts=tts, template_source=sets, seed=5, emotions=EMOTIONS,
                                progress=False)
    assert len(df) == 9 and set(df["label"]) == set(EMOTIONS)
    assert (df["source"] == "tug").all() and (df["corpus"] == "tug_en").all() and (df["split"] == "train").all()
    for emotion in EMOTIONS:
        texts = compose_utterances(sets[("en", emotion)].templates, 3, seed=stable_int(5, "en", emotion))
        part = df[df["label"] == emotion]
        assert list(part["utt_id"]) == [f"tug_en-train-{emotion}_{i:05d}" for i in range(3)]
        assert list(part["tts_text"]) == texts  # the i-th id is the composer's i-th utterance
    assert not any(has_tag(t) for t in df["text"])  # the transcript has no nonverbal tags
    saved = load_manifest(synthetic_manifest_path(tmp_path, "en"))
    assert list(saved["utt_id"]) == list(df["utt_id"]) and "reused" not in saved.columns
    wav = load_audio(df["audio_path"].iloc[0])
    assert abs(len(wav) / 16000 - df["duration_s"].iloc[0]) < 1e-3  # resampled 8 kHz -> 16 kHz
    assert load_dropped(tmp_path, ["en"]).empty
    pd.testing.assert_frame_equal(load_synthetic(tmp_path, ["en", "ru"]), saved)


def test_rerun_reuses_wavs_and_seed_changes_texts(tmp_path):
    sets = resolve_templates(tmp_path, ["en"], "builtin", emotions=EMOTIONS)
    tts = FakeTTS()
    a = build_synthetic_corpus(tmp_path, "en", 2, tts=tts, template_source=sets, seed=1, emotions=EMOTIONS,
                               progress=False)
    assert len(tts.spoken) == 6 and not a["reused"].any()
    b = build_synthetic_corpus(tmp_path, "en", 3, tts=tts, template_source=sets, seed=1, emotions=EMOTIONS,
                               progress=False)
    assert len(tts.spoken) == 9  # only the three new utterances were spoken
    assert b["reused"].sum() == 6 and list(b["utt_id"].iloc[:2]) == list(a["utt_id"].iloc[:2])
    c = build_synthetic_corpus(tmp_path, "en", 2, tts=tts, template_source=sets, seed=2, emotions=EMOTIONS,
                               progress=False)
    assert list(c["utt_id"]) == list(a["utt_id"]) and list(c["text"]) != list(a["text"])
    assert not c["reused"].any() and set(c["audio_path"]).isdisjoint(a["audio_path"])  # no stale wav reused


def test_failed_and_silent_syntheses_are_dropped_with_reasons(tmp_path):
    sets = {("en", "sad"): _set("en", "sad", ["The SILENT train", "The BOOM box", "The old clock"])}
    with pytest.warns(UserWarning, match="failed and were dropped"):
        df = build_synthetic_corpus(tmp_path, "en", 12, tts=FakeTTS(), template_source=sets, emotions=("sad",),
                                    progress=False)
    assert len(df) and not df["text"].str.contains("SILENT|BOOM").any()
    dropped = load_dropped(tmp_path, ["en"])
    assert len(df) + len(dropped) == 12
    silent = dropped[dropped["text"].str.contains("SILENT")]
    boom = dropped[dropped["text"].str.contains("BOOM")]
    assert len(silent) and silent["reason"].str.startswith("silent").all()
    assert len(boom) and boom["reason"].str.contains("the voice exploded").all()
    wavs = {p.name.split("-")[0] for p in (tmp_path / "tug" / "wavs" / "en").glob("*.wav")}
    assert wavs == {u.split("-")[0] for u in df["utt_id"]}  # nothing written for the failures
    assert set(dropped["utt_id"]).isdisjoint(df["utt_id"])


def test_composer_shortfall_is_reported_not_a_crash(tmp_path):
    sets = {("en", "fear"): _set("en", "fear", ["The dog"])}
    with pytest.warns(UserWarning, match="found only"):
        df = build_synthetic_corpus(tmp_path, "en", 200, tts=FakeTTS(), template_source=sets, emotions=("fear",),
                                    progress=False)
    assert 0 < len(df) < 200
    dropped = pd.read_csv(dropped_path(tmp_path, "en"), keep_default_na=False)
    assert list(dropped["reason"]) == [f"composer found only {len(df)} of 200 unique utterances"]


def test_tts_choice_per_language(tmp_path):
    assert tts_for_language({"en": "dia", "ru": "mms"}, "ru") == "mms"
    assert tts_for_language("espeak", "ru") == "espeak"
    with pytest.raises(ValueError, match="no TTS backend given for language 'ru'"):
        tts_for_language({"en": "dia"}, "ru")
    with pytest.raises(ValueError, match="does not speak 'ru'"):
        build_synthetic_corpus(tmp_path, "ru", 1, tts="dia", emotions=("sad",), progress=False)
    with pytest.raises(ValueError, match="does not speak 'ru'"):
        build_synthetic_corpus(tmp_path, "ru", 1, tts=FakeTTS(languages=("en",)), emotions=("sad",),
                               progress=False)


def test_llm_written_templates_are_recorded_per_row(tmp_path, openai_stub):
    from tests.augment.common import VALID

    openai_stub.script(StubReply.json(VALID))
    df = build_synthetic_corpus(tmp_path, "en", 2, tts=FakeTTS(), template_source="openai", llm_model="stub-model",
                                base_url=openai_stub.url, emotions=("happy",), progress=False)
    assert list(df["template_source"]) == ["openai:stub-model"] * 2
    # Filled from the stub's reply, not from the built-in templates.
    assert all(any(v in t for v in VALID["verbs"]) for t in df["text"])


@needs_espeak
def test_espeak_russian_corpus_and_cli(tmp_path, capsys):
    from bber_utils.cli import main

    rc = main(["tug", "--workdir", str(tmp_path), "--languages", "ru", "--per-class", "1", "--seed", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "tug_ru.parquet: 7 utterances" in out and "builtin" in out
    df = load_manifest(synthetic_manifest_path(tmp_path, "ru"))
    assert len(df) == 7 and (df["language"] == "ru").all() and df["duration_s"].gt(0.5).all()
    assert df["tts"].str.startswith("espeak").all() and df["text"].str.contains("[а-яё]", regex=True).all()
    assert main(["tug", "--workdir", str(tmp_path), "--tts", "en=dia,ru=piper"]) == 2


def test_backend_options_per_language_reach_build_tts(tmp_path, monkeypatch):
    """The paper profile's {en: dia, ru: mms} with a model per language and backend options."""
    from bber_utils.augment import tug as tts_module  # build_synthetic_corpus calls build_tts by tug's name

    calls = []

    def fake_build_tts(name, **kw):
        calls.append((name, kw))
        return FakeTTS()

    monkeypatch.setattr(tts_module, "build_tts", fake_build_tts)
    tts, models = {"en": "dia", "ru": "mms"}, {"en": "/models/dia", "ru": "/models/mms-rus"}
    build_synthetic_corpus(tmp_path, "ru", 1, tts=tts, tts_model=models, seed=4, emotions=("sad",), progress=False)
    build_synthetic_corpus(tmp_path, "en", 1, tts=tts, tts_model=models, seed=4, codec="/models/dac",
                           emotions=("sad",), progress=False)
    build_synthetic_corpus(tmp_path, "en", 1, tts="espeak", seed=4, emotions=("sad",), progress=False)
    assert calls == [("mms", {"seed": 4, "model": "/models/mms-rus"}),
                     ("dia", {"seed": 4, "model": "/models/dia", "codec": "/models/dac"}),
                     ("espeak", {"seed": 4, "jitter": 1.0})]


@pytest.mark.slow  # importing transformers alone takes 5-20 s here
def test_mms_from_a_local_folder(tmp_path):
    """A tiny random VITS (MMS-TTS's class) loaded by path speaks the Russian corpus."""
    from tests.tiny_models import tiny_vits

    vits = tiny_vits(tmp_path / "tiny_vits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model may make clips that are dropped: counted below
        ru = build_synthetic_corpus(tmp_path, "ru", 2, tts={"en": "dia", "ru": "mms"}, tts_model={"ru": str(vits)},
                                    emotions=("sad", "anger"), progress=False)
    dropped = load_dropped(tmp_path, ["ru"])
    assert len(ru) + len(dropped) == 4 and dropped["reason"].str.len().gt(0).all()
    assert len(ru) and ru["tts"].str.startswith(f"mms|{vits}").all()
    assert all(load_audio(p).size > 0 for p in ru["audio_path"])


# ------------------------------------------------------------------------------------------------- sharding
def test_two_shards_then_a_merge_equal_one_unsharded_run(tmp_path):
    from bber_utils.core.paths import run_dirs

    one, two = tmp_path / "one", tmp_path / "two"
    sets = resolve_templates(one, ["en"], "builtin", emotions=EMOTIONS)
    kw = dict(template_source=sets, seed=5, emotions=EMOTIONS, progress=False)
    whole = build_synthetic_corpus(one, "en", 3, tts=FakeTTS(), **kw)
    spoken = []
    for i in range(2):
        tts = FakeTTS()
        part = build_synthetic_corpus(two, "en", 3, tts=tts, shard=(i, 2), **kw)
        assert list(part["utt_id"]) == list(whole["utt_id"][i::2])  # every 2nd utterance of the whole order
        spoken += tts.spoken
    assert len(spoken) == len(whole) and not synthetic_manifest_path(two, "en").exists()
    merger = FakeTTS()
    merged = build_synthetic_corpus(two, "en", 3, tts=merger, **kw)
    assert merger.spoken == [] and merged["reused"].all()  # the merge speaks nothing
    assert not list((run_dirs(two).tug / "parts").glob("*"))
    a, b = load_manifest(synthetic_manifest_path(one, "en")), load_manifest(synthetic_manifest_path(two, "en"))
    assert list(a["audio_path"].map(lambda p: p.split("/tug/")[1])) == list(
        b["audio_path"].map(lambda p: p.split("/tug/")[1]))
    pd.testing.assert_frame_equal(a.drop(columns="audio_path"), b.drop(columns="audio_path"))
    for x, y in zip(a["audio_path"], b["audio_path"]):
        np.testing.assert_array_equal(load_audio(x), load_audio(y))


def test_merge_speaks_what_no_shard_did(tmp_path):
    sets = resolve_templates(tmp_path, ["en"], "builtin", emotions=EMOTIONS)
    kw = dict(template_source=sets, seed=5, emotions=EMOTIONS, progress=False)
    build_synthetic_corpus(tmp_path, "en", 2, tts=FakeTTS(), shard="1/3", **kw)
    merger = FakeTTS()
    merged = build_synthetic_corpus(tmp_path, "en", 2, tts=merger, **kw)
    assert len(merged) == 6 and len(merger.spoken) == 4 and int(merged["reused"].sum()) == 2
    with pytest.raises(ValueError, match="shard"):
        build_synthetic_corpus(tmp_path, "en", 2, tts=FakeTTS(), shard=(3, 3), **kw)


def test_two_runs_at_once_speak_each_utterance_once(tmp_path, capsys):
    """Two ``build_synthetic_corpus`` at once (threads with a TTS each; the lock is ``flock``, which also
    excludes two descriptors of one process) used to speak everything twice. Each TTS's first call waits up to
    2 s for the other's: without a lock both speak at once."""
    import threading

    sets = resolve_templates(tmp_path, ["en"], "builtin", emotions=EMOTIONS)
    both = threading.Barrier(2)

    class Meeting(FakeTTS):
        def _generate(self, texts, *args, **kwargs):
            if not self.spoken:
                try:
                    both.wait(timeout=2)
                except threading.BrokenBarrierError:
                    pass
            return super()._generate(texts, *args, **kwargs)

    voices, frames = [Meeting(), Meeting()], {}
    runs = [threading.Thread(target=lambda i=i: frames.update({i: build_synthetic_corpus(
        tmp_path, "en", 3, tts=voices[i], template_source=sets, seed=5, emotions=EMOTIONS, progress=False)}))
        for i in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(60)
    assert sorted(len(v.spoken) for v in voices) == [0, 9]  # 3 emotions x 3 utterances, spoken once
    assert frames[0]["utt_id"].tolist() == frames[1]["utt_id"].tolist() and len(frames[0]) == 9
    assert sorted(int(f["reused"].sum()) for f in frames.values()) == [0, 9]
    assert "another run is speaking into" in capsys.readouterr().err


def test_wav_key_changes_with_the_synthesis_version(monkeypatch):
    backend = SimpleNamespace(name="espeak", seed=42, jitter=0.1)
    before = tug._voice_key(backend, "en")
    monkeypatch.setattr(tug, "SYNTHESIS_VERSION", tug.SYNTHESIS_VERSION + 1)
    assert tug._voice_key(backend, "en") != before


def test_wav_key_names_the_espeak_version(monkeypatch):
    backend = SimpleNamespace(name="espeak", seed=42, jitter=0.1)
    monkeypatch.setattr(tug, "_engine_version", lambda name: "eSpeak NG 9.99")
    assert "eSpeak NG 9.99" in tug._voice_key(backend, "en")
