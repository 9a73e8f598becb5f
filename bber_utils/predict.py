"""Inference: emotions of audio files, with or without a transcript (``bber predict``, notebook 09).

For each clip: the audio-only, text-only and fused probabilities over the seven classes and the top label.
A bimodal checkpoint carries its two unimodal encoder-classifiers, so all three come from one model: the
encoders' own heads give the unimodal probabilities, the fusion gives the fused ones. When no transcript is
given, an ASR model (Whisper) writes one and detects the language.

Bad input never stops a batch: an unreadable, empty or too short clip gets a row with its ``error`` and the
other clips are still scored; the command's exit status says whether anything failed.

Long recordings: the models were trained on utterances of a few seconds and memory grows with the length, so a
clip longer than ``LONG_SECONDS`` (60 s) gets a warning. ``window_s`` (``--window SECONDS``) scores it in
consecutive windows instead: each window's probabilities are kept (``extra["windows"]``, ``--json``) and the
clip's probabilities are their mean, weighted by window length. Every window gets the clip's transcript when one
is given, else its own ASR transcript.

Dialogue context: a model trained with ``text_context: k`` reads the previous turns of the clip's dialogue before
its transcript, as in training (``bber_utils.context``): ``--context TURN`` (repeatable, oldest first; every clip),
a CSV ``context`` column (one turn, or a JSON list of turns) or ``Predictor.predict(..., contexts=)``; the last k
are used, and none is needed.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted
file cannot run code on load. The settings stored in a checkpoint are data, checked before use; remote code of
its text encoder runs only with ``--trust-remote-code`` (``trust_remote_code=True``), never because the file
asks for it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .labels import CLASSES
from .paths import REPO_ROOT

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".aac", ".opus", ".webm", ".aiff", ".aif"}
MIN_SECONDS = 0.1
LONG_SECONDS = 60.0  # longer clips get a warning (and --window is suggested)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or of another model configuration."""


@dataclass
class Prediction:
    path: str
    text: str = ""
    language: str = ""
    label: str | None = None
    fused: list[float] | None = None
    audio: list[float] | None = None
    text_probs: list[float] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    context: list[str] = field(default_factory=list)  # previous turns of the dialogue, oldest first

    def as_row(self) -> dict[str, Any]:
        """A flat row: path, text, language, label, error and ``{fused,audio,text}_{class}`` probabilities."""
        row = {"path": self.path, "text": self.text, "language": self.language, "label": self.label,
               "error": self.error}
        for name, probs in (("fused", self.fused), ("audio", self.audio), ("text", self.text_probs)):
            for c, p in zip(CLASSES, probs if probs is not None else [None] * len(CLASSES)):
                row[f"{name}_{c}"] = p
        return row


# ------------------------------------------------------------------------------------------ checkpoints

