"""The trainer: unimodal encoders first, then the chosen fusion model; metrics per corpus; resumable runs.

``train(cfg) -> RunResult`` takes the notebook-06 parameters (every key and its default: ``TrainConfig``):

1. corpora: ``train_corpora`` (a list, or ``"all"`` = every corpus with manifests in ``<workdir>/manifests``);
2. the train manifest: original rows + SDS (``sds_ratio``) + TUG (``tug_ratio``); dev and test untouched;
3. features for every row (``audio_encoder``, ``text_encoder`` ...), kept in ``<workdir>/features``;
4. stage 1: the audio-only and text-only Mamba classifiers, trained on train, early-stopped on dev, cached
   under ``<workdir>/train/_unimodal/<hash>/`` by a hash of everything that changes them. For prediction
   fusion and the *_withprob models, out-of-fold train logits by K-fold cross-fitting (``oof_folds``): the
   fusion never sees a logit from a unimodal model that was trained on that sample (the reference's stacking
   leak, notes §11.9); dev/test logits come from the full unimodal models;
5. stage 2: the chosen model with the unimodal encoders loaded and, by default, frozen; frozen encoders are run
   once per utterance and their outputs cached, so each epoch trains only the fusion layers;
6. ``<workdir>/train/<run>/``: ``metrics.json``, ``history.csv``, ``best.pt``, ``last.pt``, ``config.json``.

Loss: class-weighted soft-target cross-entropy (``data.soft_cross_entropy``). AdamW; warm-up + cosine (or
plateau / none); early stopping on the dev mean of (UAR, WAR, MF1, WF1) averaged over corpora. Deterministic on
CPU for a seed: every epoch reseeds the torch RNG (dropout) and the samplers from ``(seed, epoch)``, so a run
resumed from ``last.pt`` gives the same numbers as an uninterrupted one (tests/test_train.py).

Distributed training: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) ``train`` joins the process
group (nccl on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on CPU) and trains with DistributedDataParallel.
``batch_size`` stays the *global* batch: each global batch of the single-process epoch order is split across the
ranks (``data.RankBatchSampler``, also for the balanced multi-corpus sampler) and the loss is normalised by the
class-weighted target mass of the whole global batch, so the all-reduced gradient is the single-process one and
a 2-process run gives the single-process metrics up to float summation order (and dropout masks, which each
rank draws for its own samples; docs/scaling.md gives the measured difference). Rank 0 does the per-epoch dev
evaluation and broadcasts the score (early stopping, plateau scheduler); the final dev/test scoring and the
encoder caches run on every rank on identical weights, so every rank returns the same metrics without a gather.
Rank 0 writes every file (``is_main_process``); it extracts features / SDS clips first while the others wait
(``rank_zero_first``), and barriers keep the others from reading a cache or checkpoint before it is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .labels import CLASSES, NUM_CLASSES
from .metrics import METRIC_NAMES, mean_over_corpora, score_logits
from .paths import REPO_ROOT, run_dirs

log = logging.getLogger(__name__)

UNIMODAL_MODELS = ("audio_only", "text_only")
SCHEDULERS = ("cosine", "plateau", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
# Keys that do not change a run's numbers: left out of the run hash.
CONTROL_KEYS = ("run_name", "resume", "interrupt_after", "progress", "device", "amp", "workdir", "eval_batch_size",
                "num_threads", "feature_device", "feature_batch_size", "compile")
# Model keys of bber_utils.models.ModelConfig (None here = ModelConfig's own default).
MODEL_KEYS = ("hidden_dim", "num_heads", "num_layers", "mamba_layers", "mamba_d_state", "mamba_d_conv",
              "bimamba_layers", "graph_heads", "graph_conv", "graph_segments", "gated_dim", "out_features",
              "dropout", "norm_first")
# The model keys that shape a unimodal classifier (its cache hash).
UNIMODAL_MODEL_KEYS = ("hidden_dim", "mamba_layers", "mamba_d_state", "mamba_d_conv", "out_features", "dropout")


@dataclass
class TrainConfig:
    """Every parameter of ``train`` (the notebook-06 parameters), with its default.

    Model sizes left at ``None`` take ``bber_utils.models.ModelConfig``'s defaults (the paper's sizes).
    """

    # --- where and what ---
    workdir: str = "runs/demo"            # the profile's work folder
    seed: int = 42
    device: str = "auto"                  # auto (cuda if available) | cpu | cuda | cuda:N
    model: str = "biformer"               # a name in bber_utils.models.MODEL_NAMES
    train_corpora: Any = "all"            # list of corpora, one name, or "all" (every corpus with manifests)
    run_name: str | None = None           # default "{model}-s{seed}-{hash of the config}"
    # --- data and augmentation ---
    sds_ratio: float = 0.0                # SDS: share of train utterances merged (0 = off)
    sds_target_seconds: float = 4.0       # SDS: utterances shorter than this are extended ...
    sds_max_seconds: float = 8.0          # ... and merged clips cropped to this length
    tug_ratio: float = 0.0                # TUG: synthetic rows mixed into train, relative to train size (0 = off)
    tug_mode: str = "per_class"           # TUG mixing mode (bber_utils.augment.tug.mix_synthetic)
    ls_llm_p: float = 0.0                 # LS-LLM: share of train samples whose target is the LLM distribution
    soft_labels: str | None = None        # soft-label table; None = <workdir>/ls_llm/soft_labels.parquet
    label_smoothing: float = 0.0          # uniform smoothing of one-hot targets (the baseline to LS-LLM)
    balanced_sampling: bool = True        # multi-corpus: each corpus drawn equally often per epoch
    class_weight_power: float = 1.0       # loss weights = balanced weights ** power (1 balanced, 0.5 sqrt, 0 none)
    # --- features ---
    audio_encoder: str = "logmel"         # bber_utils.features.build_audio_encoder spec (name, hub id, path)
    text_encoder: str = "e5-words"        # bber_utils.features.build_text_encoder spec
    audio_layer: int | None = None        # hidden layer of a transformers audio encoder (None = its default)
    text_max_tokens: int = 95             # text encoder truncation
    text_context: int = 0                 # previous utterances of the dialogue given to the text branch (ours)
    text_context_mode: str = "steps"      # context utterances as all their steps, or "mean": one step each
    text_trust_remote_code: bool = False  # needed by jinaai/jina-embeddings-v3
    text_code_revision: str | None = None # remote-code commit of the text model
    feature_device: str = "auto"          # where missing features are extracted
    feature_batch_size: int = 16
    audio_pool: int = 1                   # average audio frames in windows of N (4: 50 -> 12.5 frames/s)
    # --- optimisation (both stages) ---
    epochs: int = 75
    batch_size: int = 8
    eval_batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.01
    scheduler: str = "cosine"             # cosine (per step, after warm-up) | plateau (per epoch) | none
    warmup_ratio: float = 0.1             # share of all steps spent warming up linearly
    patience: int = 10                    # epochs without a strict dev-mean improvement before stopping
    grad_clip: float = 1.0                # max grad norm (0 = off)
    amp: str = "auto"                     # CUDA only: auto (bf16 if supported, else fp16) | bf16 | fp16 | off
    # --- stage 1: unimodal encoders ---
    unimodal_epochs: int | None = None    # None = epochs
    unimodal_lr: float | None = None      # None = lr
    oof_folds: int = 3                    # K of the cross-fitted train logits for *_withprob / predictions_fusion
    # --- model sizes (bber_utils.models.ModelConfig) ---
    hidden_dim: int | None = None
    num_heads: int | None = None
    num_layers: int | None = None
    mamba_layers: int | None = None
    mamba_d_state: int | None = None
    mamba_d_conv: int | None = None
    bimamba_layers: int | None = None
    graph_heads: int | None = None
    graph_conv: str | None = None
    graph_segments: int | None = None
    gated_dim: int | None = None
    out_features: int | None = None
    dropout: float | None = None
    norm_first: bool | None = None
    freeze_encoders: bool = True          # stage 2 keeps the pretrained unimodal encoders frozen
    # --- control ---
    resume: bool = True                   # continue an interrupted run / reuse a finished one with this config
    interrupt_after: int = 0              # stop after N epochs of this call as if interrupted (0 = never)
    progress: bool = True                 # tqdm progress bars
    num_threads: int = 0                  # torch CPU threads during the run (0 = leave torch's setting)
    compile: bool = False                 # torch.compile the training forward (CUDA; compiles slowly on CPU)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None = None, **overrides: Any) -> "TrainConfig":
        """Build from a profile / notebook parameter dict; keys that are not parameters here are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in {**dict(d or {}), **overrides}.items() if k in names}
        tc = cls(**values)
        tc.check()
        return tc

    def check(self) -> None:
        problems = []
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler must be one of {SCHEDULERS} (got {self.scheduler!r})")
        if self.amp not in AMP_MODES:
            problems.append(f"amp must be one of {AMP_MODES} (got {self.amp!r})")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, key)) < 1:
                problems.append(f"{key} must be >= 1 (got {getattr(self, key)!r})")
        for key in ("sds_ratio", "tug_ratio", "ls_llm_p", "warmup_ratio", "class_weight_power"):
            if float(getattr(self, key)) < 0:
                problems.append(f"{key} must be >= 0 (got {getattr(self, key)!r})")
        if not 0 <= self.ls_llm_p <= 1:
            problems.append(f"ls_llm_p must be in [0, 1] (got {self.ls_llm_p!r})")
        if self.oof_folds < 2:
            problems.append(f"oof_folds must be >= 2 (got {self.oof_folds!r})")
        if self.text_context_mode not in ("steps", "mean"):
            problems.append(f"text_context_mode must be 'steps' or 'mean' (got {self.text_context_mode!r})")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self):
        """The ``ModelConfig`` of this run (unset sizes take ModelConfig's defaults)."""
        from .models.config import ModelConfig

        return ModelConfig.from_dict({k: getattr(self, k) for k in MODEL_KEYS}, model=self.model,
                                     freeze_encoders=self.freeze_encoders)

    def identity(self) -> dict[str, Any]:
        """The keys that change the numbers (for run names and resume checks)."""
        out = {k: v for k, v in self.to_dict().items() if k not in CONTROL_KEYS}
        for key, default in (("class_weight_power", 1.0), ("text_context_mode", "steps")):
            if out.get(key) == default:  # a default added later leaves earlier run names unchanged
                del out[key]
        return out


