"""One model, one dataset: ``fit`` (the epoch loop with AdamW, warm-up + cosine / plateau, AMP, gradient
clipping, early stopping on the dev mean, ``last.pt`` / ``best.pt`` and resume), ``evaluate`` and ``predict``.

An epoch: reseed torch from ``(seed, epoch)`` (dropout), reshuffle the samplers for that epoch, train on the
global batches of this rank (the loss is normalised by the summed sample weights of the whole global batch, so the
all-reduced gradient is the single-process one), then rank 0 scores dev and every rank gets the score
(``broadcast_from_main``); a strict improvement writes ``best.pt``, every epoch writes ``last.pt``. The numbers of
a run resumed from ``last.pt`` are those of an uninterrupted run.

Owns: ``fit``, ``FitResult``, ``predict``, ``evaluate``, ``optimizer_param_groups``, ``make_scheduler``,
``amp_settings``, ``seed_everything``, ``forward_batch`` / ``forward_encoded``, ``to_device``.
Imports from this package: ``config``, ``distributed``, ``runs``. Knows nothing of corpora, manifests, folds or
stages: must not import ``inputs``, ``crossfit``, ``unimodal``, ``fusion``, ``stages``, ``cli``,
``bber_utils.corpora``, ``bber_utils.features`` or ``bber_utils.augment``.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from bber_utils.core.labels import NUM_CLASSES
from bber_utils.core.progress import finish_early, tqdm
from bber_utils.train.config import TrainConfig
from bber_utils.train.dataset import PaddedDataset, collate
from bber_utils.train.distributed import (barrier, broadcast_from_main, dist_info, dist_sum, forward_module,
                                          is_main_process, unwrap_model, wrap_model)
from bber_utils.train.loss import soft_cross_entropy_parts
from bber_utils.train.metrics import METRIC_NAMES, mean_over_corpora, score_logits
from bber_utils.train.runs import load_checkpoint, read_cache, save_checkpoint

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (model initialisation, dropout)."""

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: dict, device) -> dict:
    """``batch`` with every tensor (also in nested dicts) moved to ``device``."""
    import torch

    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = to_device(v, device)
        else:
            out[k] = v
    return out


def state_dict_cpu(model) -> dict:
    """A CPU copy of the (unwrapped) model's state dict."""
    return {k: v.detach().cpu().clone() for k, v in unwrap_model(model).state_dict().items()}


def forward_batch(model, batch):
    """The plain forward: ``model(batch) -> logits (B, 7)``."""
    return model(batch)


def forward_encoded(model, batch):
    """The forward on cached encoder outputs: ``fuse(batch['encoded']) -> logits (B, 7)``."""
    return unwrap_model(model).fuse(batch["encoded"])


