"""The training configuration: ``TrainConfig`` (every key of ``train`` and its default, the paper's) and its checks,
the keys that do (``identity``, ``stage1_key``) or do not (``CONTROL_KEYS``) change a run's numbers, the run hash,
and the text of ``bber train --help``.

Each field says itself what it changes (``dataclasses.field`` metadata, see ``stage1``, ``control``, ``later``):
the run hash (``identity``) and the stage-1 cache key (``stage1_key``) are read from there, so a new key is
hashed where it is declared.

Owns: ``TrainConfig``, ``AUGMENT_KEYS``, ``CONTROL_KEYS``, ``MODEL_KEYS``, ``UNIMODAL_MODEL_KEYS``, ``stage1_key``,
``config_hash``, ``feature_spec``, ``config_key_descriptions``, ``config_keys_help``.
Must not import: torch, or any other module of ``bber_utils.train`` (they all import this one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
from dataclasses import dataclass
from typing import Any

from bber_utils.augment.tug import MIX_MODES
from bber_utils.core.device import DEVICE_CHOICES
from bber_utils.core.errors import ConfigError, check_model_spec, unknown
from bber_utils.core.parameters import field_comments
from bber_utils.corpora import class_weight_power_for
from bber_utils.features.normalise import AUDIO_NORMS
from bber_utils.features.text_encoders import OFFLINE_TEXT_ENCODERS
from bber_utils.models import MODEL_NAMES
from bber_utils.models.config import ModelConfig

UNIMODAL_MODELS = ("audio_only", "text_only")
# Keys that change the train rows or targets (SDS, TUG, LS-LLM, label smoothing): ``TrainConfig.augmented``.
AUGMENT_KEYS = ("sds_ratio", "tug_ratio", "ls_llm_p", "label_smoothing")
SCHEDULERS = ("cosine", "plateau", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
_MODEL = ModelConfig()  # the model sizes' defaults (the paper's) are ModelConfig's


def stage1(default: Any, slot: str, **how: Any) -> Any:
    """A key that changes the unimodal models of stage 1: ``slot`` is where its value goes in their cache key
    (``stage1_key``): a name, ``"name.i"`` (the i-th item of a list) or ``"model"`` (the size as ModelConfig
    builds it). ``how``: ``fallback`` (the key whose value stands in when this one is unset), ``modality`` and
    ``neutral`` (only that modality's models read it; the other's key holds ``neutral``), ``cast`` (a type the
    value is hashed as), ``later`` (see ``later``)."""
    return dataclasses.field(default=default, metadata={"stage1": slot, **how})


def control(default: Any, listed: bool = True) -> Any:
    """A key that does not change a run's numbers (where, how fast, how it reports): left out of the run hash.
    ``listed=False``: also left out of ``to_dict`` at ``default`` (see ``later``), for a key added after runs
    were written."""
    if listed:
        return dataclasses.field(default=default, metadata={"control": True})
    return dataclasses.field(default=default, metadata={"control": True, "later": default, "unlisted": True})


def later(default: Any, listed: bool = True, per_corpus: bool = False, **stage1_how: Any) -> Any:
    """A key added after runs were named: left out of the run hash (and of the stage-1 key, with ``stage1_how``)
    while it holds ``default``, the value those runs had, so their names and caches stay valid. ``listed=False``:
    also left out of ``to_dict`` (``metrics.json``, a checkpoint's settings) at ``default``, so the files of runs
    that never set it stay byte for byte what they were. ``per_corpus``: the key defaults to None, the training
    corpora's value (``TrainConfig.for_corpora``; ``default`` where they have none), and None is hashed like
    ``default`` (a name computed before the corpora are known)."""
    meta = {"later": default, **({"stage1": stage1_how.pop("slot"), **stage1_how} if stage1_how else {})}
    if not listed:
        meta["unlisted"] = True
    if per_corpus:
        meta["per_corpus"] = True
    return dataclasses.field(default=None if per_corpus else default, metadata=meta)


def _at_default(value: Any, meta: Any) -> bool:
    """True when a ``later`` key holds the value runs had before it (or, per corpus, is not yet resolved)."""
    return "later" in meta and (value == meta["later"] or (value is None and bool(meta.get("per_corpus"))))


@dataclass
class TrainConfig:
    """Every parameter of ``train`` (the notebook-06 parameters), with its default: the paper's values
    (``configs/paper.yaml`` sets only the encoders, which need a download or trust), the model sizes
    ``bber_utils.models.ModelConfig``'s. Keys not named in a profile take these (``train.profiles``).

    The keys that change stage 1 carry ``stage1`` metadata (their place in its cache key), the others are
    listed with the reason in ``tests/train/test_config.py``; ``control`` keys do not enter the run hash.
    """

    # --- where and what ---
    workdir: str = control("runs/demo")   # the profile's work folder (a profile's own default: runs/<its name>)
    seed: int = stage1(42, "seed")        # random seed (data order, initialisation, dropout, dev split)
    device: str = control("auto")         # auto (cuda if available) | cpu | cuda | cuda:N
    model: str = "biformer"               # a name in bber_utils.models.MODEL_NAMES
    train_corpora: Any = "all"            # list of corpora, one name, or "all" (every corpus with manifests)
    run_name: str | None = control(None)  # default "{model}-s{seed}-{hash of the config}"
    # --- data and augmentation ---
    sds_ratio: float = 0.0                # SDS: share of train utterances merged (0 = off)
    sds_target_seconds: float = 4.0       # SDS: utterances shorter than this are extended ...
    sds_max_seconds: float = 8.0          # ... and merged clips cropped to this length
    tug_ratio: float = 0.0                # TUG: synthetic rows mixed into train, relative to train size (0 = off)
    tug_mode: str = "per_class"           # TUG mixing mode (bber_utils.augment.tug.mix_synthetic)
    ls_llm_p: float = stage1(0.0, "targets.0")  # LS-LLM: share of train samples whose target is the LLM distribution
    soft_labels: str | None = None        # soft-label table; None = <workdir>/ls_llm/soft_labels.parquet
    label_smoothing: float = stage1(0.0, "targets.1")  # uniform smoothing of one-hot targets (the baseline to LS-LLM)
    augment_unimodal: bool = False        # also train stage 1 of a fusion model on the augmented rows and targets
    balanced_sampling: bool = stage1(True, "opt.6")  # multi-corpus: each corpus drawn equally often per epoch
    class_weight_power: float | None = later(1.0, per_corpus=True, slot="class_weight_power", cast=float)  # loss weights = balanced weights ** power (1 balanced, 0.5 sqrt, 0 none); None: the corpora's (bber_utils.corpora.CLASS_WEIGHT_POWER: 0.5 for MELD alone, else 1)
    # --- features ---
    audio_encoder: str = "logmel"         # bber_utils.features.build_audio_encoder spec (name, hub id, path)
    text_encoder: str = "e5-words"        # bber_utils.features.build_text_encoder spec
    audio_layer: int | None = None        # hidden layer of a transformers audio encoder (None = its default)
    text_max_tokens: int = 95             # text encoder truncation
    text_context: int = 0                 # previous utterances of the dialogue given to the text branch (ours)
    text_context_mode: str = later("steps")  # context utterances as all their steps, or "mean": one step each
    text_context_speaker: bool = later(False, listed=False)  # context steps also flag a turn by the same speaker
    text_trust_remote_code: bool = False  # needed by jinaai/jina-embeddings-v3
    text_code_revision: str | None = None # remote-code commit of the text model
    feature_device: str = control("auto")  # where missing features are extracted
    feature_batch_size: int = control(16)  # utterances per encoder batch when missing features are extracted
    audio_pool: int = stage1(1, "audio_pool", modality="audio", neutral=1)  # average audio frames in windows of N (4: 50 -> 12.5 frames/s)
    audio_norm: str = later("none", listed=False)  # audio features z-scored per speaker / utterance (none: as stored)
    # --- optimisation (both stages) ---
    epochs: int = 75                      # maximum epochs of stage 2 (and of stage 1 unless unimodal_epochs is set)
    batch_size: int = stage1(8, "opt.0")  # global training batch size
    eval_batch_size: int = control(64)    # batch size for evaluation and encoder caching
    lr: float = 1e-4                      # AdamW learning rate of stage 2 (and stage 1 unless unimodal_lr is set)
    weight_decay: float = stage1(0.01, "opt.1")  # AdamW weight decay
    scheduler: str = stage1("plateau", "opt.2")  # plateau (per epoch, the reference's) | cosine (per step) | none
    warmup_ratio: float = stage1(0.0, "opt.3")  # share of all steps spent warming up linearly (cosine)
    patience: int = stage1(10, "opt.4")   # epochs without a strict dev-mean improvement before stopping
    grad_clip: float = stage1(1.0, "opt.5")  # max grad norm (0 = off)
    amp: str = control("auto")            # CUDA only: auto (bf16 if supported, else fp16) | bf16 | fp16 | off
    # --- stage 1: unimodal encoders ---
    unimodal_epochs: int | None = stage1(75, "epochs", fallback="epochs")  # epochs of stage 1 (None = epochs)
    unimodal_lr: float | None = stage1(None, "lr", fallback="lr")  # learning rate of stage 1 (None = lr)
    oof_folds: int = 3                    # K of the cross-fitted train logits for *_withprob / predictions_fusion
    # --- model sizes (bber_utils.models.ModelConfig; None = its default) ---
    hidden_dim: int | None = stage1(_MODEL.hidden_dim, "model")  # model width
    num_heads: int | None = _MODEL.num_heads  # attention heads of the cross-modal layers
    num_layers: int | None = _MODEL.num_layers  # cross-modal fusion layers
    mamba_layers: int | None = stage1(_MODEL.mamba_layers, "model")  # Mamba blocks per unimodal encoder
    mamba_d_state: int | None = stage1(_MODEL.mamba_d_state, "model")  # Mamba state size
    mamba_d_conv: int | None = stage1(_MODEL.mamba_d_conv, "model")  # Mamba convolution width
    bimamba_layers: int | None = None     # layers of the BiMamba fusion
    graph_heads: int | None = None        # attention heads of the graph fusion
    graph_conv: str | None = None         # graph convolution of BiGraphFormer
    graph_segments: int | None = None     # segments (graph nodes) per modality in BiGraphFormer
    gated_dim: int | None = None          # width of the gated fusion
    out_features: int | None = stage1(_MODEL.out_features, "model")  # width of the encoders' output features
    dropout: float | None = stage1(_MODEL.dropout, "model")  # dropout probability
    norm_first: bool | None = None        # pre-norm (True) or post-norm (False) Transformer layers
    ff_expansion: int | None = None       # cross layers' feed-forward H→eH→H (1 = the reference's, 4 = "ff4")
    pooling: str | None = later(None, listed=False, slot="model")  # encoders' pooling: mean (None) | stats | attention
    freeze_encoders: bool = _MODEL.freeze_encoders  # stage 2 keeps the pretrained unimodal encoders frozen
    # --- control ---
    resume: bool = control(True)          # continue an interrupted run / reuse a finished one with this config
    interrupt_after: int = control(0)     # stop after N epochs of this call as if interrupted (0 = never)
    progress: bool = control(True)        # tqdm progress bars
    num_threads: int = control(0)         # torch CPU threads during the run (0 = leave torch's setting)
    compile: bool = control(False)        # torch.compile the training forward (CUDA; compiles slowly on CPU)
    parallel_stage1: bool = control(True, listed=False)  # one torch thread, 2+ cores: stage 1's text encoder
    # trains in a second process beside the audio one (same numbers; bber_utils/train/parallel_stage1.py)
    @classmethod
    def from_dict(cls, d: dict[str, Any] | None = None, **overrides: Any) -> "TrainConfig":
        """Build from a profile / notebook parameter dict; keys that are not parameters here are ignored. A float
        key written as text (YAML 1.1 reads ``1e-4`` as a string) is taken as that number."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in {**dict(d or {}), **overrides}.items() if k in names}
        tc = cls(**_numbers_from_text(values))
        tc.check()
        return tc

    def check(self) -> None:
        """Raise ``ConfigError`` (one line: every bad key, its value and the valid range or choices): the type,
        range or choice of every key, and the model sizes as ``ModelConfig`` builds them (``None`` = its
        default), before any data is read."""

        bad = _check_types(self)  # {key: problem}; the other checks look at well-typed keys only
        bad.update(_check_ranges(self, bad))
        bad.update(_check_choices(self, bad))
        if not set(bad) & set(MODEL_KEYS):
            bad.update(_check_model_sizes(self))
        problems = list(bad.values())
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Every key; a key declared ``later(..., listed=False)`` is left out at its default."""
        meta = {f.name: f.metadata for f in dataclasses.fields(self)}
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (meta[k].get("unlisted") and v == meta[k]["later"])}

    def model_config(self):
        """The ``ModelConfig`` of this run (unset sizes take ModelConfig's defaults)."""

        return ModelConfig.from_dict({k: getattr(self, k) for k in MODEL_KEYS}, model=self.model,
                                     freeze_encoders=self.freeze_encoders)

    def identity(self) -> dict[str, Any]:
        """The keys that change the numbers (for run names and resume checks)."""
        meta = {f.name: f.metadata for f in dataclasses.fields(self)}
        out = {k: v for k, v in self.to_dict().items()
               if not meta[k].get("control") and not _at_default(v, meta[k])}
        if not self.stage1_choice_matters():  # no run name changes where the key changes nothing
            del out["augment_unimodal"]
        return out

    def for_corpora(self, corpora: list[str]) -> "TrainConfig":
        """This config for training on ``corpora``: a key left to the corpora (``class_weight_power`` None) set
        to their value (``corpora.class_weight_power_for``), so the run's hash, caches and files hold it."""
        if self.class_weight_power is not None:
            return self
        return dataclasses.replace(self, class_weight_power=class_weight_power_for(corpora))

    def augmented(self) -> bool:
        """True when the train rows or targets differ from the original one-hot ones."""
        return any(float(getattr(self, k)) > 0 for k in AUGMENT_KEYS)

    def stage1_choice_matters(self) -> bool:
        """True when ``augment_unimodal`` changes what stage 1 trains on: an augmented fusion model."""
        return self.augmented() and self.model not in UNIMODAL_MODELS

    def stage1_config(self) -> "TrainConfig":
        """The config stage 1 trains with. Augmentations (SDS, TUG, LS-LLM, label smoothing) train the model
        that was chosen: for ``audio_only``/``text_only`` that is stage 1 itself; for a fusion model, stage 2,
        on top of unimodal encoders trained once on the original rows with one-hot targets (the reference's
        protocol: its frozen unimodal models were trained without them), so every augmentation setting of a
        seed shares one stage 1. ``augment_unimodal=True`` trains stage 1 on the augmented rows and targets."""
        if self.augment_unimodal or not self.stage1_choice_matters():
            return self
        return dataclasses.replace(self, sds_ratio=0.0, tug_ratio=0.0, ls_llm_p=0.0, label_smoothing=0.0)


# Keys that do not change a run's numbers: left out of the run hash (the fields marked ``control``).
CONTROL_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("control"))
# Model keys of bber_utils.models.ModelConfig (None here = ModelConfig's own default).
MODEL_KEYS = ("hidden_dim", "num_heads", "num_layers", "mamba_layers", "mamba_d_state", "mamba_d_conv",
              "bimamba_layers", "graph_heads", "graph_conv", "graph_segments", "gated_dim", "out_features",
              "dropout", "norm_first", "ff_expansion", "pooling")
# The model keys that shape a unimodal classifier (in its cache key: ``stage1`` slot "model").
UNIMODAL_MODEL_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("stage1") == "model")


