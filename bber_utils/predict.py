"""Inference: emotions of audio files, with or without a transcript (``bber predict``, notebook 09).

For each clip: the audio-only, text-only and fused probabilities over the seven classes and the top label.
A bimodal checkpoint carries its two unimodal encoder-classifiers, so all three come from one model: the
encoders' own heads give the unimodal probabilities, the fusion gives the fused ones. When no transcript is
given, an ASR model (Whisper) writes one and detects the language.

Bad input never stops a batch: an unreadable, empty or too short clip gets a row with its ``error`` and the
other clips are still scored; the command's exit status says whether anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .labels import CLASSES
from .paths import run_dirs

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".aac", ".opus", ".webm", ".aiff", ".aif"}
MIN_SECONDS = 0.1


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
    train_dir = run_dirs(workdir).train
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
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
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
        from .train import resolve_device

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
                language: str = "auto", progress: bool = False) -> list[Prediction]:
        """One ``Prediction`` per path, in order; failures are recorded in ``error``."""
        from tqdm.auto import tqdm

        from .audio import AudioError, load_audio

        paths = [str(p) for p in paths]
        texts = list(texts) if texts is not None else [None] * len(paths)
        if len(texts) != len(paths):
            raise ValueError(f"{len(paths)} clips but {len(texts)} transcripts")
        preds = [Prediction(path=p, text=t or "", language="" if language == "auto" else language)
                 for p, t in zip(paths, texts)]
        good: list[tuple[int, np.ndarray]] = []
        for i, pred in enumerate(preds):
            try:
                wav = load_audio(pred.path)
                if len(wav) < MIN_SECONDS * 16000:
                    raise AudioError(pred.path, f"too short ({len(wav) / 16000:.3f} s < {MIN_SECONDS} s)")
                good.append((i, wav))
            except AudioError as exc:
                pred.error = exc.reason
        for start in tqdm(range(0, len(good), self.batch_size), desc="predict", disable=not progress):
            chunk = good[start:start + self.batch_size]
            try:
                self._predict_chunk([preds[i] for i, _ in chunk], [w for _, w in chunk])
            except ValueError as exc:  # e.g. no transcript and no ASR
                for i, _ in chunk:
                    preds[i].error = str(exc)
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
    from .train import resolve_device

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
    p.add_argument("--json", action="store_true", help="print one JSON object per clip")
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
    preds = predictor.predict(paths, texts, args.lang, progress=not args.json and len(paths) > 8)
    for p in preds:
        if args.json:
            print(json.dumps(p.as_row(), ensure_ascii=False))
        elif p.error:
            print(f"{p.path}\tERROR\t{p.error}")
        else:
            top = sorted(zip(CLASSES, p.fused), key=lambda t: -t[1])[:3]
            print(f"{p.path}\t{p.label}\t" + " ".join(f"{c}={v:.2f}" for c, v in top) + f"\t{p.text[:60]!r}")
    failed = sum(p.error is not None for p in preds)
    if failed:
        print(f"{failed} of {len(preds)} clips failed", file=sys.stderr)
    return 1 if failed else 0