def amp_settings(tc: TrainConfig, device):
    """(autocast dtype or None, use GradScaler) — mixed precision on CUDA only."""
    import torch

    if device.type != "cuda" or tc.amp == "off":
        return None, False
    if tc.amp == "bf16" or (tc.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def make_scheduler(optimizer, tc: TrainConfig, total_steps: int):
    """Linear warm-up then cosine to 1 % (per step), or plateau (per epoch), or constant."""
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


NO_DECAY_NAMES = ("A_log", "D")  # Mamba's SSM parameters (mamba_ssm marks them ``_no_weight_decay``)


def optimizer_param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: ``[{params: decayed, weight_decay}, {params: the rest, weight_decay: 0}]``.

    Only the weight matrices and kernels of linear, attention, convolution and graph layers are decayed. No
    decay for biases, norm scales (LayerNorm, RMSNorm), Mamba's ``A_log`` and ``D`` (decaying ``A_log`` pulls
    every state's decay rate to the same value), embeddings, or any other parameter with fewer than 2 dims, as
    in nanoGPT's ``configure_optimizers`` and the Mamba training code. Frozen parameters are left out.
    """
    import torch

    no_decay_modules = (torch.nn.LayerNorm, torch.nn.RMSNorm, torch.nn.Embedding, torch.nn.EmbeddingBag,
                        torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            skip = (isinstance(module, no_decay_modules) or name in NO_DECAY_NAMES or name.endswith("bias")
                    or p.dim() < 2 or getattr(p, "_no_weight_decay", False))
            (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]


def predict(model, dataset, forward: Callable, device, batch_size: int = 64, amp_dtype=None) -> np.ndarray:
    """Logits (N, 7) float32 for every sample of ``dataset`` in order."""
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    out = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out.append(forward(model, batch).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def evaluate(model, datasets: dict[str, Any], forward, device, batch_size=64, amp_dtype=None):
    """``({corpus: score}, {corpus: logits})`` for datasets keyed by corpus; each scored over its own label set
    (``ds.classes``), the prediction taken over the classes the model may predict (``ds.allowed``)."""
    scores, logits = {}, {}
    for corpus, ds in datasets.items():
        lg = predict(model, ds, forward, device, batch_size, amp_dtype)
        logits[corpus] = lg
        scores[corpus] = score_logits(ds.labels, lg, getattr(ds, "allowed", None), getattr(ds, "classes", None))
    return scores, logits


@dataclass
class FitResult:
    """What ``fit`` returns: the best epoch's weights (on CPU), its dev score and the per-epoch history."""

    best_state: dict
    best_epoch: int
    best_score: float
    history: pd.DataFrame
    finished: bool                         # False when stopped by ``interrupt_after``




@dataclass
class _Trainer:
    """What every step of one ``fit`` needs, built once (``_build_trainer``)."""

    model: Any                             # the model itself (evaluated, checkpointed)
    train_model: Any                       # what the training forward runs through (DDP, torch.compile)
    params: list                           # the trainable parameters (gradient clipping)
    optimizer: Any
    scheduler: Any
    scaler: Any                            # GradScaler (enabled for fp16 only)
    batches: Any                           # RankBatchSampler: this rank's part of every global batch
    weights: Any                           # (7,) class weights on the device
    amp_dtype: Any                         # autocast dtype, or None
    world: int
    allowed: tuple | None = None           # the classes the loss's softmax covers (None: all seven)


@dataclass
class _LoopState:
    """What ``last.pt`` carries from one epoch to the next, besides the weights and the optimiser's state."""

    start_epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    rows: list = field(default_factory=list)   # one history row per finished epoch


def fit(model, train_ds, dev_sets: dict[str, Any], *, tc: TrainConfig, ckpt_dir: Path, weights: np.ndarray,
        device, forward: Callable, lr: float, epochs: int, checkpoint_meta: dict, desc: str = "train") -> FitResult:
    """Train ``model`` on ``train_ds``, early-stopped on the mean dev score of ``dev_sets``.

    Writes ``ckpt_dir/last.pt`` (everything needed to resume) after every epoch and ``ckpt_dir/best.pt`` at
    every improvement; with ``tc.resume`` an existing ``last.pt`` with the same ``checkpoint_meta`` is continued
    (``_resume``: one trained on other data, or one that cannot be read, is trained again from scratch).
    """

    main = is_main_process()
    tr = _build_trainer(model, train_ds, tc, weights, device, forward, lr, epochs, desc)
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    barrier()  # every rank sees the same last.pt
    state = _resume(tr, last_path, best_path, checkpoint_meta) if tc.resume and last_path.exists() else None
    if isinstance(state, FitResult):  # a finished run: its best weights
        return state
    if state is None:  # a fresh start: no checkpoint, resume=False, other data or an unreadable one
        state = _LoopState()
        if main and ckpt_dir.exists():
            for p in (last_path, best_path):
                p.unlink(missing_ok=True)
    barrier()  # no rank starts before rank 0 has cleared old checkpoints

    bar = tqdm(total=epochs, initial=state.start_epoch, desc=desc, disable=not (tc.progress and main), leave=True)
    finished, epochs_this_call = False, 0
    for epoch in range(state.start_epoch, epochs):
        t0 = time.perf_counter()
        train_loss = _train_epoch(tr, train_ds, epoch, tc, device)
        dev_scores = None
        if main:  # the early-stopping signal: rank 0 evaluates, every rank gets its score
            dev_scores, _ = evaluate(model, dev_sets, forward, device, tc.eval_batch_size, tr.amp_dtype)
        dev_scores = broadcast_from_main(dev_scores)
        dev_mean = mean_over_corpora(dev_scores)
        if tc.scheduler == "plateau":
            tr.scheduler.step(dev_mean)
        _record_epoch(tr, state, epoch, dev_scores, dev_mean, train_loss, t0, checkpoint_meta, best_path)
        stop = state.bad_epochs >= tc.patience
        finished = stop or epoch == epochs - 1
        _save_last(tr, state, epoch, finished, checkpoint_meta, last_path)
        bar.update(1)
        bar.set_postfix(loss=f"{train_loss:.3f}", dev=f"{dev_mean:.3f}",
                        best=f"{state.best_score:.3f}@{state.best_epoch}")
        epochs_this_call += 1
        if stop:
            finish_early(bar, f"{desc} (early stop at epoch {epoch + 1} of {epochs})")
            break
        if tc.interrupt_after and epochs_this_call >= tc.interrupt_after and not finished:
            bar.close()
            return FitResult({}, state.best_epoch, state.best_score, pd.DataFrame(state.rows), False)
    bar.close()
    barrier()  # rank 0 has written best.pt
    best = load_checkpoint(best_path)
    return FitResult(best["model"], state.best_epoch, state.best_score, pd.DataFrame(state.rows), finished)


def _build_trainer(model, train_ds, tc: TrainConfig, weights, device, forward, lr, epochs, desc) -> _Trainer:
    """AdamW (``optimizer_param_groups``), the epoch order (balanced over corpora or shuffled) split into global
    batches per rank, the scheduler over ``epochs``, AMP and the wrapped training module."""
    import torch

    from bber_utils.train.samplers import BalancedCorpusSampler, RankBatchSampler, ShuffleSampler

    rank, world = dist_info()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW(optimizer_param_groups(model, tc.weight_decay), lr=lr)
    if tc.balanced_sampling and len(set(train_ds.corpora)) > 1:
        order = BalancedCorpusSampler(train_ds.corpora, seed=tc.seed)
    else:
        order = ShuffleSampler(len(train_ds), seed=tc.seed)
    batches = RankBatchSampler(order, tc.batch_size, rank=rank, world_size=world)  # global batches, split by rank
    scheduler = make_scheduler(optimizer, tc, len(batches) * epochs)
    amp_dtype, use_scaler = amp_settings(tc, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    w = torch.as_tensor(weights, dtype=torch.float32, device=device)
    train_model = wrap_model(forward_module(model, forward), device)
    if tc.compile:
        train_model = torch.compile(train_model)
    return _Trainer(model, train_model, params, optimizer, scheduler, scaler, batches, w, amp_dtype, world,
                    getattr(train_ds, "allowed", None))


def _resume(tr: _Trainer, last_path: Path, best_path: Path, checkpoint_meta: dict) -> _LoopState | FitResult | None:
    """Continue from ``last.pt``: its loop state (model, optimiser, scheduler and scaler loaded), or the
    ``FitResult`` of a finished run, or None to start over (one warning line) when ``last.pt`` or the finished
    run's ``best.pt`` cannot be read, or when ``last.pt`` was trained on other data (``checkpoint_meta["data"]``,
    the fingerprint of what the model reads; a checkpoint written without one is taken as it is). Another
    configuration is an error."""
    state = read_cache(load_checkpoint, last_path)
    if state is None:
        return None
    want = json.loads(json.dumps(checkpoint_meta, default=str))
    have = state.get("meta")
    if have is None or {k: v for k, v in have.items() if k != "data"} != {k: v for k, v in want.items()
                                                                         if k != "data"}:
        raise ValueError(f"{last_path} was written with another configuration; use another run_name or "
                         f"resume=False to start over")
    if "data" in have and "data" in want and have["data"] != want["data"]:
        warnings.warn(f"{last_path.parent}: the data changed since this model was trained (data {have['data']} -> "
                      f"{want['data']}); training it again from scratch", stacklevel=3)
        return None
    loop = _LoopState(state["epoch"] + 1, state["best_score"], state["best_epoch"], state["bad_epochs"],
                      state["history"])
    if state.get("finished"):
        best = read_cache(load_checkpoint, best_path) if best_path.exists() else None
        if best is None:
            return None
        return FitResult(best["model"], loop.best_epoch, loop.best_score, pd.DataFrame(loop.rows), True)
    unwrap_model(tr.model).load_state_dict(state["model"])
    tr.optimizer.load_state_dict(state["optimizer"])
    tr.scheduler.load_state_dict(state["scheduler"])
    tr.scaler.load_state_dict(state["scaler"])
    return loop


def _train_epoch(tr: _Trainer, train_ds, epoch: int, tc: TrainConfig, device) -> float:
    """One pass over this rank's batches of epoch ``epoch``; returns the mean training loss of the epoch."""
    import torch
    from torch.utils.data import DataLoader

    torch.manual_seed(tc.seed * 1009 + epoch)  # dropout of this epoch, whatever ran before (resume-safe)
    train_ds.set_epoch(epoch)
    tr.batches.set_epoch(epoch)
    tr.train_model.train()
    loader = DataLoader(PaddedDataset(train_ds), batch_sampler=tr.batches, collate_fn=collate,
                        pin_memory=device.type == "cuda")
    total, count = 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        loss, batch_loss, n_batch = _batch_loss(tr, batch, device)
        tr.optimizer.zero_grad(set_to_none=True)
        tr.scaler.scale(loss).backward()
        if tc.grad_clip > 0:
            tr.scaler.unscale_(tr.optimizer)
            torch.nn.utils.clip_grad_norm_(tr.params, tc.grad_clip)
        tr.scaler.step(tr.optimizer)
        tr.scaler.update()
        if tc.scheduler != "plateau":
            tr.scheduler.step()
        total += batch_loss * n_batch
        count += n_batch
    return total / max(count, 1)


def _batch_loss(tr: _Trainer, batch: dict, device):
    """``(loss to backpropagate, batch loss for the log, real samples in the global batch)``: soft-target CE
    normalised by the summed sample weights of the global batch (all ranks), padding rows excluded."""
    import torch

    with torch.autocast(device.type, dtype=tr.amp_dtype, enabled=tr.amp_dtype is not None):
        logits = tr.train_model(batch)
    numerator, denominator = soft_cross_entropy_parts(logits, batch["target"], tr.weights, batch["label"],
                                                      tr.allowed)
    n_real = (batch["target"].sum(1) > 0).sum()  # samples of this rank that are not padding
    if tr.world > 1:  # sums over the global batch: the gradient DDP averages is the single-process one
        sums = dist_sum(torch.stack([numerator.detach(), denominator.detach(), n_real.float()]))
        loss = numerator / sums[1].clamp_min(1e-12) * tr.world
        return loss, float(sums[0] / sums[1].clamp_min(1e-12)), int(sums[2])
    loss = numerator / denominator.clamp_min(1e-12)
    return loss, float(loss.detach()), int(n_real)


def _record_epoch(tr: _Trainer, state: _LoopState, epoch: int, dev_scores: dict, dev_mean: float,
                  train_loss: float, t0: float, checkpoint_meta: dict, best_path: Path) -> None:
    """Early-stopping bookkeeping: ``best.pt`` at a strict improvement, else one more bad epoch; the history row."""
    if dev_mean > state.best_score:
        state.best_score, state.best_epoch, state.bad_epochs = dev_mean, epoch, 0
        save_checkpoint({"model": state_dict_cpu(tr.model), "epoch": epoch, "score": dev_mean,
                         **checkpoint_meta}, best_path)
    else:
        state.bad_epochs += 1
    row = {"epoch": epoch, "train_loss": train_loss, "lr": tr.optimizer.param_groups[0]["lr"],
           "dev_mean": dev_mean, "seconds": time.perf_counter() - t0}
    for corpus, s in dev_scores.items():
        row.update({f"dev_{corpus}_{m}": s[m] for m in (*METRIC_NAMES, "mean")})
    state.rows.append(row)


def _save_last(tr: _Trainer, state: _LoopState, epoch: int, finished: bool, checkpoint_meta: dict,
               last_path: Path) -> None:
    """``last.pt``: everything ``_resume`` needs to continue after ``epoch``."""
    save_checkpoint({"model": state_dict_cpu(tr.model), "optimizer": tr.optimizer.state_dict(),
                     "scheduler": tr.scheduler.state_dict(), "scaler": tr.scaler.state_dict(), "epoch": epoch,
                     "best_score": state.best_score, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
                     "history": state.rows, "finished": finished, "meta": checkpoint_meta}, last_path)
