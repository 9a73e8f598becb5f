"""Trained models on disk: ``find_checkpoint`` (a file, a run folder, or the
newest run of a work folder) and ``load_model`` (weights only: a crafted file cannot run code).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bber_utils.core.errors import ConfigError, check_model_spec, looks_like_hub_id
from bber_utils.core.labels import CLASSES
from bber_utils.core.paths import REPO_ROOT
from bber_utils.features.extract import encoders_from_params
from bber_utils.features.text_encoders import OFFLINE_TEXT_ENCODERS
from bber_utils.models import MODEL_NAMES, build_model
from bber_utils.models.config import ModelConfig

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or of another model configuration."""


def find_checkpoint(spec: str | os.PathLike | None = None, workdir: str | os.PathLike = "runs/demo") -> Path:
    """Resolve ``spec``: a ``.pt`` file, a run folder holding ``best.pt``, a model folder of ``bber export``
    (returned as it is: ``hub`` reads it) or an ``owner/name`` Hub repository of one (returned as it is); with no
    spec, the newest ``best.pt`` of a bimodal run under ``<workdir>/train`` (else of any run). Raises
    ``CheckpointError``."""
    if spec:
        p = Path(spec)
        if p.is_dir():
            if (p / "best.pt").exists():
                return p / "best.pt"
            if any((p / n).exists() for n in ("config.json", "model.safetensors")):
                return p  # a model folder: hub.read_config checks it
            raise CheckpointError(f"{p}: neither a run folder (no best.pt) nor a model folder (no config.json; "
                                  f"`bber export --run RUN --out {p}` writes one)")
        if not p.exists():
            if looks_like_hub_id(str(spec)) and not str(spec).endswith(".pt"):
                return p  # a Hub repository: hub.resolve_model fetches it
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
    "audio_norm": ("'none', 'speaker' or 'utterance'", lambda v: v in ("none", "speaker", "utterance")),
    "text_context_speaker": ("true or false", lambda v: isinstance(v, bool)),
}


def stored_settings(state: dict, checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The input settings a checkpoint stores (``features``, else the same keys of ``config``), checked as data:
    known keys, types and ranges, encoder specs (``errors.check_model_spec``). -> every key of
    ``STORED_SETTINGS`` (None where not stored). ``text_trust_remote_code`` is only what the file asks for:
    ``checkpoint_encoders`` grants it only when the user does. Raises ``CheckpointError`` (one line)."""

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


def allowed_classes(names: list[str] | None) -> list[int] | None:
    """The class indices of ``names``, the classes a model predicts (a checkpoint's or model folder's
    ``classes``: its training corpora's label sets); None for all seven."""
    return None if not names else [CLASSES.index(c) for c in names if c in CLASSES]


def masked_softmax(logits, allowed: list[int] | None):
    """Probabilities ``(N, 7)`` (a float tensor) over the ``allowed`` classes: the other classes' logits are masked
    before the softmax (training never pushed them down, so they may be large); None = all seven."""
    import torch

    logits = logits.float()
    if allowed is not None and len(allowed) < len(CLASSES):
        mask = torch.full_like(logits, float("-inf"))
        mask[:, allowed] = 0.0
        logits = logits + mask
    return torch.softmax(logits, -1)