@dataclass
class RunResult:
    """What ``train`` returns: the run folder and what it wrote."""

    run_dir: Path
    metrics: dict[str, Any]                 # the content of metrics.json
    history: pd.DataFrame                   # one row per epoch of stage 2 (history.csv)
    unimodal_history: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def best_epoch(self) -> int:
        return int(self.metrics["best_epoch"])

    def table(self, splits: tuple[str, ...] = ("dev", "test")) -> pd.DataFrame:
        """Rows ``model, corpus, split, uar, war, mf1, wf1, mean`` for this model and the unimodal baselines."""
        rows = []
        sources = {self.metrics["model"]: self.metrics["metrics"], **self.metrics.get("unimodal", {})}
        for model, per_corpus in sources.items():
            for corpus, per_split in per_corpus.items():
                for split in splits:
                    if split in per_split:
                        rows.append({"model": model, "corpus": corpus, "split": split,
                                     **{m: per_split[split][m] for m in (*METRIC_NAMES, "mean")}})
        return pd.DataFrame(rows).drop_duplicates(["model", "corpus", "split"]).reset_index(drop=True)


# ============================================================================ distributed-ready helpers
def dist_info() -> tuple[int, int]:
    """(rank, world_size): from torch.distributed when initialised, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (or without distributed training): the process that writes files and shows progress."""
    return dist_info()[0] == 0


def init_distributed(device) -> Any:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (nccl for a CUDA device, gloo otherwise).

    Returns the device this rank trains on: ``cuda:LOCAL_RANK`` for a CUDA run without an explicit index, else
    ``device`` unchanged. Without torchrun (or ``WORLD_SIZE=1``) nothing happens. Collectives time out after
    ``BBER_DIST_TIMEOUT_S`` seconds (default 2 h: rank 0 may be extracting features while the others wait).
    """
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set: start distributed runs with "
                                   f"torchrun --nproc_per_node N ...")
        # Long enough for rank 0 to extract missing features while the others wait at a barrier.
        timeout = datetime.timedelta(seconds=float(os.environ.get("BBER_DIST_TIMEOUT_S", 2 * 3600)))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return device


def barrier() -> None:
    """Wait for every rank (a no-op without distributed training)."""
    if dist_info()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; small objects only). Unchanged without distributed training."""
    if dist_info()[1] == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def rank_zero_first():
    """Rank 0 runs the block first (it writes the caches); the other ranks run it after, reading them."""
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


