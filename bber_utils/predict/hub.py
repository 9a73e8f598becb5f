"""A trained model as a shareable folder, the Hugging Face way: ``config.json`` + ``model.safetensors`` +
``README.md`` (a model card), written and read by ``huggingface_hub``'s ``PyTorchModelHubMixin`` (``BberModel``).

``config.json`` (the ``BberModel`` constructor's arguments, so the mixin rebuilds the model from it)::

    {"format": "bber-model", "format_version": 1, "model_name": "biformer", "model_config": {...ModelConfig},
     "d_audio": 80, "d_text": 384, "labels": ["neutral", ..., "fear"],          # the output order
     "features": {audio_encoder, text_encoder, audio_pool, text_context, ...},  # how inputs are made
     "encoders": {"audio": {...encoder key}, "text": {...}},                    # what those inputs were
     "source": {"run": ..., "seed": ..., "data": ..., "git_commit": ...}}       # provenance (not read back)

``labels`` is a list of class names (the seven classes of ``core.labels`` by default) so that a model of another
label set can be described; this version predicts the seven classes and refuses another set in one line.

Loading (``BberModel.from_pretrained(folder or owner/name)``, ``load_trained``) runs no code from the folder:
``config.json`` is JSON, checked as data (``read_config``); weights come from ``model.safetensors`` only (never a
pickled ``pytorch_model.bin``), their names and shapes checked against the config before they are loaded; a hub
repository is fetched with only those files allowed (``snapshot_download(allow_patterns=...)``), so a ``*.py``
or pickle in it is never even downloaded. Every problem is a ``CheckpointError`` of one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bber_utils.core.errors import looks_like_hub_id
from bber_utils.core.labels import CLASSES
from bber_utils.models import MODEL_NAMES, build_model
from bber_utils.models.config import ModelConfig
from bber_utils.predict import card, checkpoint
from bber_utils.predict.checkpoint import CheckpointError

# Heavy libraries (torch, huggingface_hub, safetensors) are imported inside the functions that use them, so that
# importing this module, and `bber --help`, stays fast. ``BberModel`` (an ``nn.Module``) is made on first use.

FORMAT, FORMAT_VERSION = "bber-model", 1
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, ONNX_NAME = "config.json", "model.safetensors", "README.md", "model.onnx"
FOLDER_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, ONNX_NAME)  # all a model folder holds, and all we fetch
CONFIG_KEYS = ("format", "format_version", "model_name", "model_config", "d_audio", "d_text", "labels", "features",
               "encoders", "source", "classes")


def is_model_folder(path: str | os.PathLike) -> bool:
    """A folder written by ``bber export`` (or meant to be one): it holds ``config.json`` or ``model.safetensors``
    and no ``best.pt`` (a run folder holds a ``config.json`` of its own)."""
    p = Path(path)
    return p.is_dir() and not (p / "best.pt").exists() and any((p / n).exists() for n in (CONFIG_NAME, WEIGHTS_NAME))


def resolve_model(spec: str | os.PathLike, revision: str | None = None) -> Path:
    """The local folder of ``spec``: a folder as it is, or an ``owner/name`` hub repository downloaded (only the
    files of ``FOLDER_FILES``) into the hub cache. ``CheckpointError`` (one line) when neither."""
    p = Path(os.path.expanduser(str(spec)))
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{p}: a model folder is a folder (config.json + model.safetensors), not a file")
    if not looks_like_hub_id(str(spec)):
        raise CheckpointError(f"{spec}: no such model folder, and not an owner/name repository of the Hub")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(spec), revision=revision, allow_patterns=list(FOLDER_FILES)))
    except Exception as exc:  # offline, unknown repository, no access: one line, whatever the hub raised
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{spec}: no such local folder, and the Hub repository could not be fetched "
                              f"({reason})") from None


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/config.json`` checked as data -> the config with every key of ``CONFIG_KEYS`` and its
    ``settings`` (``checkpoint.stored_settings``) added. ``CheckpointError`` (one line) for what is wrong."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a BBER model folder: no {CONFIG_NAME} (write one with "
                              f"`bber export --run RUN --out {folder}`)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise CheckpointError(f"{path}: not the config of a BBER model (format {found!r}, expected {FORMAT!r})")
    if not isinstance(cfg.get("format_version"), int) or cfg["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {cfg.get('format_version')!r} is not one this bber reads "
                              f"(<= {FORMAT_VERSION}); update bber")
    _check_fields(cfg, path)
    cfg = {k: cfg.get(k) for k in CONFIG_KEYS}
    cfg["settings"] = checkpoint.stored_settings({"features": cfg["features"]}, path)
    return cfg


def _check_fields(cfg: dict, path: Path) -> None:
    """The model, sizes, labels and encoders of a config (``read_config``)."""
    if cfg.get("model_name") not in MODEL_NAMES:
        raise CheckpointError(f"{path}: unknown model_name {cfg.get('model_name')!r:.80}; one of {list(MODEL_NAMES)}")
    if not isinstance(cfg.get("model_config"), dict):
        raise CheckpointError(f"{path}: model_config is not a key-value map")
    try:
        mc = ModelConfig.from_dict(cfg["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {str(exc).splitlines()[0][:200]}") from None
    for key in ("d_audio", "d_text"):
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise CheckpointError(f"{path}: {key} must be an integer >= 1 (got {v!r:.40})")
    labels = cfg.get("labels")
    if (not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels)
            or len(set(labels)) != len(labels)):
        raise CheckpointError(f"{path}: labels must be a list of distinct class names (got {labels!r:.80})")
    if len(labels) != mc.num_classes:
        raise CheckpointError(f"{path}: {len(labels)} labels but the model has {mc.num_classes} outputs "
                              f"(model_config.num_classes)")
    classes = cfg.get("classes")  # a label set: the classes the model predicts (absent: all its labels)
    if classes is not None and (not isinstance(classes, list) or len(classes) < 2 or len(set(classes)) != len(classes)
                                or not set(classes) <= set(labels)):
        raise CheckpointError(f"{path}: classes must be two or more distinct names of its labels (got {classes!r:.80})")
    for key in ("features", "encoders"):
        if not isinstance(cfg.get(key), dict):
            raise CheckpointError(f"{path}: {key} is not a key-value map")
    wrong = sorted(set(cfg["encoders"]) - set(modalities(cfg["model_name"])))
    if wrong or not all(isinstance(v, dict) for v in cfg["encoders"].values()):
        raise CheckpointError(f"{path}: encoders must map {list(modalities(cfg['model_name']))} to encoder keys")


def modalities(model_name: str) -> tuple[str, ...]:
    """The inputs a model reads: ``("audio",)``, ``("text",)`` or both."""
    return {"audio_only": ("audio",), "text_only": ("text",)}.get(model_name, ("audio", "text"))


def check_labels(cfg: dict, where: str | os.PathLike, labels: list[str] | tuple[str, ...] = CLASSES) -> None:
    """``CheckpointError`` unless the model's label set is ``labels`` (what its outputs are read as)."""
    if list(cfg["labels"]) != list(labels):
        raise CheckpointError(f"{where}: its label set {cfg['labels']} differs from the one given {list(labels)} "
                              f"(same names, same order)")


