"""Text-to-speech backends behind one interface; each writes 16 kHz mono 16-bit wavs.

::

    tts = build_tts("espeak")                       # or "mms", "dia" (model=hub id or local folder)
    results = tts.synthesize(texts, out_paths, emotion="happy", language="en")
    [r.ok, r.reason, r.duration_s for r in results]

* ``espeak`` (offline, espeak-ng): English ``en-us`` and Russian ``ru`` voices, per-emotion prosody (pitch,
  pitch range, rate, amplitude, word gap), per-speaker voice variants and offsets, DIA tags rendered as short
  pauses (or removed). One espeak-ng process per sentence (~10 ms), ``workers`` of them at a time.
* ``mms`` (MMS-TTS / VITS through transformers, e.g. ``facebook/mms-tts-eng``, ``facebook/mms-tts-rus``):
  no emotion control; DIA tags removed; seeded.
* ``dia`` (Dia through transformers' ``DiaForConditionalGeneration`` + ``DiaProcessor``): English only, a fixed
  speaker tag (``[S1]``) and seed, inline nonverbal tags kept; decoded by the processor's DAC and resampled
  44.1 k -> 16 k.

Every output is checked (``check_speech``: finite, long enough, not silent, not run away) before it is written;
a failed or silent synthesis is dropped and reported in its ``SynthesisResult`` — never saved as silence (the
reference saved 1 s of silence on failure). Resumable: an existing valid wav is reused (``reused=True``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence
from xml.sax.saxutils import escape

import numpy as np

from bber_utils.core.audio import SAMPLE_RATE, AudioError, load_audio, resample, write_wav
from bber_utils.core.labels import CLASSES
from bber_utils.core.progress import tqdm
from bber_utils.synthesis.templates import clean_utterance, split_on_tags, strip_tags

# Heavy libraries (torch, transformers) are imported inside the functions that use them, so that importing this
# module, and `bber --help`, stays fast.

TTS_NAMES = ("espeak", "mms", "dia")


@dataclass
class SynthesisResult:
    """One item of ``TTSBackend.synthesize``: ``ok`` with the wav's ``duration_s``, or the ``reason`` it failed."""

    path: Path
    ok: bool
    reason: str = ""
    duration_s: float = 0.0
    reused: bool = False