def _forward_module(model, forward: Callable):
    """``model`` with ``forward(model, batch)`` as its ``forward``: what DDP wraps, so that every training
    forward (also ``fuse`` on cached encodings) goes through DDP and its gradients are all-reduced."""
    import torch

    class ForwardModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return forward(self.model, batch)

    return ForwardModule()


def wrap_model(model, device):
    """The one place where the model is wrapped for training (DistributedDataParallel when initialised)."""
    _, world = dist_info()
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    return model


def unwrap_model(model):
    return getattr(model, "module", model)


# ============================================================================ small utilities
def resolve_device(spec: str = "auto"):
    import torch

    if spec in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={spec!r} but CUDA is not available; use device=auto or cpu")
    return dev


def config_hash(obj: Any, n: int = 8) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()[:n]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _atomic_write_bytes(path: Path, write: Callable) -> None:
    from .fileio import atomic_write

    atomic_write(path, write)


def save_json(obj: Any, path: Path) -> None:
    if not is_main_process():
        return

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False, default=str)

    _atomic_write_bytes(path, write)


def save_checkpoint(obj: dict, path: Path) -> None:
    """``torch.save`` atomically (rank 0 only); tensors are moved to CPU first."""
    if not is_main_process():
        return
    import torch

    _atomic_write_bytes(path, lambda tmp: torch.save(_to_cpu(obj), tmp))


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint on CPU, whatever device wrote it."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _to_cpu(obj):
    import torch

    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _to_device(batch: dict, device) -> dict:
    import torch

    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = _to_device(v, device)
        else:
            out[k] = v
    return out


def _state_dict_cpu(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in unwrap_model(model).state_dict().items()}


# ============================================================================ data assembly
def resolve_corpora(train_corpora: Any, workdir) -> list[str]:
    """``"all"`` -> every corpus with a train manifest in ``<workdir>/manifests``; a name or list as given."""
    dirs = run_dirs(workdir)
    available = sorted({p.name[: -len("_train.parquet")] for p in dirs.manifests.glob("*_train.parquet")})
    if train_corpora in (None, "all", ["all"]):
        if not available:
            raise FileNotFoundError(f"no train manifests in {dirs.manifests}; run notebook 01 (prepare data) first")
        return available
    corpora = [train_corpora] if isinstance(train_corpora, str) else list(train_corpora)
    missing = [c for c in corpora if c not in available]
    if missing:
        raise FileNotFoundError(f"train_corpora {missing}: no manifests {dirs.manifests}/<corpus>_train.parquet "
                                f"(available: {available or 'none'})")
    return corpora


def load_splits(corpora: list[str], workdir) -> dict[str, pd.DataFrame]:
    """``{"train"|"dev"|"test": manifest of all corpora}`` read from ``<workdir>/manifests``."""
    from .corpora.manifest import concat_manifests, load_manifest

    dirs = run_dirs(workdir)
    out = {}
    for split in ("train", "dev", "test"):
        frames = []
        for c in corpora:
            path = dirs.manifest(c, split)
            if not path.exists():
                raise FileNotFoundError(f"manifest {path} is missing (corpus {c!r}, split {split!r})")
            frames.append(load_manifest(path))
        out[split] = concat_manifests(frames)
        if len(out[split]) == 0 and split != "test":  # a corpus without a test split is scored on dev
            raise ValueError(f"split {split!r} of {corpora} is empty")
    return out


def build_train_manifest(tc: TrainConfig, train_df: pd.DataFrame) -> pd.DataFrame:
    """Original train rows + SDS merges (``sds_ratio``) + TUG synthetic rows (``tug_ratio``)."""
    from .corpora.manifest import concat_manifests, load_manifest

    dirs = run_dirs(tc.workdir)
    out = train_df
    if tc.sds_ratio > 0:
        try:
            from .augment.sds import apply_sds
        except ImportError as err:
            raise ImportError(f"sds_ratio={tc.sds_ratio} needs bber_utils.augment.sds ({err})") from err
        out = apply_sds(train_df, ratio=tc.sds_ratio, seed=tc.seed, out_dir=dirs.sds,
                        target_seconds=tc.sds_target_seconds, max_seconds=tc.sds_max_seconds,
                        progress=tc.progress and is_main_process())
    if tc.tug_ratio > 0:
        try:
            from .augment.tug import mix_synthetic
        except ImportError as err:
            raise ImportError(f"tug_ratio={tc.tug_ratio} needs bber_utils.augment.tug ({err})") from err
        langs = sorted(set(out["language"]))
        paths = [dirs.tug / f"tug_{lang}.parquet" for lang in langs]
        found = [p for p in paths if p.exists()]
        if not found:
            raise FileNotFoundError(f"tug_ratio={tc.tug_ratio} but no synthetic manifest "
                                    f"{' or '.join(map(str, paths))}; run notebook 04 (TUG) first")
        synthetic = concat_manifests([load_manifest(p) for p in found])
        out = mix_synthetic(out, synthetic, ratio=tc.tug_ratio, mode=tc.tug_mode, seed=tc.seed)
    return out.reset_index(drop=True)


def load_soft_labels_for(tc: TrainConfig) -> pd.DataFrame | None:
    """The LS-LLM table when ``ls_llm_p > 0`` (else None)."""
    if tc.ls_llm_p <= 0:
        return None
    path = Path(tc.soft_labels) if tc.soft_labels else run_dirs(tc.workdir).ls_llm / "soft_labels.parquet"
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.exists():
        raise FileNotFoundError(f"ls_llm_p={tc.ls_llm_p} but the soft-label table {path} does not exist; "
                                f"run notebook 05 (LS-LLM) or set soft_labels=<path>")
    try:
        from .augment.ls_llm import load_soft_labels
    except ImportError as err:
        raise ImportError(f"ls_llm_p={tc.ls_llm_p} needs bber_utils.augment.ls_llm ({err})") from err
    return load_soft_labels(path)