def check_encoders(cfg: dict, keys: dict[str, dict], where: str | os.PathLike) -> None:
    """``CheckpointError`` naming the first setting that differs between the encoders the model was trained on
    (``cfg["encoders"]``) and those of the features given (``keys``: modality -> encoder key)."""
    for modality, want in cfg["encoders"].items():
        got = keys.get(modality)
        if got is None:
            raise CheckpointError(f"{where}: the model reads {modality} features but none were given")
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k)
                      and not (k == "commit" and None in (want.get(k), got.get(k))))  # a hub commit unknown offline
        if diff:
            k = diff[0]
            raise CheckpointError(f"{where}: its {modality} encoder differs from the features given: {k}="
                                  f"{want.get(k)!r:.60} in the model, {got.get(k)!r:.60} in the features "
                                  f"({len(diff)} setting(s) differ)")


def config_from_checkpoint(meta: dict, encoders: dict[str, dict], source: dict | None = None,
                           labels: list[str] | None = None) -> dict:
    """The ``config.json`` of a trainer checkpoint's ``meta`` (``checkpoint.load_model``), the keys of the
    encoders it reads (modality -> ``encoder.key``) and its provenance (``source``)."""
    name = meta["model_name"]
    d_in = meta.get("d_in")
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "model_name": name,
            "model_config": ModelConfig.from_dict(meta.get("model_config", {})).to_dict(),
            "d_audio": int(meta.get("d_audio", d_in if name == "audio_only" else 1)),
            "d_text": int(meta.get("d_text", d_in if name == "text_only" else 1)),
            "labels": list(labels or CLASSES),
            "features": {k: v for k, v in meta["settings"].items() if v is not None},
            "encoders": {m: _jsonable(encoders[m]) for m in modalities(name)},
            "source": _jsonable(source or {}),
            **({"classes": list(meta["classes"])} if meta.get("classes") else {})}


def _jsonable(obj: Any) -> Any:
    """``obj`` as JSON gives it back (tuples become lists), so that a config compares equal to its file."""
    return json.loads(json.dumps(obj, default=str))


def parameter_counts(model) -> dict[str, int]:
    """``{"total", "encoders", "fusion"}`` parameters of a registry model (``models.parameter_table``'s split)."""
    total = sum(p.numel() for p in model.parameters())
    if hasattr(model, "audio_encoder"):
        enc = sum(p.numel() for m in (model.audio_encoder, model.text_encoder) for p in m.parameters())
    else:
        enc = total
    return {"total": int(total), "encoders": int(enc), "fusion": int(total - enc)}


# ---------------------------------------------------------------------------------------------------- the model
_CLASS: list = []


