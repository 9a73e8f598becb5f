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

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted
file cannot run code on load.
"""

from __future__ import annotations

import argparse
import json
import os
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


def load_model(checkpoint: str | os.PathLike, device: str = "cpu"):
    """(model in eval mode, meta) from a trainer checkpoint, on ``device``; checks the configuration."""
    import torch

    from .models import MODEL_NAMES, build_model
    from .models.config import ModelConfig

    checkpoint = Path(checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # no code runs from the file
    except Exception as exc:  # a truncated or foreign file, or one holding objects other than weights
        raise CheckpointError(f"{checkpoint}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or "model" not in state or "model_name" not in state:
        raise CheckpointError(f"{checkpoint}: not a BBER training checkpoint (no model / model_name)")
    name = state["model_name"]
    if name not in MODEL_NAMES:
        raise CheckpointError(f"{checkpoint}: unknown model {name!r}")
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
    return model.to(device).eval(), meta


# ------------------------------------------------------------------------------------------- predictor

class Predictor:
    """Scores audio clips with a trained checkpoint: ``Predictor(ckpt).predict(paths, texts)``."""

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto", asr: str | None = None,
                 batch_size: int = 16):
        from .device import resolve_device

        self.device = resolve_device(device)
        self.checkpoint = Path(checkpoint)
        self.model, self.meta = load_model(self.checkpoint, str(self.device))
        self.name = self.meta["model_name"]
        self.asr_spec, self._asr = asr, None
        self.batch_size = int(batch_size)
        from .features.extract import encoders_from_params

        # the same encoders (and store keys) and frame pooling the run was trained with
        spec = {**self.meta["config"], **self.meta.get("features", {})}
        self.audio_encoder, self.text_encoder = encoders_from_params(spec)
        self.audio_pool = int(spec.get("audio_pool") or 1)
        checks = {"audio_only": ("audio",), "text_only": ("text",)}.get(self.name, ("audio", "text"))
        for what in checks:
            want = self.meta.get(f"d_{what}", self.meta.get("d_in"))
            dim = getattr(self.audio_encoder if what == "audio" else self.text_encoder, "dim", None)
            if what == "text" and dim and spec.get("text_context"):
                dim = int(dim) + 1  # the context flag column (bber_utils.context)
            if want and dim and int(dim) != int(want):
                raise CheckpointError(f"{self.checkpoint}: the model expects {what} features of width {want} "
                                      f"but its {what} encoder gives {dim}")

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
                language: str = "auto", progress: bool = False, window_s: float | None = None) -> list[Prediction]:
        """One ``Prediction`` per path, in order; failures are recorded in ``error``. ``window_s``: clips longer
        than that are scored in windows of ``window_s`` seconds (see the module docstring)."""
        from bber_utils.progress import tqdm

        from .audio import AudioError, load_audio

        paths = [str(p) for p in paths]
        texts = list(texts) if texts is not None else [None] * len(paths)
        if len(texts) != len(paths):
            raise ValueError(f"{len(paths)} clips but {len(texts)} transcripts")
        if window_s is not None and window_s < 1.0:
            raise ValueError(f"window must be at least 1 s (got {window_s})")
        preds = [Prediction(path=p, text=t or "", language="" if language == "auto" else language)
                 for p, t in zip(paths, texts)]
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
                        good.append((Prediction(path=pred.path, text=pred.text, language=pred.language), piece, i,
                                     start / 16000))
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
        text, batch["text_mask"] = pad_sequences(self.text_encoder.encode([p.text for p in preds]))
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
    """Expand folders (audio files inside, sorted) and CSVs (a ``path`` column, optional ``text``; relative
    paths are taken from the CSV's folder) into (paths, transcripts)."""
    import pandas as pd

    paths: list[str] = []
    texts: list[str | None] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in AUDIO_SUFFIXES)
            paths += [str(q) for q in found]
            texts += [None] * len(found)
        elif p.suffix.lower() == ".csv":
            df = pd.read_csv(p, keep_default_na=False)
            if "path" not in df.columns:
                raise ValueError(f"{p}: a CSV of clips needs a 'path' column (found {list(df.columns)})")
            for _, row in df.iterrows():
                q = Path(str(row["path"]))
                paths.append(str(q if q.is_absolute() else p.parent / q))
                texts.append(str(row["text"]) if "text" in df.columns and str(row["text"]).strip() else None)
        else:
            paths.append(str(p))
            texts.append(None)
    return paths, texts