def build_feature_stores(tc: TrainConfig, manifest: pd.DataFrame) -> tuple[Any, Any]:
    """Audio and text feature stores covering ``manifest`` (extracts what is missing)."""
    from .features import ensure_features
    from .features.extract import encoders_from_params

    dirs = run_dirs(tc.workdir)
    device = tc.feature_device
    audio_enc, text_enc = encoders_from_params(tc.to_dict())  # the same store keys as notebook 02
    from .features.extract import has_audio

    audio = None  # text_only trains without audio; rows without audio (text-only manifests) are not extracted
    if tc.model != "text_only" and has_audio(manifest).any():
        audio = ensure_features(manifest[has_audio(manifest)], "audio", audio_enc, dirs.features,
                                batch_size=tc.feature_batch_size, device=device,
                                progress=tc.progress and is_main_process())
    text = ensure_features(manifest, "text", text_enc, dirs.features, batch_size=tc.feature_batch_size,
                           device=device, progress=tc.progress and is_main_process())
    return audio, text


def _store_key(store) -> str:
    """What identifies a store's numbers (its folder name carries the encoder key hash)."""
    path = getattr(store, "path", None)
    return Path(path).name if path is not None else getattr(store, "key", type(store).__name__)


def filter_available(df: pd.DataFrame, stores: tuple, where: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows whose audio and text features both exist and are non-empty; the rest counted by reason."""
    keep, reasons = [], {}
    for u in df["utt_id"].astype(str):
        reason = None
        for modality, store in zip(("audio", "text"), stores):
            if store is None:
                continue
            if u not in store:
                reason = f"no {modality} features"
                break
            if len(store[u]) == 0:
                reason = f"empty {modality} features"
                break
        keep.append(reason is None)
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        warnings.warn(f"{where}: skipped {sum(reasons.values())} of {len(df)} utterances: {reasons}", stacklevel=2)
    return df.loc[np.asarray(keep, dtype=bool)].reset_index(drop=True), reasons


# ============================================================================ the training loop
def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _make_scheduler(optimizer, tc: TrainConfig, total_steps: int):
    import torch

    if tc.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2,
                                                          min_lr=1e-7)
    warm = int(round(tc.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if tc.scheduler == "none":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _amp_settings(tc: TrainConfig, device):
    """(autocast dtype or None, use GradScaler) — mixed precision on CUDA only."""
    import torch

    if device.type != "cuda" or tc.amp == "off":
        return None, False
    if tc.amp == "bf16" or (tc.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def predict(model, dataset, forward: Callable, device, batch_size: int = 64, amp_dtype=None) -> np.ndarray:
    """Logits (N, 7) float32 for every sample of ``dataset`` in order."""
    import torch
    from torch.utils.data import DataLoader

    from .data import collate

    model.eval()
    out = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            batch = _to_device(batch, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out.append(forward(model, batch).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def evaluate(model, datasets: dict[str, Any], forward, device, batch_size=64, amp_dtype=None):
    """``({corpus: score}, {corpus: logits})`` for datasets keyed by corpus."""
    scores, logits = {}, {}
    for corpus, ds in datasets.items():
        lg = predict(model, ds, forward, device, batch_size, amp_dtype)
        logits[corpus] = lg
        scores[corpus] = score_logits(ds.labels, lg)
    return scores, logits


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    best_score: float
    history: pd.DataFrame
    finished: bool                         # False when stopped by ``interrupt_after``


class Interrupted(RuntimeError):
    """Raised by ``train`` when ``interrupt_after`` stopped a run early; rerun with ``resume=True``."""


def fit(model, train_ds, dev_sets: dict[str, Any], *, tc: TrainConfig, ckpt_dir: Path, weights: np.ndarray,
        device, forward: Callable, lr: float, epochs: int, checkpoint_meta: dict, desc: str = "train") -> FitResult:
    """Train ``model`` on ``train_ds``, early-stopped on the mean dev score of ``dev_sets``.

    Writes ``ckpt_dir/last.pt`` (everything needed to resume) after every epoch and ``ckpt_dir/best.pt`` at
    every improvement; with ``tc.resume`` an existing ``last.pt`` with the same ``checkpoint_meta`` is continued.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .data import (BalancedCorpusSampler, PaddedDataset, RankBatchSampler, ShuffleSampler, collate,
                       soft_cross_entropy_parts)

    rank, world = dist_info()
    main = is_main_process()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay)
    if tc.balanced_sampling and len(set(train_ds.corpora)) > 1:
        order = BalancedCorpusSampler(train_ds.corpora, seed=tc.seed)
    else:
        order = ShuffleSampler(len(train_ds), seed=tc.seed)
    batches = RankBatchSampler(order, tc.batch_size, rank=rank, world_size=world)  # global batches, split by rank
    steps_per_epoch = len(batches)
    scheduler = _make_scheduler(optimizer, tc, steps_per_epoch * epochs)
    amp_dtype, use_scaler = _amp_settings(tc, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    w = torch.as_tensor(weights, dtype=torch.float32, device=device)
    train_model = wrap_model(_forward_module(model, forward), device)
    if tc.compile:
        train_model = torch.compile(train_model)

    start_epoch, best_score, best_epoch, bad_epochs, rows = 0, -1.0, -1, 0, []
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    barrier()  # every rank sees the same last.pt
    if tc.resume and last_path.exists():
        state = load_checkpoint(last_path)
        if state.get("meta") != json.loads(json.dumps(checkpoint_meta, default=str)):
            raise ValueError(f"{last_path} was written with another configuration; use another run_name or "
                             f"resume=False to start over")
        unwrap_model(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        bad_epochs, rows = state["bad_epochs"], state["history"]
        if state.get("finished"):
            best = load_checkpoint(best_path)
            return FitResult(best["model"], best_epoch, best_score, pd.DataFrame(rows), True)
    elif main and ckpt_dir.exists():
        for p in (last_path, best_path):
            p.unlink(missing_ok=True)
    barrier()  # no rank starts before rank 0 has cleared old checkpoints

    bar = tqdm(total=epochs, initial=start_epoch, desc=desc, disable=not (tc.progress and main), leave=True)
    finished, epochs_this_call = False, 0
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        torch.manual_seed(tc.seed * 1009 + epoch)  # dropout of this epoch, whatever ran before (resume-safe)
        train_ds.set_epoch(epoch)
        batches.set_epoch(epoch)
        train_model.train()
        loader = DataLoader(PaddedDataset(train_ds), batch_sampler=batches, collate_fn=collate,
                            pin_memory=device.type == "cuda")
        total, count = 0.0, 0
        for batch in loader:
            batch = _to_device(batch, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = train_model(batch)
            numerator, denominator = soft_cross_entropy_parts(logits, batch["target"], w)
            n_real = (batch["target"].sum(1) > 0).sum()  # samples of this rank that are not padding
            if world > 1:  # sums over the global batch: the gradient DDP averages is the single-process one
                sums = dist_sum(torch.stack([numerator.detach(), denominator.detach(), n_real.float()]))
                loss = numerator / sums[1].clamp_min(1e-12) * world
                batch_loss, n_batch = float(sums[0] / sums[1].clamp_min(1e-12)), int(sums[2])
            else:
                loss = numerator / denominator.clamp_min(1e-12)
                batch_loss, n_batch = float(loss.detach()), int(n_real)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if tc.scheduler != "plateau":
                scheduler.step()
            total += batch_loss * n_batch
            count += n_batch
        dev_scores = None
        if main:  # the early-stopping signal: rank 0 evaluates, every rank gets its score
            dev_scores, _ = evaluate(model, dev_sets, forward, device, tc.eval_batch_size, amp_dtype)
        dev_scores = broadcast_from_main(dev_scores)
        dev_mean = mean_over_corpora(dev_scores)
        if tc.scheduler == "plateau":
            scheduler.step(dev_mean)
        improved = dev_mean > best_score
        if improved:
            best_score, best_epoch, bad_epochs = dev_mean, epoch, 0
            save_checkpoint({"model": _state_dict_cpu(model), "epoch": epoch, "score": dev_mean,
                             **checkpoint_meta}, best_path)
        else:
            bad_epochs += 1
        row = {"epoch": epoch, "train_loss": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"],
               "dev_mean": dev_mean, "seconds": time.perf_counter() - t0}
        for corpus, s in dev_scores.items():
            row.update({f"dev_{corpus}_{m}": s[m] for m in (*METRIC_NAMES, "mean")})
        rows.append(row)
        stop = bad_epochs >= tc.patience
        finished = stop or epoch == epochs - 1
        save_checkpoint({"model": _state_dict_cpu(model), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                         "best_score": best_score, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                         "history": rows, "finished": finished, "meta": checkpoint_meta}, last_path)
        bar.update(1)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", dev=f"{dev_mean:.3f}", best=f"{best_score:.3f}@{best_epoch}")
        epochs_this_call += 1
        if stop:
            break
        if tc.interrupt_after and epochs_this_call >= tc.interrupt_after and not finished:
            bar.close()
            return FitResult({}, best_epoch, best_score, pd.DataFrame(rows), False)
    bar.close()
    barrier()  # rank 0 has written best.pt
    best = load_checkpoint(best_path)
    return FitResult(best["model"], best_epoch, best_score, pd.DataFrame(rows), finished)


def dist_sum(t):
    """``t`` summed over all ranks (a copy; unchanged without distributed training)."""
    if dist_info()[1] == 1:
        return t
    import torch.distributed as dist

    t = t.detach().clone()
    dist.all_reduce(t)
    return t


def _forward_batch(model, batch):
    return model(batch)


def _forward_encoded(model, batch):
    return unwrap_model(model).fuse(batch["encoded"])


# ============================================================================ stage 1: unimodal encoders
def _unimodal_hash(tc: TrainConfig, modality: str, store, train_df: pd.DataFrame, dev_df: pd.DataFrame,
                   soft_table: dict) -> str:
    mc = tc.model_config().to_dict()
    soft_digest = hashlib.blake2b(digest_size=8)
    for u in sorted(soft_table):
        soft_digest.update(u.encode() + np.asarray(soft_table[u], np.float32).tobytes())
    key = {
        "modality": modality, "features": _store_key(store), "model": {k: mc[k] for k in UNIMODAL_MODEL_KEYS},
        "audio_pool": tc.audio_pool if modality == "audio" else 1,
        "train": config_hash(list(zip(train_df["utt_id"], train_df["label"])), 16),
        "dev": config_hash(list(zip(dev_df["utt_id"], dev_df["label"])), 16),
        "epochs": tc.unimodal_epochs or tc.epochs, "lr": tc.unimodal_lr or tc.lr, "seed": tc.seed,
        "opt": [tc.batch_size, tc.weight_decay, tc.scheduler, tc.warmup_ratio, tc.patience, tc.grad_clip,
                tc.balanced_sampling],
        "targets": [tc.ls_llm_p, tc.label_smoothing, soft_digest.hexdigest() if tc.ls_llm_p > 0 else None],
    }
    if tc.class_weight_power != 1.0:  # only when set, so earlier cache keys stay valid
        key["class_weight_power"] = float(tc.class_weight_power)
    return f"{modality}-{config_hash(key, 12)}"


def _components(value) -> list[str]:
    """The utt_ids an SDS row was merged from (list, array, JSON list or a '|'/','-separated string)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    s = str(value).strip()
    if s.startswith("["):
        try:
            return [str(v) for v in json.loads(s)]
        except json.JSONDecodeError:
            pass
    for sep in ("|", ";", ","):
        if sep in s:
            return [p.strip() for p in s.split(sep) if p.strip()]
    return [s] if s else []


def fold_assignment(train_df: pd.DataFrame, k: int, seed: int) -> tuple[np.ndarray, list[set[int]]]:
    """Cross-fitting folds for the out-of-fold logits.

    Rows without components (original, TUG) get stratified folds by label. A merged (SDS) row gets the fold of
    its first component and is kept out of the training data of every fold that holds any of its components,
    so no fold model is trained on audio or text that a held-out row contains. Returns ``(fold (N,),
    exclude_from[i] = folds whose model must not see row i)``.
    """
    from sklearn.model_selection import StratifiedKFold

    comps = [_components(v) for v in train_df["components"]] if "components" in train_df else [[]] * len(train_df)
    plain = np.array([len(c) == 0 for c in comps])
    folds = np.zeros(len(train_df), dtype=int)
    idx = np.flatnonzero(plain)
    labels = train_df["label"].to_numpy()[idx]
    counts = pd.Series(labels).value_counts()
    n_splits = min(k, len(idx))
    if counts.min() >= n_splits:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for f, (_, held) in enumerate(splitter.split(idx, labels)):
            folds[idx[held]] = f
    else:  # a class too rare to stratify: a seeded round-robin over a permutation
        perm = np.random.default_rng(seed).permutation(len(idx))
        folds[idx[perm]] = np.arange(len(idx)) % n_splits
    fold_of = dict(zip(train_df["utt_id"].astype(str), folds))
    exclude = [{int(folds[i])} for i in range(len(train_df))]
    rng = np.random.default_rng(seed + 1)
    for i in np.flatnonzero(~plain):
        cf = [int(fold_of[c]) for c in comps[i] if c in fold_of]
        folds[i] = cf[0] if cf else int(rng.integers(n_splits))
        exclude[i] = {int(folds[i]), *cf}
    return folds, exclude


@dataclass
class UnimodalRun:
    modality: str
    folder: Path
    state_dict: dict
    metrics: dict                # {corpus: {split: score}}
    logits: dict                 # {utt_id: (7,)} of the full model on dev and test
    history: pd.DataFrame
    best_epoch: int
    oof: dict | None = None      # {utt_id: (7,)} cross-fitted train logits


def feature_spec(tc: TrainConfig) -> dict[str, Any]:
    """How the model's inputs were made (stored in every checkpoint, for inference)."""
    return {k: getattr(tc, k) for k in ("audio_encoder", "text_encoder", "audio_layer", "text_max_tokens",
                                        "text_trust_remote_code", "text_code_revision", "audio_pool",
                                        "text_context", "text_context_mode")}


def _unimodal_model(tc: TrainConfig, modality: str, d_in: int):
    from .models import build_model

    name = f"{modality}_only"
    d_audio, d_text = (d_in, 1) if modality == "audio" else (1, d_in)
    return build_model(name, tc.model_config(), d_audio, d_text)


def _split_datasets(df: pd.DataFrame, stores, soft=None, logits=None, tc: TrainConfig | None = None,
                    name: str = "", train: bool = False):
    """One dataset per corpus (``{corpus: EmotionDataset}``), or one for all when ``train``."""
    from .data import EmotionDataset

    kw = dict(ls_llm_p=tc.ls_llm_p, label_smoothing=tc.label_smoothing, seed=tc.seed) if train else {}
    if train:
        return EmotionDataset(df, *stores, soft_labels=soft, logits=logits, name=name, audio_pool=tc.audio_pool,
                              **kw)
    return {c: EmotionDataset(g.reset_index(drop=True), *stores, logits=logits, name=f"{name} {c}",
                              audio_pool=tc.audio_pool)
            for c, g in df.groupby("corpus", sort=True)}


def train_unimodal(tc: TrainConfig, modality: str, store, splits: dict[str, pd.DataFrame], soft_table: dict,
                   weights: np.ndarray, device, need_oof: bool, dims: tuple[int, int]) -> UnimodalRun:
    """Stage 1 for one modality: train (or reuse from the cache) the unimodal classifier and its logits."""
    key = _unimodal_hash(tc, modality, store, splits["train"], splits["dev"], soft_table)
    folder = run_dirs(tc.workdir).train / "_unimodal" / key
    stores = (store, None) if modality == "audio" else (None, store)
    epochs, lr = tc.unimodal_epochs or tc.epochs, tc.unimodal_lr or tc.lr
    meta = {"model_name": f"{modality}_only", "d_audio": int(dims[0]), "d_text": int(dims[1]), "key": key,
            "model_config": tc.model_config().to_dict(), "features": feature_spec(tc)}
    done = folder / "done.json"
    barrier()  # every rank sees the same cache state
    if done.exists():
        info = json.loads(done.read_text())
        state = load_checkpoint(folder / "full" / "best.pt")["model"]
        logits = pd.read_parquet(folder / "logits.parquet")
        history = pd.read_csv(folder / "history.csv")
        run = UnimodalRun(modality, folder, state, info["metrics"], _logit_dict(logits), history,
                          int(info["best_epoch"]))
    else:
        _seed_everything(tc.seed)
        model = _unimodal_model(tc, modality, store.dim).to(device)
        train_ds = _split_datasets(splits["train"], stores, soft_table, tc=tc, name=f"{modality} train", train=True)
        dev_sets = _split_datasets(splits["dev"], stores, tc=tc, name=f"{modality} dev")
        res = fit(model, train_ds, dev_sets, tc=tc, ckpt_dir=folder / "full", weights=weights, device=device,
                  forward=_forward_batch, lr=lr, epochs=epochs, checkpoint_meta=meta, desc=f"{modality}-only")
        if not res.finished:
            raise Interrupted(f"{modality}-only stopped after interrupt_after={tc.interrupt_after}; resume to go on")
        model.load_state_dict(res.best_state)
        metrics, logit_rows = {}, []
        for split in ("dev", "test"):
            sets = _split_datasets(splits[split], stores, tc=tc, name=f"{modality} {split}")
            scores, lg = evaluate(model, sets, _forward_batch, device, tc.eval_batch_size)
            for corpus, s in scores.items():
                metrics.setdefault(corpus, {})[split] = s
                logit_rows.append(_logit_frame(sets[corpus].utt_ids, lg[corpus]))
        logits = pd.concat(logit_rows, ignore_index=True)
        if is_main_process():
            logits.to_parquet(folder / "logits.parquet", index=False)
            res.history.to_csv(folder / "history.csv", index=False)
            save_json({"key": key, "metrics": metrics, "best_epoch": res.best_epoch}, done)
        run = UnimodalRun(modality, folder, res.best_state, metrics, _logit_dict(logits), res.history,
                          res.best_epoch)
    if need_oof:
        run.oof = _out_of_fold_logits(tc, modality, run, stores, splits, soft_table, weights, device, meta, lr,
                                      epochs)
    return run


def _out_of_fold_logits(tc, modality, run: UnimodalRun, stores, splits, soft_table, weights, device, meta, lr,
                        epochs) -> dict:
    """Cross-fitted train logits (cached as ``oof{K}.parquet`` beside the unimodal model)."""
    from .data import EmotionDataset

    path = run.folder / f"oof{tc.oof_folds}.parquet"
    barrier()
    if path.exists():
        return _logit_dict(pd.read_parquet(path))
    train_df = splits["train"]
    folds, exclude = fold_assignment(train_df, tc.oof_folds, tc.seed)
    dev_sets = _split_datasets(splits["dev"], stores, tc=tc, name=f"{modality} dev")
    frames = []
    for k in sorted(set(folds.tolist())):
        fit_rows = np.array([k not in ex for ex in exclude])
        held = folds == k
        _seed_everything(tc.seed + 1 + k)
        model = _unimodal_model(tc, modality, (stores[0] or stores[1]).dim).to(device)
        train_ds = EmotionDataset(train_df.loc[fit_rows].reset_index(drop=True), *stores, soft_labels=soft_table,
                                  ls_llm_p=tc.ls_llm_p, label_smoothing=tc.label_smoothing, seed=tc.seed,
                                  audio_pool=tc.audio_pool, name=f"{modality} fold {k}")
        res = fit(model, train_ds, dev_sets, tc=tc, ckpt_dir=run.folder / f"fold{k}of{tc.oof_folds}",
                  weights=weights, device=device, forward=_forward_batch, lr=lr, epochs=epochs,
                  checkpoint_meta={**meta, "fold": k}, desc=f"{modality}-only fold {k + 1}/{tc.oof_folds}")
        if not res.finished:
            raise Interrupted(f"{modality}-only fold {k} stopped after interrupt_after; resume to go on")
        model.load_state_dict(res.best_state)
        held_ds = EmotionDataset(train_df.loc[held].reset_index(drop=True), *stores, audio_pool=tc.audio_pool,
                                 name=f"{modality} held {k}")
        frames.append(_logit_frame(held_ds.utt_ids, predict(model, held_ds, _forward_batch, device,
                                                            tc.eval_batch_size)))
    oof = pd.concat(frames, ignore_index=True)
    if is_main_process():
        oof.to_parquet(path, index=False)
    return _logit_dict(oof)


def _logit_frame(utt_ids, logits) -> pd.DataFrame:
    df = pd.DataFrame(np.asarray(logits, np.float32), columns=list(CLASSES))
    df.insert(0, "utt_id", list(utt_ids))
    return df


def _logit_dict(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return dict(zip(df["utt_id"].astype(str), df[list(CLASSES)].to_numpy(np.float32)))


# ============================================================================ stage 2 helpers
def cache_encodings(model, dataset, device, batch_size: int = 64) -> list[dict]:
    """Run the frozen encoders once over ``dataset`` (length-sorted batches) -> per-sample encoder outputs."""
    import torch

    from .data import collate, split_encoded

    model.eval()
    lengths = [(len(dataset.audio_store[u]) if dataset.audio_store is not None else 0,
                len(dataset.text_store[u]) if dataset.text_store is not None else 0) for u in dataset.utt_ids]
    order = sorted(range(len(dataset)), key=lambda i: lengths[i])
    parts: list[dict | None] = [None] * len(dataset)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = _to_device(collate([dataset[i] for i in idx]), device)
            encoded = unwrap_model(model).encode(batch)
            for i, part in zip(idx, split_encoded(encoded, len(idx))):
                parts[i] = part
    return parts


def _needs_oof(model_name: str) -> bool:
    return model_name == "predictions_fusion" or model_name.endswith("_withprob")


def _write_history(df: pd.DataFrame, path: Path) -> None:
    if is_main_process():
        _atomic_write_bytes(path, lambda tmp: df.to_csv(tmp, index=False))


# ============================================================================ the entry point
def train(cfg: dict[str, Any] | TrainConfig) -> RunResult:
    """Train the configured model (see the module docstring); returns the run folder, metrics and history.

    Raises ``Interrupted`` when ``interrupt_after`` stopped it early (rerun with ``resume=True``).
    """
    import torch

    tc = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    threads = torch.get_num_threads()
    if tc.num_threads > 0:  # tiny models on a busy CPU: extra threads mostly wait on each other
        torch.set_num_threads(tc.num_threads)
    try:
        return _train(tc)
    finally:
        torch.set_num_threads(threads)


def _train(tc: TrainConfig) -> RunResult:
    import torch

    from .data import CachedEncodingDataset, class_weights, soft_label_table
    from .models import MODEL_NAMES, build_model

    t_start = time.perf_counter()
    if tc.model not in MODEL_NAMES:
        raise ValueError(f"unknown model {tc.model!r}; choose one of {list(MODEL_NAMES)}")
    device = init_distributed(resolve_device(tc.device))  # torchrun: join the process group, cuda:LOCAL_RANK
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    _seed_everything(tc.seed)

    # --- data ---------------------------------------------------------------------------------------
    corpora = resolve_corpora(tc.train_corpora, tc.workdir)
    splits = load_splits(corpora, tc.workdir)
    with rank_zero_first():  # rank 0 writes the SDS clips and extracts missing features; the others read them
        splits["train"] = build_train_manifest(tc, splits["train"])
        all_rows = pd.concat([splits[s] for s in ("train", "dev", "test")], ignore_index=True)
        stores = build_feature_stores(tc, all_rows)
    skipped = {}
    for split in ("train", "dev", "test"):
        splits[split], skipped[split] = filter_available(splits[split], stores, f"{split} split")
    if tc.text_context:  # our extension: previous utterances of the same dialogue and split (bber_utils.context)
        from .context import with_text_context

        stores = (stores[0], with_text_context(stores[1], splits, tc.text_context, tc.text_context_mode))
    soft_table = soft_label_table(load_soft_labels_for(tc), "soft labels")
    weights = class_weights(np.array([CLASSES.index(lbl) for lbl in splits["train"]["label"]]))
    weights = (weights ** float(tc.class_weight_power)).astype(np.float32)

    run_name = tc.run_name or f"{tc.model}-s{tc.seed}-{config_hash(tc.identity())}"
    run_dir = run_dirs(tc.workdir).train / run_name
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_json(tc.to_dict(), run_dir / "config.json")

    # --- stage 1: unimodal encoders (the baselines) -------------------------------------------------
    need_oof = _needs_oof(tc.model)
    if stores[0] is None and tc.model != "text_only":
        raise ValueError(f"model {tc.model!r} needs audio, but no manifest row has any; use model=text_only")
    dims = (int(stores[0].dim) if stores[0] is not None else 1, int(stores[1].dim))
    unimodal = {m: train_unimodal(tc, m, store, splits, soft_table, weights, device, need_oof, dims)
                for m, store in zip(("audio", "text"), stores) if store is not None}
    unimodal_metrics = {f"{m}_only": run.metrics for m, run in unimodal.items()}

    # --- stage 2: the chosen model ------------------------------------------------------------------
    meta = {"model_name": tc.model, "d_audio": dims[0], "d_text": dims[1],
            "model_config": tc.model_config().to_dict(), "features": feature_spec(tc), "config": tc.identity()}
    if tc.model in UNIMODAL_MODELS:
        run = unimodal[tc.model.split("_")[0]]
        if is_main_process():
            for name in ("best.pt", "last.pt"):
                shutil.copyfile(run.folder / "full" / name, run_dir / name)
        history, best_epoch, metrics = run.history, run.best_epoch, run.metrics
    else:
        _seed_everything(tc.seed)
        model = build_model(tc.model, tc.model_config(), stores[0].dim, stores[1].dim)
        model.load_unimodal(unimodal["audio"].state_dict, unimodal["text"].state_dict)
        model.freeze_encoders(tc.freeze_encoders)
        model.to(device)
        logits = None
        if need_oof:
            logits = {m: {**run.oof, **run.logits} for m, run in unimodal.items()}
        train_ds = _split_datasets(splits["train"], stores, soft_table, logits, tc, "train", train=True)
        eval_sets = {s: _split_datasets(splits[s], stores, logits=logits, tc=tc, name=s) for s in ("dev", "test")}
        forward = _forward_batch
        if tc.freeze_encoders and hasattr(model, "encode"):
            enc_bs = tc.eval_batch_size
            train_ds = CachedEncodingDataset(train_ds, cache_encodings(model, train_ds, device, enc_bs))
            eval_sets = {s: {c: CachedEncodingDataset(ds, cache_encodings(model, ds, device, enc_bs))
                             for c, ds in sets.items()} for s, sets in eval_sets.items()}
            forward = _forward_encoded
        res = fit(model, train_ds, eval_sets["dev"], tc=tc, ckpt_dir=run_dir, weights=weights, device=device,
                  forward=forward, lr=tc.lr, epochs=tc.epochs, checkpoint_meta=meta, desc=tc.model)
        if not res.finished:
            _write_history(res.history, run_dir / "history.csv")
            raise Interrupted(f"{run_dir}: stopped after interrupt_after={tc.interrupt_after} epochs; "
                              f"rerun with resume=True to continue")
        model.load_state_dict(res.best_state)
        amp_dtype, _ = _amp_settings(tc, device)
        metrics = {}
        for split in ("dev", "test"):
            scores, _ = evaluate(model, eval_sets[split], forward, device, tc.eval_batch_size, amp_dtype)
            for corpus, s in scores.items():
                metrics.setdefault(corpus, {})[split] = s
        history, best_epoch = res.history, res.best_epoch

    train_counts = splits["train"].groupby(["corpus", "source"]).size()
    n_soft = int(splits["train"]["utt_id"].astype(str).isin(soft_table.keys()).sum()) if tc.ls_llm_p > 0 else 0
    result = {
        "run": run_name, "model": tc.model, "seed": tc.seed, "config": tc.to_dict(), "git_commit": git_commit(),
        "wall_time_s": time.perf_counter() - t_start, "best_epoch": int(best_epoch),
        "soft_labels": {"used": n_soft, "missing": len(splits["train"]) - n_soft if tc.ls_llm_p > 0 else 0,
                        "p": tc.ls_llm_p},
        "metrics": metrics,
        "unimodal": unimodal_metrics,
        "unimodal_folders": {f"{m}_only": str(r.folder) for m, r in unimodal.items()},
        "n_train": {f"{c}/{s}": int(n) for (c, s), n in train_counts.items()},
        "skipped": skipped,
        "corpora": corpora,
        "device": str(device),
    }
    _write_history(history, run_dir / "history.csv")
    save_json(result, run_dir / "metrics.json")
    barrier()  # every rank returns once the run folder is complete
    return RunResult(run_dir, result, history, {f"{m}_only": r.history for m, r in unimodal.items()})


def load_run(run_dir: str | os.PathLike) -> RunResult:
    """Read a finished run folder back (metrics.json + history.csv)."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the run has not finished")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    hist = run_dir / "history.csv"
    return RunResult(run_dir, metrics, pd.read_csv(hist) if hist.exists() else pd.DataFrame())


# ============================================================================ command line
def register_cli(subparsers) -> None:
    """``bber train --config FILE [key=value ...]``."""
    p = subparsers.add_parser("train", help="train a model (notebook 06) on a profile's work folder",
                              description="Train the unimodal encoders and the chosen model; writes "
                                          "<workdir>/train/<run>/metrics.json. Keys: see bber_utils.train."
                                          "TrainConfig.")
    p.add_argument("--config", default="demo", help="a profile name (smoke, demo, paper) or a YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="parameters to override, e.g. epochs=3")
    p.set_defaults(func=_cli_train)


def _cli_train(args) -> int:
    from .config import load_profile, parse_overrides

    overrides = parse_overrides(args.overrides)
    params = load_profile(args.config)
    known = {f.name for f in dataclasses.fields(TrainConfig)} | set(params)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SystemExit(f"bber train: unknown parameter(s) {unknown}; see bber_utils.train.TrainConfig")
    params.update(overrides)
    try:
        result = train(params)
        if is_main_process():
            print(result.table().to_string(index=False))
            print(f"run folder: {result.run_dir}")
    finally:
        _destroy_process_group()
    return 0


def _destroy_process_group() -> None:
    """Leave the torchrun process group (if ``train`` joined one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