def check_speech(wav: np.ndarray, sr: int = SAMPLE_RATE, min_duration_s: float = 0.3,
                 max_duration_s: float = 30.0, min_rms_dbfs: float = -45.0) -> str:
    """``""`` when ``wav`` looks like speech, else the reason: empty, non-finite, too short, too long, silent.

    Silence is an RMS over the voiced part below ``min_rms_dbfs`` (the 10 % loudest 20 ms frames, so that
    leading and trailing pauses do not count).
    """
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        return "empty audio"
    if not np.all(np.isfinite(wav)):
        return "audio contains NaN or infinite samples"
    dur = wav.size / sr
    if dur < min_duration_s:
        return f"too short ({dur:.2f} s < {min_duration_s} s)"
    if dur > max_duration_s:
        return f"too long ({dur:.1f} s > {max_duration_s} s): generation ran away"
    hop = max(1, int(0.02 * sr))
    frames = wav[: wav.size // hop * hop].reshape(-1, hop) if wav.size >= hop else wav[None, :]
    energy = np.sort((frames.astype(np.float64) ** 2).mean(axis=1))[::-1]
    top = energy[: max(1, len(energy) // 10)]
    rms_db = 10 * np.log10(top.mean() + 1e-20)
    if rms_db < min_rms_dbfs:
        return f"silent (RMS of the loudest frames {rms_db:.1f} dBFS < {min_rms_dbfs} dBFS)"
    return ""


def _per_item(value: Any, n: int, what: str) -> list:
    if value is None or isinstance(value, (str, int, np.integer, Prosody, SpeakerVoice)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{what}: got {len(value)} values for {n} texts")
    return value


class TTSBackend:
    """Base class: ``synthesize`` handles reuse, checking and writing; subclasses implement ``_generate``."""

    name = "base"
    languages: tuple[str, ...] = ("en", "ru")
    batch_size = 16

    def __init__(self, min_duration_s: float = 0.3, max_duration_s: float = 30.0, min_rms_dbfs: float = -45.0):
        self.min_duration_s, self.max_duration_s, self.min_rms_dbfs = min_duration_s, max_duration_s, min_rms_dbfs

    # -- to implement ---------------------------------------------------------------------------------------
    def _generate(self, texts: list[str], emotions: list[str | None], language: str, speakers: list,
                  **options: Any) -> list[tuple[np.ndarray, int] | Exception]:
        """One ``(waveform (N,), sample rate)`` or an ``Exception`` per text."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------------
    def check(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> str:
        return check_speech(wav, sr, self.min_duration_s, self.max_duration_s, self.min_rms_dbfs)

    def _reuse(self, path: Path) -> SynthesisResult | None:
        if not path.exists():
            return None
        try:
            wav = load_audio(path)
        except AudioError:
            return None
        if self.check(wav):
            return None
        return SynthesisResult(path, True, "", len(wav) / SAMPLE_RATE, reused=True)

    def synthesize(self, texts: Sequence[str], out_paths: Sequence[str | os.PathLike],
                   emotion: str | None | Sequence[str | None] = None, language: str = "en",
                   speakers: Any = None, overwrite: bool = False, progress: bool = False,
                   **options: Any) -> list[SynthesisResult]:
        """Speak ``texts[i]`` into ``out_paths[i]`` (16 kHz mono wav); one ``SynthesisResult`` per text.

        ``emotion`` is one class name for all texts or one per text (backends without emotion control ignore
        it); ``speakers`` likewise (a speaker index or name, backend-specific). Backend ``options`` given as a
        list with one value per text (e.g. espeak's ``prosody``) are split with the texts. Existing valid wavs
        are reused unless ``overwrite``; an existing invalid one is removed and synthesised again.
        """
        texts = [str(t) for t in texts]
        paths = [Path(p) for p in out_paths]
        if len(paths) != len(texts):
            raise ValueError(f"{self.name}: {len(texts)} texts but {len(paths)} output paths")
        if language not in self.languages:
            raise ValueError(f"TTS backend {self.name!r} does not speak {language!r}; it speaks {self.languages}")
        emotions = _per_item(emotion, len(texts), "emotion")
        for e in set(emotions) - {None}:
            if e not in CLASSES:
                raise ValueError(f"unknown emotion {e!r}; expected one of {CLASSES} or None")
        speaker_list = _per_item(speakers, len(texts), "speakers")
        results: list[SynthesisResult | None] = [None] * len(texts)
        todo: list[int] = []
        for i, p in enumerate(paths):
            reused = None if overwrite else self._reuse(p)
            if reused is not None:
                results[i] = reused
                continue
            if not texts[i].strip():
                results[i] = SynthesisResult(p, False, "empty text")
                continue
            if p.exists():
                p.unlink()
            todo.append(i)
        bar = None
        if progress and todo:
            bar = tqdm(total=len(todo), desc=f"TTS {self.name} {language}")
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            chunk_options = {k: ([v[i] for i in chunk] if isinstance(v, (list, tuple)) and len(v) == len(texts)
                                 else v) for k, v in options.items()}
            try:
                outs = self._generate([texts[i] for i in chunk], [emotions[i] for i in chunk], language,
                                      [speaker_list[i] for i in chunk], **chunk_options)
            except Exception as exc:  # a whole batch failed: report it for every item, go on
                outs = [exc] * len(chunk)
            for i, out in zip(chunk, outs):
                results[i] = self._finish(paths[i], out)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return results  # type: ignore[return-value]

    def _finish(self, path: Path, out: tuple[np.ndarray, int] | Exception) -> SynthesisResult:
        if isinstance(out, Exception):
            return SynthesisResult(path, False, f"synthesis failed: {type(out).__name__}: {out}")
        wav, sr = out
        wav = resample(np.asarray(wav, dtype=np.float32).reshape(-1), int(sr), SAMPLE_RATE)
        reason = self.check(wav)
        if reason:
            return SynthesisResult(path, False, reason)
        write_wav(path, wav, SAMPLE_RATE)
        return SynthesisResult(path, True, "", len(wav) / SAMPLE_RATE)


# ----------------------------------------------------------------------------------------------------------
# espeak-ng
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prosody:
    """espeak-ng prosody: pitch 0-99 (``-p``), pitch range in % of the voice's (SSML), rate in words per minute
    (``-s``), amplitude 0-100 (``-a``; above 100 clips), word gap in 10 ms units (``-g``)."""

    pitch: float = 50.0
    range_pct: float = 100.0
    rate: float = 165.0
    amplitude: float = 70.0
    word_gap: float = 0.0

    def clipped(self) -> "Prosody":
        return Prosody(float(np.clip(self.pitch, 0, 99)), float(np.clip(self.range_pct, 10, 400)),
                       float(np.clip(self.rate, 80, 450)), float(np.clip(self.amplitude, 5, 100)),
                       float(np.clip(self.word_gap, 0, 20)))

    def jittered(self, rng: np.random.Generator, amount: float = 1.0) -> "Prosody":
        """A small random variation (``amount`` 1 = pitch +-4, range +-10 %, rate +-6 %, amplitude +-6)."""
        u = rng.uniform(-1, 1, size=4) * amount
        return replace(self, pitch=self.pitch + 4 * u[0], range_pct=self.range_pct * (1 + 0.1 * u[1]),
                       rate=self.rate * (1 + 0.06 * u[2]), amplitude=self.amplitude + 6 * u[3]).clipped()


@dataclass(frozen=True)
class SpeakerVoice:
    """A speaker: an espeak-ng voice variant plus offsets applied on top of any emotion's prosody."""

    name: str
    variant: str
    pitch_shift: float = 0.0
    rate_factor: float = 1.0
    range_factor: float = 1.0

    def apply(self, p: Prosody) -> Prosody:
        return replace(p, pitch=p.pitch + self.pitch_shift, rate=p.rate * self.rate_factor,
                       range_pct=p.range_pct * self.range_factor).clipped()


# Emotional prosody. By design anger and happy are both loud and fast, sad and disgust both low and slow;
# surprise has the widest pitch range, fear is high, fast, quiet and flat.
EMOTION_PROSODY: dict[str, Prosody] = {
    "neutral": Prosody(pitch=48, range_pct=90, rate=160, amplitude=70, word_gap=0),
    "happy": Prosody(pitch=64, range_pct=180, rate=200, amplitude=95, word_gap=0),
    "anger": Prosody(pitch=58, range_pct=160, rate=210, amplitude=100, word_gap=0),
    "sad": Prosody(pitch=34, range_pct=45, rate=125, amplitude=55, word_gap=3),
    "disgust": Prosody(pitch=38, range_pct=60, rate=132, amplitude=62, word_gap=2),
    "surprise": Prosody(pitch=74, range_pct=240, rate=175, amplitude=88, word_gap=0),
    "fear": Prosody(pitch=66, range_pct=40, rate=220, amplitude=50, word_gap=0),
}

ESPEAK_VOICES: dict[str, str] = {"en": "en-us", "ru": "ru"}

SPEAKERS: dict[str, tuple[SpeakerVoice, ...]] = {
    "en": (
        SpeakerVoice("Avery", "m3", pitch_shift=-4, rate_factor=1.00),
        SpeakerVoice("Blake", "f2", pitch_shift=+6, rate_factor=1.05, range_factor=1.1),
        SpeakerVoice("Casey", "m7", pitch_shift=-8, rate_factor=0.94),
        SpeakerVoice("Dana", "f4", pitch_shift=+2, rate_factor=0.97, range_factor=0.9),
        SpeakerVoice("Emery", "m1", pitch_shift=+2, rate_factor=1.08),
        SpeakerVoice("Finley", "f1", pitch_shift=+9, rate_factor=1.02, range_factor=1.2),
    ),
    "ru": (
        SpeakerVoice("01", "m2", pitch_shift=-5, rate_factor=1.00),
        SpeakerVoice("02", "f3", pitch_shift=+6, rate_factor=1.04, range_factor=1.1),
        SpeakerVoice("03", "m4", pitch_shift=-9, rate_factor=0.95),
        SpeakerVoice("04", "f5", pitch_shift=+3, rate_factor=0.98, range_factor=0.9),
        SpeakerVoice("05", "m6", pitch_shift=+1, rate_factor=1.07),
    ),
}


def _speaker(language: str, speaker: Any) -> SpeakerVoice:
    voices = SPEAKERS[language]
    if speaker is None:
        return voices[0]
    if isinstance(speaker, SpeakerVoice):
        return speaker
    if isinstance(speaker, (int, np.integer)):
        return voices[int(speaker) % len(voices)]
    for v in voices:
        if v.name == str(speaker):
            return v
    raise ValueError(f"unknown {language} speaker {speaker!r}; known: {[v.name for v in voices]} or an index")


def _parse_wav_stream(data: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng's ``--stdout`` wav (its header sizes may be placeholders): -> float32 (N,), sample rate."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng returned no wav data")
    sr = int.from_bytes(data[24:28], "little")
    k = data.find(b"data", 12)
    if k < 0:
        raise RuntimeError("espeak-ng returned a wav without a data chunk")
    pcm = data[k + 8:]
    pcm = pcm[: len(pcm) // 2 * 2]
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, sr


def espeak_ssml(text: str, prosody: Prosody, tags: str = "pause") -> str:
    """The SSML document espeak-ng speaks: the pitch range as ``<prosody range>``, DIA tags as 250 ms breaks
    (``tags="pause"``) or dropped (``"remove"``)."""
    if tags == "pause":
        pieces = [escape(piece) for piece in split_on_tags(text)]
        body = ' <break time="250ms"/> '.join(p for p in pieces if p)
    elif tags == "remove":
        body = escape(strip_tags(text))
    else:
        raise ValueError(f"tags must be 'pause' or 'remove', not {tags!r}")
    rng = f"{prosody.range_pct - 100:+.0f}%"
    return f'<speak><prosody range="{rng}">{body}</prosody></speak>'


class EspeakBackend(TTSBackend):
    """espeak-ng, offline: emotion -> ``EMOTION_PROSODY``, speaker -> ``SPEAKERS[language]``.

    ``synthesize(..., prosody=[Prosody, ...])`` overrides the emotion's prosody per item (the speaker's offsets
    are still applied); ``jitter`` > 0 adds a small seeded variation per item (from ``seed`` and the text).
    """

    name = "espeak"
    batch_size = 64

    def __init__(self, workers: int = 2, tags: str = "pause", jitter: float = 0.0, seed: int = 0,
                 executable: str = "espeak-ng", **check_kw: Any):
        super().__init__(**check_kw)
        self.workers, self.tags, self.jitter, self.seed = max(1, int(workers)), tags, float(jitter), int(seed)
        self.executable = shutil.which(executable) or executable
        if shutil.which(self.executable) is None:
            raise RuntimeError(f"{executable} not found: install it (apt-get install espeak-ng, or conda-forge "
                               f"espeak-ng) or choose another TTS backend (mms, dia)")

    def command(self, language: str, voice: SpeakerVoice, p: Prosody) -> list[str]:
        return [self.executable, "-v", f"{ESPEAK_VOICES[language]}+{voice.variant}", "-m", "--stdin", "--stdout",
                "-p", str(int(round(p.pitch))), "-s", str(int(round(p.rate))), "-a", str(int(round(p.amplitude))),
                "-g", str(int(round(p.word_gap)))]

    def _one(self, text: str, language: str, voice: SpeakerVoice, p: Prosody) -> tuple[np.ndarray, int]:
        proc = subprocess.run(self.command(language, voice, p), input=espeak_ssml(text, p, self.tags).encode("utf-8"),
                              capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}")
        return _parse_wav_stream(proc.stdout)

    def _generate(self, texts, emotions, language, speakers, prosody: Any = None, **options):
        if options:
            raise TypeError(f"espeak backend: unknown options {sorted(options)}")
        prosodies = _per_item(prosody, len(texts), "prosody")
        jobs = []
        for text, emo, spk, pro in zip(texts, emotions, speakers, prosodies):
            base = pro if pro is not None else EMOTION_PROSODY[emo or "neutral"]
            if self.jitter > 0:
                rng = np.random.default_rng([abs(self.seed), zlib.crc32(text.encode("utf-8"))])
                base = base.jittered(rng, self.jitter)
            voice = _speaker(language, spk)
            jobs.append((text, language, voice, voice.apply(base)))

        def run(job):
            try:
                return self._one(*job)
            except Exception as exc:
                return exc

        if self.workers == 1 or len(jobs) == 1:
            return [run(j) for j in jobs]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(run, jobs))


# ----------------------------------------------------------------------------------------------------------
# transformers backends
# ----------------------------------------------------------------------------------------------------------

def _torch_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class MMSBackend(TTSBackend):
    """MMS-TTS (VITS) through transformers: ``VitsModel`` + its tokenizer, by hub id or local folder.

    ``model`` is one id/path or ``{"en": ..., "ru": ...}``; default ``MMS_MODELS``. VITS has no emotion input;
    with ``emotion_rate`` the emotion sets the speaking rate (the ratio of its espeak rate to neutral's: sad
    slower, anger faster), else the emotion is ignored. Tags are removed. Each item is generated with
    ``torch.manual_seed(seed)``, so the same text gives the same audio whatever the batch.
    """

    name = "mms"
    batch_size = 8
    MMS_MODELS = {"en": "facebook/mms-tts-eng", "ru": "facebook/mms-tts-rus"}

    def __init__(self, model: str | os.PathLike | dict | None = None, device: str = "cpu", seed: int = 0,
                 emotion_rate: bool = True, **check_kw: Any):
        super().__init__(**check_kw)
        self.emotion_rate = bool(emotion_rate)
        if model is None:
            self.models = dict(self.MMS_MODELS)
        elif isinstance(model, dict):
            self.models = {k: str(v) for k, v in model.items()}
        else:
            self.models = {lang: str(model) for lang in self.languages}
        self.device, self.seed = _torch_device(device), int(seed)
        self._loaded: dict[str, tuple[Any, Any]] = {}

    def _load(self, language: str):
        if language not in self._loaded:
            from transformers import AutoTokenizer, VitsModel

            ref = self.models.get(language)
            if ref is None:
                raise ValueError(f"mms: no model given for language {language!r}")
            try:
                tok = AutoTokenizer.from_pretrained(ref)
                model = VitsModel.from_pretrained(ref).to(self.device).eval()
            except OSError as exc:
                raise RuntimeError(f"mms: cannot load {ref!r} (a hub id needs the network; or give a local "
                                   f"folder): {exc}") from exc
            self._loaded[language] = (tok, model)
        return self._loaded[language]

    def _generate(self, texts, emotions, language, speakers, **options):
        import torch

        tok, model = self._load(language)
        if getattr(tok, "is_uroman", False):
            try:
                import uroman  # noqa: F401
            except ImportError:
                return [RuntimeError(f"{self.models[language]} needs romanised input: pip install uroman")] * len(texts)
        outs: list = []
        for text, emotion in zip(texts, emotions):
            kw = dict(options)
            if self.emotion_rate and emotion and "speaking_rate" not in kw:
                kw["speaking_rate"] = EMOTION_PROSODY[emotion].rate / EMOTION_PROSODY["neutral"].rate
            try:
                text = strip_tags(text)
                if getattr(tok, "is_uroman", False):
                    import uroman
                    text = uroman.Uroman().romanize_string(text)
                inputs = tok(text, return_tensors="pt").to(self.device)
                if inputs["input_ids"].shape[-1] == 0:
                    raise ValueError("no character of the text is in the model's vocabulary")
                torch.manual_seed(self.seed)
                with torch.inference_mode():
                    wav = model(**inputs, **kw).waveform[0]
                outs.append((wav.float().cpu().numpy(), int(model.config.sampling_rate)))
            except Exception as exc:
                outs.append(exc)
        return outs


class DiaBackend(TTSBackend):
    """Dia through transformers (``DiaForConditionalGeneration`` + ``DiaProcessor``), English only.

    The text is prefixed with a fixed speaker tag (``[S1]``) so the voice does not change from clip to clip,
    inline nonverbal tags such as ``(laughs)`` are kept, and every batch is generated after
    ``torch.manual_seed(seed)``. ``codec`` (a DAC hub id or folder) builds the processor from its parts when the
    model folder does not name its audio codec. The processor decodes at 44.1 kHz; the output is resampled to
    16 kHz.
    """

    name = "dia"
    languages = ("en",)
    DIA_MODEL = "nari-labs/Dia-1.6B-0626"

    def __init__(self, model: str | os.PathLike | None = None, codec: str | os.PathLike | None = None,
                 device: str = "cpu", seed: int = 0, speaker_tag: str = "[S1]", batch_size: int = 4,
                 max_new_tokens: int | None = None, guidance_scale: float = 3.0, temperature: float = 1.8,
                 top_p: float = 0.90, top_k: int = 45, **check_kw: Any):
        super().__init__(**check_kw)
        self.model_ref = str(model or self.DIA_MODEL)
        self.codec = None if codec is None else str(codec)
        self.device, self.seed, self.speaker_tag = _torch_device(device), int(seed), speaker_tag
        self.batch_size = int(batch_size)
        self.generate_kw = {"do_sample": True, "guidance_scale": guidance_scale, "temperature": temperature,
                            "top_p": top_p, "top_k": top_k}
        if max_new_tokens is not None:
            self.generate_kw["max_new_tokens"] = int(max_new_tokens)
        self._model = self._processor = None

    def _load(self):
        if self._model is None:
            from transformers import (AutoFeatureExtractor, AutoTokenizer, DacModel, DiaForConditionalGeneration,
                                      DiaProcessor)

            try:
                if self.codec is None:
                    processor = DiaProcessor.from_pretrained(self.model_ref)
                else:
                    processor = DiaProcessor(feature_extractor=AutoFeatureExtractor.from_pretrained(self.model_ref),
                                             tokenizer=AutoTokenizer.from_pretrained(self.model_ref),
                                             audio_tokenizer=DacModel.from_pretrained(self.codec).eval())
                model = DiaForConditionalGeneration.from_pretrained(self.model_ref).to(self.device).eval()
            except OSError as exc:
                raise RuntimeError(f"dia: cannot load {self.model_ref!r} (codec {self.codec!r}); a hub id needs the "
                                   f"network, or give local folders (model=..., codec=...): {exc}") from exc
            processor.audio_tokenizer.to(self.device)
            self._model, self._processor = model, processor
        return self._model, self._processor

    def prompt(self, text: str) -> str:
        text = clean_utterance(text)
        return text if text.startswith("[S") else f"{self.speaker_tag} {text}"

    def _generate(self, texts, emotions, language, speakers, **options):
        import torch

        model, processor = self._load()
        with warnings.catch_warnings():  # the processor's own max_length default makes the tokenizer warn
            warnings.filterwarnings("ignore", message=".*max_length.*is ignored when.*padding")
            inputs = processor(text=[self.prompt(t) for t in texts], padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            codes = model.generate(**inputs, **{**self.generate_kw, **options})
        audios = processor.batch_decode(codes)
        sr = int(processor.feature_extractor.sampling_rate)
        return [(a.float().cpu().numpy(), sr) for a in audios]


def build_tts(name: str, **kw: Any) -> TTSBackend:
    """``"espeak"`` | ``"mms"`` | ``"dia"`` -> a backend; ``kw`` go to its constructor (e.g. ``model=``)."""
    backends = {"espeak": EspeakBackend, "mms": MMSBackend, "dia": DiaBackend}
    if name not in backends:
        raise ValueError(f"unknown TTS backend {name!r}; choose one of {TTS_NAMES}")
    return backends[name](**kw)