def predictions_table(preds: list[Prediction]):
    import pandas as pd

    return pd.DataFrame([p.as_row() for p in preds])


# ------------------------------------------------------------------------------------------------- cli

def predict_texts(checkpoint: str | os.PathLike, texts: list[str], contexts: list[list[str]] | None = None,
                  device: str = "auto", batch_size: int = 64):
    """Text-only inference, no audio: a ``text_only`` checkpoint's probabilities for each transcript.

    ``contexts[i]``: the previous utterances of text i's dialogue, oldest first (used when the run was trained
    with ``text_context: k``; only the last k are read). Returns a DataFrame ``text, label, {class}...``.
    """
    import pandas as pd
    import torch

    from .context import context_steps, with_flag
    from .data import pad_sequences
    from .features.extract import encoders_from_params
    from .device import resolve_device

    dev = resolve_device(device)
    model, meta = load_model(checkpoint, str(dev))
    if meta["model_name"] != "text_only":
        raise CheckpointError(f"{checkpoint}: predict_texts needs a text_only checkpoint, not {meta['model_name']!r}")
    spec = {**meta["config"], **meta.get("features", {})}
    k = int(spec.get("text_context") or 0)
    mode = spec.get("text_context_mode") or "steps"
    _, encoder = encoders_from_params(spec)
    contexts = contexts if contexts is not None else [[] for _ in texts]
    if len(contexts) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(contexts)} contexts")
    rows = []
    for start in range(0, len(texts), batch_size):
        chunk, ctx = list(texts[start:start + batch_size]), contexts[start:start + batch_size]
        feats = encoder.encode(chunk)
        if k:
            feats = [np.concatenate([with_flag(context_steps(x, mode), own=False)
                                     for x in encoder.encode(list(c[-k:]))]
                                    + [with_flag(f, own=True)]) if c[-k:] else with_flag(f, own=True)
                     for f, c in zip(feats, ctx)]
        text, mask = pad_sequences([np.asarray(f, np.float32) for f in feats])
        batch = {"text": text.float().to(dev), "text_mask": mask.to(dev)}
        with torch.no_grad():
            probs = torch.softmax(model(batch).float(), -1).cpu().numpy()
        for t, p in zip(chunk, probs):
            rows.append({"text": t, "label": CLASSES[int(p.argmax())], **dict(zip(CLASSES, p.round(6)))})
    return pd.DataFrame(rows)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("predict", help="emotions of audio files (audio-only, text-only and fused)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="audio files, folders of audio files, or CSVs with path[,text]")
    p.add_argument("--text", action="append", help="transcript (once per clip, in order); else ASR")
    p.add_argument("--checkpoint", help="best.pt or a run folder (default: the newest demo run)")
    p.add_argument("--workdir", default="runs/demo", help="where to look for the default checkpoint")
    p.add_argument("--lang", default="auto", choices=["auto", "en", "ru"])
    p.add_argument("--asr", default=None, help="Whisper hub id / folder for clips without a transcript")
    p.add_argument("--device", default="auto")
    p.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help=f"score clips longer than this in windows of SECONDS (per-window probabilities with --json, "
                        f"and their mean); clips over {LONG_SECONDS:g} s without it get a warning")
    p.add_argument("--json", action="store_true", help="print one JSON object per clip (with its windows)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    try:
        paths, texts = collect_inputs(args.paths)
        if args.text:
            if len(args.text) != len(paths):
                print(f"error: {len(paths)} clips but {len(args.text)} --text values", file=sys.stderr)
                return 2
            texts = args.text
        predictor = Predictor(find_checkpoint(args.checkpoint, args.workdir), args.device, args.asr)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        preds = predictor.predict(paths, texts, args.lang, progress=not args.json and len(paths) > 8,
                                  window_s=args.window)
    except ValueError as exc:
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