def find_checkpoint(spec: str | os.PathLike | None = None, workdir: str | os.PathLike = "runs/demo") -> Path:
    """Resolve ``spec`` (a ``.pt`` file or a run folder holding ``best.pt``); with no spec, the newest
    ``best.pt`` of a bimodal run under ``<workdir>/train`` (else of any run). Raises ``CheckpointError``."""
    if spec:
        p = Path(spec)
        if p.is_dir():
            p = p / "best.pt"
        if not p.exists():
            raise CheckpointError(f"checkpoint not found: {p}")
        return p
    root = Path(workdir)  # read only: no folder is created under a workdir that has none
    train_dir = (root if root.is_absolute() else REPO_ROOT / root) / "train"
    found = sorted((p for p in train_dir.glob("*/best.pt") if not p.parent.name.startswith("_")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise CheckpointError(
            f"no trained model under {train_dir}. Train one first: `make reproduce` (the demo profile) or "
            f"`bber train --config configs/demo.yaml`, or pass --checkpoint PATH.")
    bimodal = [p for p in found if not p.parent.name.startswith(("audio_only", "text_only"))]
    return (bimodal or found)[0]


def _int_at_least(lo: int):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v >= lo


# What a checkpoint may store about how its inputs were made (bber_utils.train.feature_spec): key -> (what the
# value must be, its check). None is always allowed (the default).
STORED_SETTINGS = {
    "audio_encoder": ("a built-in encoder, folder or owner/name hub id", lambda v: isinstance(v, str)),
    "text_encoder": ("a built-in encoder, folder or owner/name hub id", lambda v: isinstance(v, str)),
    "audio_layer": ("an integer", _int_at_least(-1000)),
    "text_max_tokens": ("an integer >= 1", _int_at_least(1)),
    "text_trust_remote_code": ("true or false", lambda v: isinstance(v, bool)),
    "text_code_revision": ("a commit, tag or branch name",
                           lambda v: isinstance(v, str) and re.fullmatch(r"[\w.\-/]{1,100}", v) is not None),
    "audio_pool": ("an integer >= 1", _int_at_least(1)),
    "text_context": ("an integer >= 0", _int_at_least(0)),
    "text_context_mode": ("'steps' or 'mean'", lambda v: v in ("steps", "mean")),
}


def stored_settings(state: dict, checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The input settings a checkpoint stores (``features``, else the same keys of ``config``), checked as data:
    known keys, types and ranges, encoder specs (``errors.check_model_spec``). -> every key of
    ``STORED_SETTINGS`` (None where not stored). ``text_trust_remote_code`` is only what the file asks for:
    ``checkpoint_encoders`` grants it only when the user does. Raises ``CheckpointError`` (one line)."""
    from .errors import ConfigError, check_model_spec
    from .features.text_encoders import OFFLINE_TEXT_ENCODERS

    features, config = state.get("features") or {}, state.get("config") or {}
    if not isinstance(features, dict) or not isinstance(config, dict):
        raise CheckpointError(f"{checkpoint}: its stored settings (features, config) are not key-value maps")
    extra = sorted(str(k) for k in features if k not in STORED_SETTINGS)
    if extra:
        raise CheckpointError(f"{checkpoint}: unknown stored feature setting(s) {extra}; a checkpoint may store "
                              f"{sorted(STORED_SETTINGS)}")
    spec = {k: features.get(k, config.get(k)) for k in STORED_SETTINGS}
    for key, (what, ok) in STORED_SETTINGS.items():
        if spec[key] is not None and not ok(spec[key]):
            raise CheckpointError(f"{checkpoint}: stored setting {key}={spec[key]!r:.80} is not {what}")
    try:
        check_model_spec(spec["audio_encoder"], ("logmel",), "audio encoder")
        check_model_spec(spec["text_encoder"], OFFLINE_TEXT_ENCODERS, "text encoder")
    except ConfigError as exc:
        raise CheckpointError(f"{checkpoint}: its stored {exc}") from None
    return spec


def load_model(checkpoint: str | os.PathLike, device: str = "cpu"):
    """(model in eval mode, meta) from a trainer checkpoint (or a run folder's ``best.pt``), on ``device``; checks
    the configuration and the stored settings (``meta["settings"]``, see ``stored_settings``). Runs no code from
    the file or its settings."""
    import torch

    from .models import MODEL_NAMES, build_model
    from .models.config import ModelConfig

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():  # a run folder
        checkpoint = checkpoint / "best.pt"
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # no code runs from the file
    except Exception as exc:  # a truncated or foreign file, or one holding objects other than weights
        raise CheckpointError(f"{checkpoint}: not a readable checkpoint ({_load_failure(exc, checkpoint)})") from exc
    if not isinstance(state, dict) or "model" not in state or "model_name" not in state:
        raise CheckpointError(f"{checkpoint}: not a BBER training checkpoint (no model / model_name)")
    name = state["model_name"]
    if name not in MODEL_NAMES:
        raise CheckpointError(f"{checkpoint}: unknown model {name!r:.80}")
    settings = stored_settings(state, checkpoint)
    cfg = ModelConfig.from_dict(state.get("model_config", {}))
    d_in = state.get("d_in")
    d_audio = state.get("d_audio", d_in if name == "audio_only" else 1)
    d_text = state.get("d_text", d_in if name == "text_only" else 1)
    model = build_model(name, cfg, int(d_audio), int(d_text))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint}: weights do not fit a {name} of the stored configuration "
                              f"({str(exc).splitlines()[0]})") from exc
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
    meta.setdefault("config", {})
    meta["settings"] = settings
    return model.to(device).eval(), meta


def _load_failure(exc: Exception, path: Path) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in one short line."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds Python objects besides weights ({found.group(1)}), and loading them could run code"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # a zip (torch.save) or a legacy pickle
        return "not a PyTorch checkpoint: the file is of another kind"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"truncated or damaged: {first[:120]}"


def checkpoint_encoders(checkpoint: str | os.PathLike, settings: dict[str, Any], trust_remote_code: bool = False,
                        text_code_revision: str | None = None) -> tuple[object, object]:
    """The (audio, text) encoders a checkpoint was trained with, from its checked ``settings``.

    Remote code is the user's decision, never the file's: a stored ``text_trust_remote_code: true`` is refused
    (``CheckpointError``, one line naming the model and how to allow it) unless ``trust_remote_code``;
    ``text_code_revision`` (the user's pin) replaces the stored one."""
    from .features.extract import encoders_from_params
    from .features.text_encoders import OFFLINE_TEXT_ENCODERS

    spec = dict(settings)
    model = spec.get("text_encoder")
    asks = bool(spec.get("text_trust_remote_code")) and model not in (None, *OFFLINE_TEXT_ENCODERS)
    revision = text_code_revision or spec.get("text_code_revision")
    if asks and not trust_remote_code:
        local = Path(os.path.expanduser(str(model))).is_dir()
        pin = ("the code in that folder would run" if local else
               f"its code is pinned to revision {revision}" if revision else
               "pin its code with --text-code-revision COMMIT")
        raise CheckpointError(
            f"{checkpoint}: its text encoder {model!r} runs code of its own, and a checkpoint cannot allow that "
            f"(text_trust_remote_code in its stored settings): only if you trust {model!r}, rerun with "
            f"--trust-remote-code (Python: trust_remote_code=True); {pin}")
    spec.update(text_trust_remote_code=asks, text_code_revision=revision)
    try:
        return encoders_from_params(spec)
    except ValueError as exc:
        raise CheckpointError(f"{checkpoint}: its stored encoder settings: {str(exc).splitlines()[0]}") from None


# ------------------------------------------------------------------------------------------- predictor

class Predictor:
    """Scores audio clips with a trained checkpoint: ``Predictor(ckpt).predict(paths, texts)``.

    ``trust_remote_code``: allow the text encoder's own code when the checkpoint was trained with one that needs
    it (the user's decision: a checkpoint's settings never grant it); ``text_code_revision`` pins that code."""

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto", asr: str | None = None,
                 batch_size: int = 16, trust_remote_code: bool = False, text_code_revision: str | None = None):
        from .device import resolve_device

        self.device = resolve_device(device)
        self.checkpoint = Path(checkpoint)
        self.model, self.meta = load_model(self.checkpoint, str(self.device))
        self.name = self.meta["model_name"]
        self.asr_spec, self._asr = asr, None
        self.batch_size = int(batch_size)
        # the same encoders (and store keys), frame pooling and dialogue context the run was trained with
        settings = self.meta["settings"]
        self.audio_encoder, self.text_encoder = checkpoint_encoders(self.checkpoint, settings, trust_remote_code,
                                                                    text_code_revision)
        self.audio_pool = int(settings["audio_pool"] or 1)
        self.context_k = int(settings["text_context"] or 0)
        self.context_mode = settings["text_context_mode"] or "steps"
        checks = {"audio_only": ("audio",), "text_only": ("text",)}.get(self.name, ("audio", "text"))
        for what in checks:
            want = self.meta.get(f"d_{what}", self.meta.get("d_in"))
            dim = self._encoder_dim(what)
            if what == "text" and dim and self.context_k:
                dim = int(dim) + 1  # the context flag column (bber_utils.context)
            if want and dim and int(dim) != int(want):
                raise CheckpointError(f"{self.checkpoint}: the model expects {what} features of width {want} "
                                      f"but its {what} encoder gives {dim}")

    def _encoder_dim(self, what: str) -> int | None:
        encoder = self.audio_encoder if what == "audio" else self.text_encoder
        try:
            return getattr(encoder, "dim", None)
        except Exception as exc:  # a model folder or hub id that cannot be read (or needs code not allowed)
            reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise CheckpointError(f"{self.checkpoint}: cannot load its {what} encoder "
                                  f"{getattr(encoder, 'model_spec', what)!r} ({reason[:160]})") from exc

    @property
    def uses_text(self) -> bool:
        return self.name != "audio_only"

    def _transcribe(self, wavs: list[np.ndarray]) -> list[tuple[str, str]]:
        if self._asr is None:
            if not self.asr_spec:
                raise ValueError("no transcript given and no ASR model configured: pass --text, a CSV with a "
                                 "text column, or --asr MODEL (a Whisper hub id or local folder)")
            from .features import build_asr

            self._asr = build_asr(self.asr_spec)
        return self._asr.transcribe(wavs)

    def predict(self, paths: Iterable[str | os.PathLike], texts: Iterable[str | None] | None = None,
                language: str = "auto", progress: bool = False, window_s: float | None = None,
                contexts: Iterable[Iterable[str] | str | None] | None = None) -> list[Prediction]:
        """One ``Prediction`` per path, in order; failures are recorded in ``error``. ``window_s``: clips longer
        than that are scored in windows of ``window_s`` seconds (see the module docstring). ``contexts[i]``: the
        previous turns of clip i's dialogue, oldest first (a string is one turn); a model trained with
        ``text_context: k`` reads the last k, another model none (with a warning)."""
        from bber_utils.progress import tqdm

        from .audio import AudioError, load_audio

        paths = [str(p) for p in paths]
        texts = list(texts) if texts is not None else [None] * len(paths)
        contexts = [[c] if isinstance(c, str) else list(c or []) for c in contexts] if contexts is not None \
            else [[] for _ in paths]
        if len(texts) != len(paths) or len(contexts) != len(paths):
            raise ValueError(f"{len(paths)} clips but {len(texts)} transcripts and {len(contexts)} contexts")
        check_window(window_s)
        if any(contexts) and not self.context_k and self.uses_text:
            warnings.warn(f"{self.checkpoint}: this model was trained without dialogue context (text_context: 0); "
                          f"the previous turns given are not used", stacklevel=2)
        preds = [Prediction(path=p, text=t or "", language="" if language == "auto" else language, context=c)
                 for p, t, c in zip(paths, texts, contexts)]
        # (row to fill, waveform, parent index, window start s); a window row is a child of its clip
        good: list[tuple[Prediction, np.ndarray, int, float | None]] = []
        for i, pred in enumerate(preds):
            try:
                wav = load_audio(pred.path)
                if len(wav) < MIN_SECONDS * 16000:
                    raise AudioError(pred.path, f"too short ({len(wav) / 16000:.3f} s < {MIN_SECONDS} s)")
            except AudioError as exc:
                pred.error = exc.reason
                continue
            seconds = len(wav) / 16000
            if window_s and seconds > window_s:
                step = int(window_s * 16000)
                for start in range(0, len(wav), step):
                    piece = wav[start:start + step]
                    if len(piece) >= MIN_SECONDS * 16000:
                        good.append((Prediction(path=pred.path, text=pred.text, language=pred.language,
                                                context=pred.context), piece, i, start / 16000))
                continue
            if seconds > LONG_SECONDS:
                warnings.warn(f"{pred.path}: {seconds:.0f} s long (> {LONG_SECONDS:g} s); the models were trained "
                              f"on utterances of a few seconds and memory grows with length: consider --window 10",
                              stacklevel=2)
            good.append((pred, wav, i, None))
        for start in tqdm(range(0, len(good), self.batch_size), desc="predict", disable=not progress):
            chunk = good[start:start + self.batch_size]
            try:
                self._predict_chunk([p for p, *_ in chunk], [w for _, w, *_ in chunk])
            except ValueError as exc:  # e.g. no transcript and no ASR
                for p, _, i, _ in chunk:
                    p.error = preds[i].error = str(exc)
        windows: dict[int, list[tuple[Prediction, float, float]]] = {}
        for p, w, i, t0 in good:
            if t0 is not None:
                windows.setdefault(i, []).append((p, t0, len(w) / 16000))
        for i, parts in windows.items():
            _merge_windows(preds[i], parts)
        return preds

    def _predict_chunk(self, preds: list[Prediction], wavs: list[np.ndarray]) -> None:
        import torch

        from .data import pad_sequences, pool_frames

        missing = [k for k, p in enumerate(preds) if self.uses_text and not p.text.strip()]
        if missing:
            for k, (text, lang) in zip(missing, self._transcribe([wavs[k] for k in missing])):
                preds[k].text, preds[k].extra["asr"] = text, True
                if not preds[k].language:
                    preds[k].language = lang
        batch: dict[str, Any] = {}
        frames = [pool_frames(np.asarray(x, dtype=np.float32), self.audio_pool) for x in self.audio_encoder.encode(wavs)]
        audio, batch["audio_mask"] = pad_sequences(frames)
        text, batch["text_mask"] = pad_sequences(text_features(self.text_encoder, [p.text for p in preds],
                                                               [p.context for p in preds], self.context_k,
                                                               self.context_mode))
        batch["audio"], batch["text"] = audio.float(), text.float()
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.no_grad():
            fused = torch.softmax(self.model(batch).float(), -1).cpu().numpy()
            uni = {}
            if hasattr(self.model, "encode"):
                enc = self.model.encode(batch)
                uni = {m: torch.softmax(enc[f"{m}_logits"].float(), -1).cpu().numpy() for m in ("audio", "text")}
        for k, p in enumerate(preds):
            p.fused = fused[k].round(6).tolist()
            p.label = CLASSES[int(fused[k].argmax())]
            if self.name == "audio_only":
                p.audio = p.fused
            elif self.name == "text_only":
                p.text_probs = p.fused
            if "audio" in uni:
                p.audio, p.text_probs = uni["audio"][k].round(6).tolist(), uni["text"][k].round(6).tolist()


def check_window(window_s: float | None) -> None:
    """``ValueError`` unless ``window_s`` is None or a finite number of seconds >= 1 (nan and inf are refused)."""
    if window_s is not None and not (isinstance(window_s, (int, float)) and math.isfinite(window_s)
                                     and window_s >= 1.0):
        raise ValueError(f"--window must be a finite number of seconds >= 1 (got {window_s})")


def _merge_windows(pred: Prediction, parts: list[tuple[Prediction, float, float]]) -> None:
    """Fill ``pred`` from its windows: the length-weighted mean of their probabilities, and each window's."""
    ok = [(p, t0, d) for p, t0, d in parts if p.fused is not None]
    pred.extra["windows"] = [{"start_s": round(t0, 3), "end_s": round(t0 + d, 3), "label": p.label,
                              "fused": p.fused, "error": p.error} for p, t0, d in parts]
    if not ok:
        pred.error = pred.error or next((p.error for p, *_ in parts if p.error), "no window could be scored")
        return
    weights = np.array([d for _, _, d in ok])
    for attr in ("fused", "audio", "text_probs"):
        vals = [getattr(p, attr) for p, *_ in ok]
        if all(v is not None for v in vals):
            setattr(pred, attr, (np.average(np.array(vals), axis=0, weights=weights)).round(6).tolist())
    pred.label = CLASSES[int(np.argmax(pred.fused))]
    if not pred.text.strip():
        pred.text = " ".join(p.text for p, *_ in ok if p.text).strip()
        pred.language = pred.language or ok[0][0].language
        pred.extra["asr"] = True


# ------------------------------------------------------------------------------------------ input lists

def collect_inputs(items: Iterable[str | os.PathLike]) -> tuple[list[str], list[str | None]]:
    """(paths, transcripts) of ``collect_clips``."""
    paths, texts, _ = collect_clips(items)
    return paths, texts


def collect_clips(items: Iterable[str | os.PathLike]) -> tuple[list[str], list[str | None], list[list[str]]]:
    """Expand folders (audio files inside, sorted) and CSVs (a ``path`` column, optional ``text`` and
    ``context``: the previous turn, or a JSON list of previous turns oldest first; relative paths are taken
    from the CSV's folder) into (paths, transcripts, contexts). ``ValueError`` (one line) for an empty path, a
    folder without audio files or a CSV without a ``path`` column."""
    paths: list[str] = []
    texts: list[str | None] = []
    contexts: list[list[str]] = []
    for item in items:
        if not str(item).strip():
            raise ValueError(f"an empty path ({str(item)!r}) was given: name audio files, folders or CSVs")
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise ValueError(f"{p}: no audio files in this folder (looked for "
                                 f"{', '.join(sorted(AUDIO_SUFFIXES))})")
            paths += [str(q) for q in found]
            texts += [None] * len(found)
            contexts += [[] for _ in found]
        elif p.suffix.lower() == ".csv":
            for path, text, context in _csv_clips(p):
                paths.append(path)
                texts.append(text)
                contexts.append(context)
        else:
            paths.append(str(p))
            texts.append(None)
            contexts.append([])
    return paths, texts, contexts


def _csv_clips(csv: Path) -> list[tuple[str, str | None, list[str]]]:
    """(path, transcript or None, previous turns) of each row of a CSV of clips."""
    import pandas as pd

    df = pd.read_csv(csv, keep_default_na=False, dtype=str)
    if "path" not in df.columns:
        raise ValueError(f"{csv}: a CSV of clips needs a 'path' column (found {list(df.columns)})")
    out = []
    for i, row in enumerate(df.to_dict("records"), start=2):  # row 1 is the header
        q = Path(row["path"])
        text = row.get("text", "")
        out.append((str(q if q.is_absolute() else csv.parent / q), text if text.strip() else None,
                    _context_cell(row.get("context", ""), f"{csv}: row {i}")))
    return out


def _context_cell(cell: str, where: str) -> list[str]:
    """A CSV ``context`` cell: ``""`` (none), a JSON list of turns oldest first, or else one turn (so a turn such
    as ``[laughs] fine`` stays one turn). ``ValueError`` for a JSON list holding something other than text."""
    if not cell.strip():
        return []
    try:
        turns = json.loads(cell) if cell.lstrip().startswith("[") else None
    except json.JSONDecodeError:
        turns = None
    if not isinstance(turns, list):
        return [cell]
    if not all(isinstance(t, str) for t in turns):
        raise ValueError(f"{where}: context {cell[:60]!r} is a JSON list but not of texts (one previous turn, "
                         f"or [\"older turn\", \"previous turn\"])")
    return turns


def manifest_contexts(df, k: int) -> list[list[str]]:
    """Each manifest row's previous turns (texts, oldest first, at most ``k``; ``bber_utils.context``)."""
    from .context import context_map

    previous = context_map(df, int(k))
    text_of = dict(zip(df["utt_id"].astype(str), df["text"].astype(str)))
    return [[text_of[c] for c in previous.get(str(u), [])] for u in df["utt_id"]]


def predictions_table(preds: list[Prediction]):
    import pandas as pd

    return pd.DataFrame([p.as_row() for p in preds])


# ------------------------------------------------------------------------------------------------- cli

def predict_texts(checkpoint: str | os.PathLike, texts: list[str], contexts: list[list[str]] | None = None,
                  device: str = "auto", batch_size: int = 64, trust_remote_code: bool = False,
                  text_code_revision: str | None = None):
    """Text-only inference, no audio: a ``text_only`` checkpoint's probabilities for each transcript.

    ``contexts[i]``: the previous utterances of text i's dialogue, oldest first (used when the run was trained
    with ``text_context: k``; only the last k are read). ``trust_remote_code`` / ``text_code_revision``: as for
    ``Predictor``. Returns a DataFrame ``text, label, {class}...``.
    """
    import pandas as pd
    import torch

    from .data import pad_sequences
    from .device import resolve_device

    dev = resolve_device(device)
    model, meta = load_model(checkpoint, str(dev))
    if meta["model_name"] != "text_only":
        raise CheckpointError(f"{checkpoint}: predict_texts needs a text_only checkpoint, not {meta['model_name']!r}")
    settings = meta["settings"]
    _, encoder = checkpoint_encoders(checkpoint, settings, trust_remote_code, text_code_revision)
    contexts = contexts if contexts is not None else [[] for _ in texts]
    if len(contexts) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(contexts)} contexts")
    rows = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        feats = text_features(encoder, chunk, contexts[start:start + batch_size], int(settings["text_context"] or 0),
                              settings["text_context_mode"] or "steps")
        text, mask = pad_sequences(feats)
        batch = {"text": text.float().to(dev), "text_mask": mask.to(dev)}
        with torch.no_grad():
            probs = torch.softmax(model(batch).float(), -1).cpu().numpy()
        for t, p in zip(chunk, probs):
            rows.append({"text": t, "label": CLASSES[int(p.argmax())], **dict(zip(CLASSES, p.round(6)))})
    return pd.DataFrame(rows)


def text_features(encoder, texts: list[str], contexts: list[list[str]] | None, k: int,
                  mode: str = "steps") -> list[np.ndarray]:
    """The text branch's inputs: each text's (T, D) features, or with ``k > 0`` (a run trained with
    ``text_context: k``) the last k of ``contexts[i]`` (previous turns, oldest first; blank ones dropped) before
    it with the flag column -> (T_ctx + T, D + 1), as in training (``bber_utils.context``)."""
    from .context import with_context

    feats = [np.asarray(f, np.float32) for f in encoder.encode(list(texts))]
    if not k:
        return feats
    previous = [[str(c) for c in (ctx or []) if str(c).strip()][-k:] for ctx in (contexts or [[]] * len(texts))]
    encoded = iter(encoder.encode([c for ctx in previous for c in ctx]) if any(previous) else [])
    return [with_context(f, [next(encoded) for _ in ctx], mode) for f, ctx in zip(feats, previous)]


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("predict", help="emotions of audio files (audio-only, text-only and fused)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="audio files, folders of audio files, or CSVs with path[,text,context]")
    p.add_argument("--text", action="append", help="transcript (once per clip, in order); else ASR")
    p.add_argument("--context", action="append", metavar="TURN",
                   help="a previous turn of the dialogue (repeat for several, oldest first), given to every clip: "
                        "read by models trained with text_context (the last k); per clip: a CSV context column")
    p.add_argument("--checkpoint", help="best.pt or a run folder (default: the newest demo run)")
    p.add_argument("--workdir", default="runs/demo", help="where to look for the default checkpoint")
    p.add_argument("--lang", default="auto", type=str.lower, choices=["auto", "en", "ru"])
    p.add_argument("--asr", default=None, help="Whisper hub id / folder for clips without a transcript")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the checkpoint's text encoder to run its own code (e.g. jina-v3); a checkpoint's "
                        "stored settings never allow it")
    p.add_argument("--text-code-revision", default=None, metavar="COMMIT",
                   help="pin that code to a commit (default: the one stored in the checkpoint)")
    p.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help=f"score clips longer than this in windows of SECONDS (per-window probabilities with --json, "
                        f"and their mean); clips over {LONG_SECONDS:g} s without it get a warning")
    p.add_argument("--json", action="store_true", help="print one JSON object per clip (with its windows)")
    p.set_defaults(func=_cli)


def _prepare(args) -> tuple[Predictor, list[str], list, list]:
    """(predictor, paths, transcripts, contexts) from the arguments; ``ValueError`` / ``CheckpointError``."""
    check_window(args.window)
    paths, texts, contexts = collect_clips(args.paths)
    if not paths:
        raise ValueError(f"no clips to score in {' '.join(map(str, args.paths))}")
    if args.text:
        if len(args.text) != len(paths):
            raise ValueError(f"{len(paths)} clips but {len(args.text)} --text values")
        texts = args.text
    if args.context:
        contexts = [list(args.context) for _ in paths]
    predictor = Predictor(find_checkpoint(args.checkpoint, args.workdir), args.device, args.asr,
                          trust_remote_code=args.trust_remote_code, text_code_revision=args.text_code_revision)
    return predictor, paths, texts, contexts


def _cli(args) -> int:
    try:
        predictor, paths, texts, contexts = _prepare(args)
        preds = predictor.predict(paths, texts, args.lang, progress=not args.json and len(paths) > 8,
                                  window_s=args.window, contexts=contexts)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in preds:
        if args.json:
            row = p.as_row()
            if "windows" in p.extra:
                row["windows"] = p.extra["windows"]
            print(json.dumps(row, ensure_ascii=False))
        elif p.error:
            print(f"{p.path}\tERROR\t{p.error}")
        else:
            top = sorted(zip(CLASSES, p.fused), key=lambda t: -t[1])[:3]
            print(f"{p.path}\t{p.label}\t" + " ".join(f"{c}={v:.2f}" for c, v in top) + f"\t{p.text[:60]!r}")
    failed = sum(p.error is not None for p in preds)
    if failed:
        print(f"{failed} of {len(preds)} clips failed", file=sys.stderr)
    return 1 if failed else 0