def stage1_key(tc: TrainConfig, modality: str) -> dict[str, Any]:
    """The part of a unimodal model's cache key that the config gives (``unimodal._unimodal_hash`` adds the
    features, rows and soft labels): every field with ``stage1`` metadata, at its slot (see ``stage1``)."""
    sizes = tc.model_config().to_dict()
    key: dict[str, Any] = {}
    for f in dataclasses.fields(tc):
        how, value = f.metadata, getattr(tc, f.name)
        if "stage1" not in how or _at_default(value, how):
            continue
        if how["stage1"] == "model":
            if f.name in sizes:  # ModelConfig leaves a later key out at its own default
                key.setdefault("model", {})[f.name] = sizes[f.name]
            continue
        value = (value or getattr(tc, how["fallback"])) if "fallback" in how else value
        value = how["neutral"] if how.get("modality", modality) != modality else value
        value = how["cast"](value) if "cast" in how else value
        slot, _, index = how["stage1"].partition(".")
        if index:
            key.setdefault(slot, {})[int(index)] = value
        else:
            key[slot] = value
    lists = {slot: [items[i] for i in range(len(items))] for slot, items in key.items()
             if slot != "model" and isinstance(items, dict)}
    return {**key, **lists}


# Ranges of the numeric keys: (low, low included, high, high included); ``None`` values (where allowed) and the
# model sizes (``ModelConfig`` checks them) are not listed.
_INF = float("inf")
_RANGES = {
    "seed": (0, True, 2**32, False), "text_max_tokens": (1, True, _INF, True), "text_context": (0, True, _INF, True),
    "feature_batch_size": (1, True, _INF, True), "audio_pool": (1, True, _INF, True), "epochs": (1, True, _INF, True),
    "batch_size": (1, True, _INF, True), "eval_batch_size": (1, True, _INF, True), "patience": (1, True, _INF, True),
    "unimodal_epochs": (0, True, _INF, True), "oof_folds": (2, True, _INF, True),
    "interrupt_after": (0, True, _INF, True), "num_threads": (0, True, _INF, True),
    "sds_ratio": (0, True, 1, True), "sds_target_seconds": (0, False, _INF, True),
    "sds_max_seconds": (0, False, _INF, True), "tug_ratio": (0, True, _INF, True), "ls_llm_p": (0, True, 1, True),
    "label_smoothing": (0, True, 1, False), "class_weight_power": (0, True, _INF, True), "lr": (0, False, _INF, True),
    "weight_decay": (0, True, _INF, True), "warmup_ratio": (0, True, 1, True), "grad_clip": (0, True, _INF, True),
    "unimodal_lr": (0, True, _INF, True),
}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _numbers_from_text(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the float keys given as numeric text (``"1e-4"``) turned into floats."""
    kinds = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    out = dict(values)
    for k, v in values.items():
        if kinds.get(k, "").startswith("float") and isinstance(v, str):
            try:
                out[k] = float(v)
            except ValueError:
                pass  # the check names it
    return out


def _type_problem(name: str, kind: str, v: Any) -> str | None:
    """Why ``v`` is not of the field type ``kind`` ("int", "float | None", "bool", "str", "Any" ...), or None."""
    base, optional = kind.split(" | ")[0], kind.endswith("| None")
    null = " (or null)" if optional else ""
    if v is None:
        return None if optional or base == "Any" else f"{name} must be set (got null)"
    is_bool = type(v).__name__ in ("bool", "bool_")  # numpy's bool too; the string "false" is truthy
    if base == "bool":
        return None if is_bool else f"{name} must be true or false{null} (got {v!r})"
    if base == "str":
        ok = isinstance(v, (str, os.PathLike)) if name in ("workdir", "soft_labels") else isinstance(v, str)
        return None if ok else f"{name} must be a string{null} (got {v!r})"
    if base not in ("int", "float"):
        return None
    if is_bool or not isinstance(v, numbers.Real):
        try:
            float(v)
        except (TypeError, ValueError):
            return f"{name} must be a number{null} (got {v!r})"
        return f"{name} must be {'an integer' if base == 'int' else 'a number'}{null} (got {v!r})"
    if base == "int" and not isinstance(v, numbers.Integral):
        return f"{name} must be an integer{null} (got {v!r})"
    if not math.isfinite(v):
        return f"{name} must be a finite number (got {v!r})"
    return None


def _check_types(tc: TrainConfig) -> dict[str, str]:
    """``{key: problem}`` of the keys that are not of their field's type (integers, flags ...)."""
    return {f.name: p for f in dataclasses.fields(tc) if (p := _type_problem(f.name, f.type, getattr(tc, f.name)))}


def _range_text(lo, lo_in, hi, hi_in) -> str:
    if hi == _INF:
        return f"{'>=' if lo_in else '>'} {lo}"
    return f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def _check_ranges(tc: TrainConfig, bad: dict[str, str]) -> dict[str, str]:
    """The numeric keys (but those in ``bad``) in their ranges (``_RANGES``); ``sds_max_seconds >=
    sds_target_seconds``."""
    problems = {}
    for key, (lo, lo_in, hi, hi_in) in _RANGES.items():
        v = getattr(tc, key)
        if v is None or key in bad:
            continue
        if not ((v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)):
            problems[key] = f"{key} must be {_range_text(lo, lo_in, hi, hi_in)} (got {v!r})"
    seconds = ("sds_max_seconds", "sds_target_seconds")
    if not (set(bad) | set(problems)) & set(seconds) and tc.sds_max_seconds < tc.sds_target_seconds:
        problems["sds_max_seconds"] = (f"sds_max_seconds ({tc.sds_max_seconds}) must be >= sds_target_seconds "
                                       f"({tc.sds_target_seconds})")
    return problems


def _check_choices(tc: TrainConfig, bad: dict[str, str]) -> dict[str, str]:
    """Names from a list (model, scheduler ...), devices, encoders, folders and the corpus list (the keys not
    in ``bad``)."""

    problems = {}
    for key, choices in (("model", MODEL_NAMES), ("scheduler", SCHEDULERS), ("amp", AMP_MODES),
                         ("text_context_mode", ("steps", "mean")), ("tug_mode", MIX_MODES),
                         ("audio_norm", AUDIO_NORMS)):
        if getattr(tc, key) not in choices:
            problems[key] = str(unknown(key, getattr(tc, key), choices))
    for key in ("device", "feature_device"):
        if getattr(tc, key) and not _DEVICE.match(getattr(tc, key)):
            problems[key] = f"{key} {getattr(tc, key)!r} is not a device: use {DEVICE_CHOICES}"
    for key, known in (("audio_encoder", ("logmel",)), ("text_encoder", OFFLINE_TEXT_ENCODERS)):
        try:
            check_model_spec(getattr(tc, key), known, key)
        except ConfigError as exc:
            problems[key] = str(exc)
    if tc.audio_layer is not None and tc.audio_encoder == "logmel":
        problems["audio_layer"] = f"audio_layer={tc.audio_layer}: the logmel encoder has no layers (leave it null)"
    for key in ("workdir", "soft_labels", "text_code_revision"):
        if getattr(tc, key) is not None and not str(getattr(tc, key)).strip():
            problems[key] = f"{key} must not be empty (got {getattr(tc, key)!r})"
    name = tc.run_name
    if name is not None and (not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0")):
        problems["run_name"] = f"run_name must be a folder name under <workdir>/train (got {name!r})"
    corpora = _check_corpora(tc.train_corpora)
    if corpora:
        problems["train_corpora"] = corpora
    return {k: p for k, p in problems.items() if k not in bad}


def _check_corpora(value: Any) -> str | None:
    """Why ``train_corpora`` is not "all" (or null), one name, or a non-empty list of distinct names."""
    names = [value] if isinstance(value, str) else value
    if value is None:
        return None
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(c, str) and c.strip()
                                                                    for c in names):
        return f"train_corpora must be all, a corpus name or a non-empty list of names (got {value!r})"
    if len(set(names)) != len(names):
        return f"train_corpora names a corpus twice (got {value!r})"
    return None


def _check_model_sizes(tc: TrainConfig) -> dict[str, str]:
    """The model sizes as ``ModelConfig`` builds them (``None`` = its default): hidden_dim divisible by
    num_heads, dropout in [0, 1) ..."""
    try:
        tc.model_config()
    except ValueError as exc:
        return {"model sizes": str(exc).removeprefix("invalid model config: ")}
    return {}


def config_hash(obj: Any, n: int = 8) -> str:
    """A short hex digest of ``obj`` as sorted JSON: run names and cache folders."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()[:n]


def feature_spec(tc: TrainConfig) -> dict[str, Any]:
    """How the model's inputs were made (stored in every checkpoint, for inference)."""
    spec = {k: getattr(tc, k) for k in ("audio_encoder", "text_encoder", "audio_layer", "text_max_tokens",
                                        "text_trust_remote_code", "text_code_revision", "audio_pool",
                                        "text_context", "text_context_mode")}
    later_keys = ("audio_norm", "text_context_speaker")  # only when set, so earlier checkpoints read the same
    return {**spec, **{k: v for k, v in tc.to_dict().items() if k in later_keys}}


def config_key_descriptions() -> dict[str, str]:
    """``{field: one-line description}`` of ``TrainConfig``: the comment after the field in the class body."""
    return {**field_comments(TrainConfig), "model": "one of " + ", ".join(MODEL_NAMES)}


def config_keys_help() -> str:
    """The ``--help`` epilog: every key with its default and description."""
    desc = config_key_descriptions()
    lines = ["keys (key=value; the profile's value, else this default):"]
    for f in dataclasses.fields(TrainConfig):
        lines.append(f"  {f.name:<22} {f.default!r:<14} {desc[f.name]}")
    return "\n".join(lines)
