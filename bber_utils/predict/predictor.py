"""``Predictor(checkpoint).predict(paths, texts)``: the audio-only, text-only
and fused probabilities of each clip, long clips in windows, ASR for clips without a transcript.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bber_utils.core.audio import AudioError, load_audio
from bber_utils.core.device import resolve_device
from bber_utils.core.labels import CLASSES
from bber_utils.core.progress import tqdm
from bber_utils.features import build_asr
from bber_utils.features.context import with_context
from bber_utils.features.normalise import group_statistics, normalise_utterance
from bber_utils.predict import hub, onnx_model
from bber_utils.predict.checkpoint import CheckpointError, allowed_classes, checkpoint_encoders, masked_softmax
from bber_utils.train.dataset import pool_frames

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


MIN_SECONDS = 0.1

LONG_SECONDS = 60.0  # longer clips get a warning (and --window is suggested)


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


class Predictor:
    """Scores audio clips with a trained model: ``Predictor(model).predict(paths, texts)``.

    ``model``: a trainer checkpoint (``best.pt``) or run folder, or a model folder of ``bber export`` / an
    ``owner/name`` repository of one (``hub``). ``onnx``: run the folder's ``model.onnx`` (True) or the given ONNX
    file on onnxruntime instead of PyTorch (CPU; no torch import unless the encoders need it).
    ``trust_remote_code``: allow the text encoder's own code when the model was trained with one that needs it
    (the user's decision: a model's settings never grant it); ``text_code_revision`` pins that code."""

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto", asr: str | None = None,
                 batch_size: int = 16, trust_remote_code: bool = False, text_code_revision: str | None = None,
                 onnx: bool | str | os.PathLike = False, revision: str | None = None):
        self.checkpoint = Path(checkpoint)
        if onnx:
            self.device = _onnx_device(device)
            self.backend, self.meta = _onnx_backend(checkpoint, onnx, revision)
        else:
            self.device = resolve_device(device)
            model, self.meta = hub.load_trained(checkpoint, str(self.device), revision)
            self.backend = TorchBackend(model, self.device, allowed_classes(self.meta.get("classes")))
        self.model = getattr(self.backend, "model", None)
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
        self.audio_norm = settings.get("audio_norm") or "none"
        self._norm_stats = None  # audio_norm "speaker": the statistics of the clips of one predict call
        if settings.get("text_context_speaker") and self.uses_text:
            raise CheckpointError(f"{self.checkpoint}: trained with text_context_speaker (context turns flagged by "
                                  f"speaker); prediction does not take speakers yet: score it with bber train's "
                                  f"test split")
        self._check_inputs()

    def _check_inputs(self) -> None:
        """The features this predictor makes must be those the model was trained on: label set, encoders (a model
        folder names them) and widths. ``CheckpointError`` (one line) otherwise."""
        hub.check_labels(self.meta, self.checkpoint, CLASSES)
        checks = hub.modalities(self.name)
        if self.meta.get("encoders"):
            hub.check_encoders(self.meta, {m: getattr(self, f"{m}_encoder").key for m in checks}, self.checkpoint)
        for what in checks:
            want = self.meta.get(f"d_{what}", self.meta.get("d_in"))
            dim = self._encoder_dim(what)
            if what == "text" and dim and self.context_k:
                dim = int(dim) + 1  # the context flag column (bber_utils.features.context)
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

    def _normalised(self, x) -> np.ndarray:
        """Audio frames as the model was trained on them (``audio_norm``)."""
        x = np.asarray(x, dtype=np.float32)
        if self.audio_norm == "utterance":
            return normalise_utterance(x)
        if self.audio_norm == "speaker" and self._norm_stats is not None:
            return (x - self._norm_stats[0]) / self._norm_stats[1]
        return x

    @property
    def uses_text(self) -> bool:
        return self.name != "audio_only"

    def _transcribe(self, wavs: list[np.ndarray]) -> list[tuple[str, str]]:
        if self._asr is None:
            if not self.asr_spec:
                raise ValueError("no transcript given and no ASR model configured: pass --text, a CSV with a "
                                 "text column, or --asr MODEL (a Whisper hub id or local folder)")

            self._asr = build_asr(self.asr_spec)
        return self._asr.transcribe(wavs)

    def predict(self, paths: Iterable[str | os.PathLike], texts: Iterable[str | None] | None = None,
                language: str = "auto", progress: bool = False, window_s: float | None = None,
                contexts: Iterable[Iterable[str] | str | None] | None = None) -> list[Prediction]:
        """One ``Prediction`` per path, in order; failures are recorded in ``error``. ``window_s``: clips longer
        than that are scored in windows of ``window_s`` seconds (see the module docstring). ``contexts[i]``: the
        previous turns of clip i's dialogue, oldest first (a string is one turn); a model trained with
        ``text_context: k`` reads the last k, another model none (with a warning)."""

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
        if self.audio_norm == "speaker" and good:  # the clips of this call are taken as one speaker's
            frames = {str(k): x for k, x in enumerate(self.audio_encoder.encode([w for _, w, *_ in good]))}
            self._norm_stats = group_statistics(frames, dict.fromkeys(frames, "clips"))["clips"]
            if len(good) < 10:
                warnings.warn(f"{self.checkpoint}: trained with audio_norm=speaker; the {len(good)} clip(s) given "
                              f"are normalised by their own statistics: give a speaker's clips together (10 or more)",
                              stacklevel=2)
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
        missing = [k for k, p in enumerate(preds) if self.uses_text and not p.text.strip()]
        if missing:
            for k, (text, lang) in zip(missing, self._transcribe([wavs[k] for k in missing])):
                preds[k].text, preds[k].extra["asr"] = text, True
                if not preds[k].language:
                    preds[k].language = lang
        arrays: dict[str, np.ndarray] = {}
        frames = [pool_frames(self._normalised(x), self.audio_pool) for x in self.audio_encoder.encode(wavs)]
        arrays["audio"], arrays["audio_mask"] = pad_arrays(frames)
        arrays["text"], arrays["text_mask"] = pad_arrays(text_features(
            self.text_encoder, [p.text for p in preds], [p.context for p in preds], self.context_k, self.context_mode))
        probs = self.backend.probabilities(arrays)
        fused = probs["fused"]
        for k, p in enumerate(preds):
            p.fused = fused[k].round(6).tolist()
            p.label = CLASSES[int(fused[k].argmax())]
            if self.name == "audio_only":
                p.audio = p.fused
            elif self.name == "text_only":
                p.text_probs = p.fused
            if "audio" in probs:
                p.audio, p.text_probs = probs["audio"][k].round(6).tolist(), probs["text"][k].round(6).tolist()


class TorchBackend:
    """A registry model on ``device``: ``probabilities(arrays) -> {"fused"[, "audio", "text"]}`` (numpy), over the
    classes ``allowed`` (``allowed_classes``; None = all seven)."""

    def __init__(self, model, device, allowed: list[int] | None = None):
        self.model, self.device, self.allowed = model, device, allowed

    def probabilities(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        batch = {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()}
        with torch.no_grad():
            if not hasattr(self.model, "encode"):
                return {"fused": masked_softmax(self.model(batch), self.allowed).cpu().numpy()}
            enc = self.model.encode(batch)
            logits = {"fused": self.model.fuse(enc), "audio": enc["audio_logits"], "text": enc["text_logits"]}
            return {k: masked_softmax(v, self.allowed).cpu().numpy() for k, v in logits.items()}


def _onnx_device(device: str | None) -> str:
    if str(device or "auto") not in ("auto", "cpu"):
        raise ValueError(f"--onnx runs on the CPU (onnxruntime); device {device!r} is not available to it")
    return "cpu"


def _onnx_backend(spec: str | os.PathLike, onnx: bool | str | os.PathLike, revision: str | None):
    """(``OnnxModel``, meta) of a model folder (or repository) and its ``model.onnx`` (or the file ``onnx``)."""
    p = Path(spec)
    if p.is_file() or (p.is_dir() and not hub.is_model_folder(p)):
        raise CheckpointError(f"{spec}: ONNX runs from a model folder; write one with `bber export --run {spec} "
                              f"--out DIR --onnx`")
    folder = hub.resolve_model(spec, revision)
    cfg = hub.read_config(folder)
    path = folder / hub.ONNX_NAME if onnx is True else Path(onnx)
    weights = folder / hub.WEIGHTS_NAME
    sha = onnx_model.file_sha256(weights) if weights.is_file() else None
    return onnx_model.OnnxModel(path, cfg, sha, folder), hub.meta_of(cfg)


def pad_arrays(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad ``[(T_i, D)]`` to ``(B, T_max, D) float32`` and a ``(B, T_max) bool`` mask (True = real)."""
    if not seqs or min(len(s) for s in seqs) < 1:
        raise ValueError("pad_arrays: an empty batch or a sequence of length 0")
    width = max(len(s) for s in seqs)
    out = np.zeros((len(seqs), width, seqs[0].shape[1]), np.float32)
    mask = np.zeros((len(seqs), width), bool)
    for b, s in enumerate(seqs):
        out[b, :len(s)], mask[b, :len(s)] = s, True
    return out, mask


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


def text_features(encoder, texts: list[str], contexts: list[list[str]] | None, k: int,
                  mode: str = "steps") -> list[np.ndarray]:
    """The text branch's inputs: each text's (T, D) features, or with ``k > 0`` (a run trained with
    ``text_context: k``) the last k of ``contexts[i]`` (previous turns, oldest first; blank ones dropped) before
    it with the flag column -> (T_ctx + T, D + 1), as in training (``bber_utils.features.context``)."""

    feats = [np.asarray(f, np.float32) for f in encoder.encode(list(texts))]
    if not k:
        return feats
    previous = [[str(c) for c in (ctx or []) if str(c).strip()][-k:] for ctx in (contexts or [[]] * len(texts))]
    encoded = iter(encoder.encode([c for ctx in previous for c in ctx]) if any(previous) else [])
    return [with_context(f, [next(encoded) for _ in ctx], mode) for f, ctx in zip(feats, previous)]