def model_class() -> type:
    """``BberModel``: an ``nn.Module`` with ``PyTorchModelHubMixin`` around one registry model (made on first use,
    so that this module imports without torch). ``bber_utils.predict.hub.BberModel`` is the same class."""
    if not _CLASS:
        _CLASS.append(_define_model_class())
    return _CLASS[0]


def __getattr__(name: str):
    if name == "BberModel":
        return model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_model_class() -> type:
    from huggingface_hub import PyTorchModelHubMixin
    from torch import nn

    class BberModel(nn.Module, PyTorchModelHubMixin, library_name="bber", license="mit", language=["en", "ru"],
                    pipeline_tag="audio-classification",
                    tags=["emotion-recognition", "speech-emotion-recognition", "multimodal", "mamba", "bber"]):
        """One model of ``bber_utils.models`` (``self.model``) with its ``config.json``: ``save_pretrained``,
        ``push_to_hub`` and ``from_pretrained`` (checked: ``read_config``, ``load_weights``)."""

        def __init__(self, model_name: str, model_config: dict, d_audio: int, d_text: int, labels: list,
                     features: dict, encoders: dict, format: str = FORMAT, format_version: int = FORMAT_VERSION,
                     source: dict | None = None, classes: list | None = None):
            super().__init__()
            self.model = build_model(model_name, model_config, int(d_audio), int(d_text))
            self.model_name = model_name

        def forward(self, batch):
            return self.model(batch)

        def generate_model_card(self, *args, **kwargs):
            from huggingface_hub import ModelCard

            cfg = dict(self._hub_mixin_config)
            text = card.model_card(cfg, kwargs.get("metrics"), parameter_counts(self.model))
            return ModelCard(card.front_matter(self._hub_mixin_info.model_card_data.to_yaml()) + text)

        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path, *, revision=None, map_location="cpu", **kwargs):
            """A folder or ``owner/name``; the config is checked before anything is built."""
            folder = resolve_model(pretrained_model_name_or_path, revision)
            read_config(folder)
            return super().from_pretrained(str(folder), map_location=map_location, **kwargs)

        @classmethod
        def _from_pretrained(cls, *, model_id, map_location="cpu", revision=None, cache_dir=None,
                             force_download=False, local_files_only=False, token=None, strict=True, **model_kwargs):
            model = cls(**model_kwargs)
            load_weights(model, Path(model_id), map_location)
            return model.to(map_location).eval()  # load_model fills the CPU parameters it was given

    BberModel.__qualname__ = "BberModel"
    return BberModel


def load_weights(model, folder: Path, device: str = "cpu") -> None:
    """``folder/model.safetensors`` into ``model`` (a ``BberModel``): every tensor name and shape checked against
    the model its config describes first. ``CheckpointError`` (one line) naming the first difference."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        pickled = [n for n in ("pytorch_model.bin", "model.pt", "best.pt") if (folder / n).exists()]
        also = f" ({pickled[0]} is there, but pickled weights are never loaded)" if pickled else ""
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME}{also}")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None
    want = {k: list(v.shape) for k, v in model.state_dict().items()}
    name = f"a {model.model_name} of its {CONFIG_NAME}"
    missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
    if missing or extra:
        first = f"{missing[0]} is missing" if missing else f"{extra[0]} is not a weight of it"
        raise CheckpointError(f"{path}: does not fit {name}: {len(missing)} tensor(s) missing, {len(extra)} "
                              f"unexpected ({first})")
    for k in want:
        if shapes[k] != want[k]:
            raise CheckpointError(f"{path}: does not fit {name}: {k} has shape {shapes[k]} in the file but "
                                  f"{want[k]} in the config")
    load_model(model, str(path), strict=True, device=str(device))


def load_trained(spec: str | os.PathLike, device: str = "cpu", revision: str | None = None):
    """(registry model in eval mode, meta) of a trainer checkpoint / run folder (``checkpoint.load_model``) or of a
    model folder / ``owner/name`` repository (``BberModel.from_pretrained``); ``meta`` has ``model_name``,
    ``d_audio``, ``d_text``, ``model_config``, ``settings``, ``labels``, ``encoders`` (None for a checkpoint)."""
    p = Path(os.path.expanduser(str(spec)))
    if p.is_file() or (p.is_dir() and not is_model_folder(p)):
        model, meta = checkpoint.load_model(p, device)
        return model, {**meta, "labels": list(CLASSES), "encoders": None}
    folder = resolve_model(spec, revision)
    wrapped = model_class().from_pretrained(folder, map_location=str(device))
    return wrapped.model.eval(), meta_of(read_config(folder))


def meta_of(cfg: dict) -> dict:
    """The ``meta`` of ``load_trained`` from a checked config (``read_config``), for a model folder."""
    return {"model_name": cfg["model_name"], "d_audio": cfg["d_audio"], "d_text": cfg["d_text"],
            "model_config": cfg["model_config"], "settings": cfg["settings"], "labels": cfg["labels"],
            "encoders": cfg["encoders"], "features": cfg["features"], "config": {}, "model_folder": True,
            **({"classes": cfg["classes"]} if cfg.get("classes") else {})}

