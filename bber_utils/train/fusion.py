"""Stage 2: the chosen model on top of the stage-1 encoders. The unimodal weights are loaded and, by default,
frozen; frozen encoders are run once per utterance (``cache_encodings``) so each epoch trains only the fusion
layers. The ``*_withprob`` / ``predictions_fusion`` models mix the unimodal logits: out-of-fold ones on train,
the full models' on dev and test. A unimodal model as the chosen model reuses its stage-1 run.

Owns: ``train_fusion``, ``reuse_unimodal``, ``cache_encodings``, ``needs_oof``.
Imports from this package: ``config``, ``distributed``, ``runs``, ``loop``, ``inputs``.
Must not import: ``unimodal`` (it gets ``UnimodalRun`` objects), ``crossfit``, ``stages``, ``cli``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from bber_utils.models import build_model
from bber_utils.train import loop
from bber_utils.train.config import TrainConfig
from bber_utils.train.dataset import CachedEncodingDataset, collate, split_encoded
from bber_utils.train.distributed import is_main_process, unwrap_model
from bber_utils.train.inputs import split_datasets
from bber_utils.train.runs import Interrupted, write_history

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


def needs_oof(model_name: str) -> bool:
    """True for the models that fuse unimodal logits (they need out-of-fold train logits)."""
    return model_name == "predictions_fusion" or model_name.endswith("_withprob")


def reuse_unimodal(run, run_dir: Path):
    """``model=audio_only|text_only``: stage 1 is the run; copy its checkpoints -> ``(history, best_epoch,
    metrics)``."""
    if is_main_process():
        for name in ("best.pt", "last.pt"):
            shutil.copyfile(run.folder / "full" / name, run_dir / name)
    return run.history, run.best_epoch, run.metrics


def train_fusion(tc: TrainConfig, stores: tuple, splits: dict, unimodal: dict, soft_table: dict,
                 weights: np.ndarray, device, run_dir: Path, meta: dict, space=None):
    """Train the chosen fusion model, score it on every corpus's dev and test -> ``(history, best_epoch,
    metrics)``. Raises ``Interrupted`` when ``interrupt_after`` stopped it (``history.csv`` is written).
    ``space`` (``inputs.LabelSpace``): the classes it may predict and each corpus's own label set."""

    loop.seed_everything(tc.seed)
    model = build_model(tc.model, tc.model_config(), stores[0].dim, stores[1].dim)
    model.load_unimodal(unimodal["audio"].state_dict, unimodal["text"].state_dict)
    model.freeze_encoders(tc.freeze_encoders)
    model.to(device)
    logits = None
    if needs_oof(tc.model):
        logits = {m: {**run.oof, **run.logits} for m, run in unimodal.items()}
    train_ds = split_datasets(splits["train"], stores, soft_table, logits, tc, "train", train=True, space=space)
    eval_sets = {s: split_datasets(splits[s], stores, logits=logits, tc=tc, name=s, space=space)
                 for s in ("dev", "test")}
    forward = loop.forward_batch
    if tc.freeze_encoders and hasattr(model, "encode"):
        enc_bs = tc.eval_batch_size
        train_ds = CachedEncodingDataset(train_ds, cache_encodings(model, train_ds, device, enc_bs))
        eval_sets = {s: {c: CachedEncodingDataset(ds, cache_encodings(model, ds, device, enc_bs))
                         for c, ds in sets.items()} for s, sets in eval_sets.items()}
        forward = loop.forward_encoded
    res = loop.fit(model, train_ds, eval_sets["dev"], tc=tc, ckpt_dir=run_dir, weights=weights, device=device,
                   forward=forward, lr=tc.lr, epochs=tc.epochs, checkpoint_meta=meta, desc=tc.model)
    if not res.finished:
        write_history(res.history, run_dir / "history.csv")
        raise Interrupted(f"{run_dir}: stopped after interrupt_after={tc.interrupt_after} epochs; "
                          f"rerun with resume=True to continue")
    model.load_state_dict(res.best_state)
    amp_dtype, _ = loop.amp_settings(tc, device)
    metrics = {}
    for split in ("dev", "test"):
        scores, _ = loop.evaluate(model, eval_sets[split], forward, device, tc.eval_batch_size, amp_dtype)
        for corpus, s in scores.items():
            metrics.setdefault(corpus, {})[split] = s
    return res.history, res.best_epoch, metrics


def cache_encodings(model, dataset, device, batch_size: int = 64) -> list[dict]:
    """Run the frozen encoders once over ``dataset`` (length-sorted batches) -> per-sample encoder outputs."""
    import torch

    model.eval()
    lengths = [(len(dataset.audio_store[u]) if dataset.audio_store is not None else 0,
                len(dataset.text_store[u]) if dataset.text_store is not None else 0) for u in dataset.utt_ids]
    order = sorted(range(len(dataset)), key=lambda i: lengths[i])
    parts: list[dict | None] = [None] * len(dataset)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = loop.to_device(collate([dataset[i] for i in idx]), device)
            encoded = unwrap_model(model).encode(batch)
            for i, part in zip(idx, split_encoded(encoded, len(idx))):
                parts[i] = part
    return parts
