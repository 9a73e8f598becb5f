"""``export_model``: a trained run as a shareable model folder (``config.json``, ``model.safetensors``, a model
card ``README.md``; ``hub.BberModel.save_pretrained``) and, with ``onnx=True``, ``model.onnx`` beside them
(``onnx_model.export_onnx``) — ``bber export``.

The folder is written under a temporary name next to ``out`` and renamed into place when complete, so a killed
export leaves no half folder; an existing model folder at ``out`` is replaced, anything else there is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

from bber_utils.core.errors import looks_like_hub_id
from bber_utils.predict import checkpoint, hub, onnx_model
from bber_utils.predict.checkpoint import CheckpointError

# Heavy libraries (torch, via the model) are imported inside the functions that use them, so that importing this
# module, and `bber --help`, stays fast.


def export_model(run: str | os.PathLike | None, out: str | os.PathLike, onnx: bool = False,
                 workdir: str | os.PathLike = "runs/demo", trust_remote_code: bool = False,
                 opset: int | None = None) -> Path:
    """Write the model of ``run`` (a run folder, its ``best.pt``, a model folder or an ``owner/name`` repository of
    one; None: the newest run of ``workdir``) to the folder ``out``; -> ``out``. ``CheckpointError`` (one line) for a bad source or ``out``."""
    out = Path(out)
    _check_out(out)
    source = Path(run) if run else None
    if source is not None and not source.exists() and looks_like_hub_id(str(run)):
        source = hub.resolve_model(str(run))  # an owner/name repository: its model folder, e.g. to add ONNX
    if source is not None and hub.is_model_folder(source):
        cfg = hub.read_config(source)
        model, _ = hub.load_trained(source)
        metrics, card = None, source / hub.CARD_NAME
    else:
        ckpt = checkpoint.find_checkpoint(run, workdir)
        model, meta = checkpoint.load_model(ckpt)
        audio, text = checkpoint.checkpoint_encoders(ckpt, meta["settings"], trust_remote_code)
        metrics = _run_metrics(ckpt.parent)
        src = {"run": (metrics or {}).get("run", ckpt.parent.name), "seed": (metrics or {}).get("seed"),
               "data": meta.get("data"), "git_commit": (metrics or {}).get("git_commit")}
        cfg = hub.config_from_checkpoint(meta, {"audio": audio.key, "text": text.key}, src)
        card = None
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_folder(model, cfg, tmp, metrics, card, onnx, opset)
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_folder(model, cfg: dict, folder: Path, metrics: dict | None, card: Path | None, onnx: bool,
                  opset: int | None) -> None:
    init = {k: v for k, v in cfg.items() if k in hub.CONFIG_KEYS}
    wrapped = hub.model_class()(**init)
    wrapped.model.load_state_dict(model.state_dict())
    wrapped.eval()
    if card is not None and card.is_file():  # re-exporting a model folder keeps its card
        folder.mkdir(parents=True)
        shutil.copyfile(card, folder / hub.CARD_NAME)
    wrapped.save_pretrained(folder, model_card_kwargs={"metrics": metrics})
    if onnx:
        onnx_model.export_onnx(wrapped.model, init, folder / hub.ONNX_NAME,
                               onnx_model.file_sha256(folder / hub.WEIGHTS_NAME), opset)


def _run_metrics(run_dir: Path) -> dict | None:
    """The run's ``metrics.json`` (None, with a warning, when it is missing or unreadable: the card says so)."""
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: not readable ({type(exc).__name__}); the model card will have no scores",
                      stacklevel=3)
        return None


def _check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or hub.is_model_folder(out))):
        raise CheckpointError(f"{out}: exists and is not a model folder; choose another --out (an earlier export "
                              f"there would be replaced)")


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an earlier model folder there."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
