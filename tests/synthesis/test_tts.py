"""TTS backends: the shared synthesize() contract (reuse, silence and failure detection), espeak-ng prosody, and
the transformers paths (MMS/VITS, Dia) with tiny random models saved to a tmp folder and loaded by path."""

import shutil

import numpy as np
import pytest
import soundfile as sf

from bber_utils.core.audio import write_wav
from bber_utils.synthesis.tts import (EMOTION_PROSODY, SPEAKERS, EspeakBackend, Prosody, TTSBackend, build_tts,
                                      check_speech, espeak_ssml)
from tests.tiny_models import tiny_vits

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
SR = 16000


@pytest.fixture
def one_torch_thread():
    """Tiny models run many small ops: one thread avoids OpenMP spin-waiting on a busy 2-core machine
    (measured here: Dia generate 8.8 s with 2 threads under load, 0.7 s with 1)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tone(seconds=1.0, amp=0.3, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


class ScriptedBackend(TTSBackend):
    """Returns, per text, what ``script`` says: "tone", "silence", "short", "nan" or "raise"."""

    name = "scripted"
    batch_size = 2

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0

    def _generate(self, texts, emotions, language, speakers, **options):
        self.calls += len(texts)
        out = []
        for t in texts:
            if t == "raise":
                out.append(RuntimeError("model exploded"))
            elif t == "silence":
                out.append((np.zeros(SR, np.float32), SR))
            elif t == "short":
                out.append((_tone(0.05), SR))
            elif t == "nan":
                out.append((np.full(SR, np.nan, np.float32), SR))
            else:
                out.append((_tone(1.0, sr=22050), 22050))
        return out


def test_check_speech_reasons():
    assert check_speech(_tone()) == ""
    assert "silent" in check_speech(np.zeros(SR, np.float32))
    assert "silent" in check_speech(_tone(amp=1e-4))
    assert "too short" in check_speech(_tone(0.1))
    assert "too long" in check_speech(_tone(31.0))
    assert "NaN" in check_speech(np.full(SR, np.nan, np.float32))
    assert check_speech(np.zeros(0, np.float32)) == "empty audio"
    # A clip that is mostly pause but has speech in it is not "silent".
    assert check_speech(np.concatenate([np.zeros(3 * SR, np.float32), _tone(0.5)])) == ""


def test_failed_and_silent_syntheses_are_dropped_not_saved(tmp_path):
    tts = ScriptedBackend()
    texts = ["tone", "silence", "raise", "short", "nan", ""]
    paths = [tmp_path / f"{i}.wav" for i in range(len(texts))]
    res = tts.synthesize(texts, paths)
    assert [r.ok for r in res] == [True, False, False, False, False, False]
    assert "silent" in res[1].reason and "model exploded" in res[2].reason
    assert "too short" in res[3].reason and "NaN" in res[4].reason and res[5].reason == "empty text"
    assert paths[0].exists() and not any(p.exists() for p in paths[1:])
    wav, sr = sf.read(paths[0])
    assert sr == SR and wav.ndim == 1 and abs(res[0].duration_s - 1.0) < 0.01  # resampled 22.05 k -> 16 k


def test_reuse_valid_wavs_and_replace_a_stale_silent_one(tmp_path):
    tts = ScriptedBackend()
    good, stale = tmp_path / "good.wav", tmp_path / "stale.wav"
    write_wav(good, _tone(0.8))
    write_wav(stale, np.zeros(SR, np.float32))  # e.g. left by the reference's "save 1 s of silence on failure"
    res = tts.synthesize(["tone", "silence"], [good, stale])
    assert res[0].ok and res[0].reused and abs(res[0].duration_s - 0.8) < 0.01
    assert not res[1].ok and not stale.exists()
    assert tts.calls == 1
    res = tts.synthesize(["tone"], [good], overwrite=True)
    assert res[0].ok and not res[0].reused and tts.calls == 2


def test_synthesize_argument_errors(tmp_path):
    tts = ScriptedBackend()
    with pytest.raises(ValueError, match="2 texts but 1 output"):
        tts.synthesize(["a", "b"], [tmp_path / "a.wav"])
    with pytest.raises(ValueError, match="unknown emotion"):
        tts.synthesize(["a"], [tmp_path / "a.wav"], emotion="joy")
    with pytest.raises(ValueError, match="does not speak"):
        tts.synthesize(["a"], [tmp_path / "a.wav"], language="de")
    with pytest.raises(ValueError, match="unknown TTS backend"):
        build_tts("festival")


def test_espeak_ssml_escapes_text_and_renders_tags():
    doc = espeak_ssml("Tom (sighs) & Jerry (laughs) <3", Prosody(range_pct=150))
    assert doc.startswith('<speak><prosody range="+50%">') and "&amp;" in doc and "&lt;3" in doc
    assert doc.count("<break") == 2 and "sighs" not in doc
    assert "<break" not in espeak_ssml("(sighs) fine (laughs)", Prosody())  # no pause at the edges
    assert "<break" not in espeak_ssml("(sighs) fine", Prosody(), tags="remove")


@needs_espeak
def test_espeak_both_languages_emotions_speakers_and_determinism(tmp_path):
    tts = build_tts("espeak", workers=2)
    en = "The train leaves at six, next to the blue door."
    ru = "Поезд отправляется в шесть, рядом с синей дверью."
    emotions = ["neutral", "sad", "anger"]
    res = tts.synthesize([en] * 3, [tmp_path / f"en_{e}.wav" for e in emotions], emotion=emotions, language="en")
    res += tts.synthesize([ru] * 3, [tmp_path / f"ru_{e}.wav" for e in emotions], emotion=emotions, language="ru")
    assert all(r.ok for r in res), [r.reason for r in res]
    for r in res:
        info = sf.info(r.path)
        assert info.samplerate == SR and info.channels == 1
    dur = {r.path.stem: r.duration_s for r in res}
    # Sad prosody is slow, anger fast: the same sentence lasts longer when sad.
    for lang in ("en", "ru"):
        assert dur[f"{lang}_sad"] > dur[f"{lang}_neutral"] > dur[f"{lang}_anger"]
    # Loudness follows the emotion's amplitude.
    rms = {e: np.sqrt(np.mean(sf.read(tmp_path / f"en_{e}.wav")[0] ** 2)) for e in emotions}
    assert rms["anger"] > rms["sad"]
    # Same input -> same bytes; another speaker -> another waveform.
    again = tts.synthesize([en], [tmp_path / "again.wav"], emotion="sad", language="en")
    assert (tmp_path / "again.wav").read_bytes() == (tmp_path / "en_sad.wav").read_bytes() and again[0].ok
    other = tts.synthesize([en], [tmp_path / "other.wav"], emotion="sad", language="en", speakers=[3])
    assert (tmp_path / "other.wav").read_bytes() != (tmp_path / "en_sad.wav").read_bytes() and other[0].ok
    # Explicit per-item prosody overrides the emotion's; jitter varies it reproducibly.
    loud = tts.synthesize([en], [tmp_path / "p.wav"], language="en", prosody=[Prosody(rate=300, amplitude=100)])
    assert loud[0].duration_s < dur["en_anger"]


@needs_espeak
def test_espeak_tags_become_pauses_or_vanish(tmp_path):
    text = "Well (sighs) I am not sure (clears throat) about this plan."
    pause = EspeakBackend(tags="pause").synthesize([text], [tmp_path / "pause.wav"], language="en")[0]
    gone = EspeakBackend(tags="remove").synthesize([text], [tmp_path / "gone.wav"], language="en")[0]
    plain = EspeakBackend().synthesize(["Well I am not sure about this plan."], [tmp_path / "plain.wav"],
                                       language="en")[0]
    assert pause.ok and gone.ok
    assert pause.duration_s > gone.duration_s + 0.3  # two 250 ms breaks
    assert (tmp_path / "gone.wav").read_bytes() == (tmp_path / "plain.wav").read_bytes() and plain.ok


def test_emotion_prosody_design():
    """The demo corpus relies on these pairings: similar prosody for anger/happy and sad/disgust."""
    p = EMOTION_PROSODY

    def dist(a, b):
        return abs(p[a].pitch - p[b].pitch) / 10 + abs(p[a].rate - p[b].rate) / 20 + abs(p[a].amplitude - p[b].amplitude) / 10

    assert dist("anger", "happy") < dist("anger", "sad") and dist("anger", "happy") < dist("happy", "neutral")
    assert dist("sad", "disgust") < dist("sad", "neutral") and dist("sad", "disgust") < dist("sad", "fear")
    assert len(SPEAKERS["en"]) >= 4 and len(SPEAKERS["ru"]) >= 4



@pytest.mark.slow  # importing transformers alone takes 5-20 s here
def test_mms_vits_by_local_path_both_languages(tmp_path, one_torch_thread):
    pytest.importorskip("transformers")
    model_dir = tiny_vits(tmp_path / "tiny-mms")
    tts = build_tts("mms", model={"en": model_dir, "ru": model_dir}, seed=1)
    res = tts.synthesize(["Hello (laughs) there, my friend.", "Hello (laughs) there, my friend."],
                         [tmp_path / "a.wav", tmp_path / "b.wav"], emotion="happy", language="en")
    res += tts.synthesize(["Привет, как у тебя дела?"], [tmp_path / "ru.wav"], language="ru")
    assert all(r.ok for r in res), [r.reason for r in res]
    assert sf.info(res[2].path).samplerate == SR
    # Seeded per item: the same text gives the same audio.
    assert res[0].path.read_bytes() == res[1].path.read_bytes()
    # No emotion input in VITS: the emotion sets the speaking rate (sad slower than anger).
    text = "Hello there, my friend, how are you today?"
    sad, anger = tts.synthesize([text, text], [tmp_path / "sad.wav", tmp_path / "anger.wav"],
                                emotion=["sad", "anger"], language="en")
    assert sad.ok and anger.ok and sad.duration_s > 1.3 * anger.duration_s
    bad = build_tts("mms", model=tmp_path / "missing").synthesize(["hello there"], [tmp_path / "x.wav"])
    assert not bad[0].ok and "cannot load" in bad[0].reason and not (tmp_path / "x.wav").exists()


def _tiny_dia(folder):
    import torch
    from transformers import (DacConfig, DacModel, DiaConfig, DiaDecoderConfig, DiaEncoderConfig,
                              DiaFeatureExtractor, DiaForConditionalGeneration, DiaTokenizer)

    torch.manual_seed(0)
    enc = DiaEncoderConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                           head_dim=16, intermediate_size=128)
    dec = DiaDecoderConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, cross_num_attention_heads=4, cross_head_dim=16,
                           cross_num_key_value_heads=4, cross_hidden_size=64)
    DiaForConditionalGeneration(DiaConfig(encoder_config=enc, decoder_config=dec)).save_pretrained(folder / "dia")
    DiaFeatureExtractor(sampling_rate=44100, hop_length=512).save_pretrained(folder / "dia")
    DiaTokenizer().save_pretrained(folder / "dia")
    dac = DacModel(DacConfig(encoder_hidden_size=8, decoder_hidden_size=64, hidden_size=64, sampling_rate=44100))
    dac.save_pretrained(folder / "dac")
    with torch.no_grad():  # a codec whose last layer is zero decodes every code to exact silence
        dac.decoder.conv2.weight.zero_()
        dac.decoder.conv2.bias.zero_()
    dac.save_pretrained(folder / "dac_silent")
    return folder / "dia", folder / "dac"


@pytest.mark.slow  # importing transformers alone takes 5-20 s here
def test_dia_by_local_path_english_only(tmp_path, one_torch_thread):
    pytest.importorskip("transformers")
    dia, dac = _tiny_dia(tmp_path)
    # A random tiny codec makes very quiet noise: lower the silence threshold for this test only.
    tts = build_tts("dia", model=dia, codec=dac, max_new_tokens=40, seed=3, min_rms_dbfs=-120, min_duration_s=0.1,
                    batch_size=2)
    assert tts.prompt("(laughs) so  good") == "[S1] (laughs) so good"
    assert tts.prompt("[S2] Hi.") == "[S2] Hi."
    texts = ["I am so happy to see you (laughs)!", "Well, that was unexpected."]
    res = tts.synthesize(texts, [tmp_path / f"{i}.wav" for i in range(2)], emotion="happy", language="en")
    assert all(r.ok for r in res), [r.reason for r in res]
    info = sf.info(res[0].path)
    assert info.samplerate == SR and info.channels == 1 and 0.2 < res[0].duration_s < 0.5  # 41 frames x 512 / 44.1 k
    with pytest.raises(ValueError, match="does not speak 'ru'"):
        tts.synthesize(["Привет"], [tmp_path / "ru.wav"], language="ru")
    # A model that generates silence: dropped and reported, not saved (the reference saved silence).
    silent = build_tts("dia", model=dia, codec=tmp_path / "dac_silent", max_new_tokens=40, seed=3, min_duration_s=0.1)
    out = silent.synthesize(["Hello there."], [tmp_path / "silent.wav"])
    assert not out[0].ok and "silent" in out[0].reason and not (tmp_path / "silent.wav").exists()
