"""Stage 1: the audio-only and text-only Mamba classifiers, trained on train and early-stopped on dev, cached
under ``<workdir>/train/_unimodal/<hash>/`` by a hash of everything that changes them (features, sizes, rows,
optimisation, targets), with their dev/test logits; for the ``*_withprob`` and ``predictions_fusion`` models
also the out-of-fold train logits of K fold models (``oof{K}.parquet``, folds from ``crossfit``).

Owns: ``train_unimodal``, ``UnimodalRun``, ``unimodal_model``, ``_unimodal_hash``, ``_out_of_fold_logits``.
Imports from this package: ``config``, ``distributed``, ``runs``, ``loop``, ``inputs``, ``crossfit``.
Must not import: ``fusion``, ``stages``, ``cli``. Calls ``loop.fit`` / ``loop.predict`` and
``crossfit.fold_assignment`` through their modules (tests and mutants patch them there).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..paths import run_dirs
from . import crossfit, loop
from .config import UNIMODAL_MODEL_KEYS, TrainConfig, config_hash, feature_spec
from .distributed import barrier, is_main_process
from .inputs import split_datasets, store_key
from .runs import Interrupted, load_checkpoint, logit_dict, logit_frame, save_json


@dataclass
class UnimodalRun:
    """Stage 1 of one modality: the cached folder, the best weights, scores, logits and history."""

    modality: str
    folder: Path
    state_dict: dict
    metrics: dict                # {corpus: {split: score}}
    logits: dict                 # {utt_id: (7,)} of the full model on dev and test
    history: pd.DataFrame
    best_epoch: int
    oof: dict | None = None      # {utt_id: (7,)} cross-fitted train logits


def _unimodal_hash(tc: TrainConfig, modality: str, store, train_df: pd.DataFrame, dev_df: pd.DataFrame,
                   soft_table: dict) -> str:
    """The cache folder name of a unimodal model: ``{modality}-{hash of what changes its numbers}``."""
    mc = tc.model_config().to_dict()
    soft_digest = hashlib.blake2b(digest_size=8)
    for u in sorted(soft_table):
        soft_digest.update(u.encode() + np.asarray(soft_table[u], np.float32).tobytes())
    key = {
        "modality": modality, "features": store_key(store), "model": {k: mc[k] for k in UNIMODAL_MODEL_KEYS},
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


def unimodal_model(tc: TrainConfig, modality: str, d_in: int):
    """A fresh ``audio_only`` / ``text_only`` classifier of this config's sizes."""
    from ..models import build_model

    name = f"{modality}_only"
    d_audio, d_text = (d_in, 1) if modality == "audio" else (1, d_in)
    return build_model(name, tc.model_config(), d_audio, d_text)


def train_unimodal(tc: TrainConfig, modality: str, store, splits: dict[str, pd.DataFrame], soft_table: dict,
                   weights: np.ndarray, device, need_oof: bool, dims: tuple[int, int],
                   oof_train: pd.DataFrame | None = None) -> UnimodalRun:
    """Stage 1 for one modality: train (or reuse from the cache) the unimodal classifier and its logits.

    ``oof_train``: the rows that need out-of-fold logits (stage 2's train rows; default ``splits["train"]``).
    When stage 1 trains on fewer rows (the originals of an augmented run), the folds are drawn over
    ``oof_train`` and each fold model trains on the stage-1 rows outside its fold."""
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
        run = UnimodalRun(modality, folder, state, info["metrics"], logit_dict(logits), history,
                          int(info["best_epoch"]))
    else:
        loop.seed_everything(tc.seed)
        model = unimodal_model(tc, modality, store.dim).to(device)
        train_ds = split_datasets(splits["train"], stores, soft_table, tc=tc, name=f"{modality} train", train=True)
        dev_sets = split_datasets(splits["dev"], stores, tc=tc, name=f"{modality} dev")
        res = loop.fit(model, train_ds, dev_sets, tc=tc, ckpt_dir=folder / "full", weights=weights, device=device,
                       forward=loop.forward_batch, lr=lr, epochs=epochs, checkpoint_meta=meta,
                       desc=f"{modality}-only")
        if not res.finished:
            raise Interrupted(f"{modality}-only stopped after interrupt_after={tc.interrupt_after}; resume to go on")
        model.load_state_dict(res.best_state)
        metrics, logit_rows = {}, []
        for split in ("dev", "test"):
            sets = split_datasets(splits[split], stores, tc=tc, name=f"{modality} {split}")
            scores, lg = loop.evaluate(model, sets, loop.forward_batch, device, tc.eval_batch_size)
            for corpus, s in scores.items():
                metrics.setdefault(corpus, {})[split] = s
                logit_rows.append(logit_frame(sets[corpus].utt_ids, lg[corpus]))
        logits = pd.concat(logit_rows, ignore_index=True)
        if is_main_process():
            logits.to_parquet(folder / "logits.parquet", index=False)
            res.history.to_csv(folder / "history.csv", index=False)
            save_json({"key": key, "metrics": metrics, "best_epoch": res.best_epoch}, done)
        run = UnimodalRun(modality, folder, res.best_state, metrics, logit_dict(logits), res.history,
                          res.best_epoch)
    if need_oof:
        run.oof = _out_of_fold_logits(tc, modality, run, stores, splits, soft_table, weights, device, meta, lr,
                                      epochs, splits["train"] if oof_train is None else oof_train)
    return run


def _out_of_fold_logits(tc, modality, run: UnimodalRun, stores, splits, soft_table, weights, device, meta, lr,
                        epochs, train_df: pd.DataFrame) -> dict:
    """Cross-fitted logits of ``train_df``'s rows (cached as ``oof{K}[-{rows hash}].parquet`` beside the unimodal
    model); the fold models train on the stage-1 rows (``splits["train"]``) outside their fold."""
    from ..data import EmotionDataset

    stage1_ids = set(splits["train"]["utt_id"].astype(str))
    ids = train_df["utt_id"].astype(str)
    tag = f"{tc.oof_folds}"
    if set(ids) != stage1_ids:  # stage 2 trains on more rows than stage 1: these folds are its own
        tag += "-" + config_hash(list(zip(ids, train_df["label"])), 8)
    links = None
    if tc.text_context:  # a row's text is the context of its dialogue's later turns: one dialogue, one fold
        from ..context import dialogue_positions

        pos = dialogue_positions(train_df)
        links = dict(zip(pos["utt_id"], pos["dialogue"]))
        tag += "-dialogues"  # earlier caches had folds without that grouping
    path = run.folder / f"oof{tag}.parquet"
    barrier()
    if path.exists():
        return logit_dict(pd.read_parquet(path))
    folds = crossfit.fold_assignment(train_df, tc.oof_folds, tc.seed, links)
    dev_sets = split_datasets(splits["dev"], stores, tc=tc, name=f"{modality} dev")
    frames = []
    for k in sorted(set(folds.tolist())):
        fit_rows = crossfit.fold_training_rows(train_df, folds, k) & ids.isin(stage1_ids).to_numpy()
        held = folds == k
        loop.seed_everything(tc.seed + 1 + k)
        model = unimodal_model(tc, modality, (stores[0] or stores[1]).dim).to(device)
        train_ds = EmotionDataset(train_df.loc[fit_rows].reset_index(drop=True), *stores, soft_labels=soft_table,
                                  ls_llm_p=tc.ls_llm_p, label_smoothing=tc.label_smoothing, seed=tc.seed,
                                  audio_pool=tc.audio_pool, name=f"{modality} fold {k}")
        res = loop.fit(model, train_ds, dev_sets, tc=tc, ckpt_dir=run.folder / f"fold{k}of{tag}",
                       weights=weights, device=device, forward=loop.forward_batch, lr=lr, epochs=epochs,
                       checkpoint_meta={**meta, "fold": k}, desc=f"{modality}-only fold {k + 1}/{tc.oof_folds}")
        if not res.finished:
            raise Interrupted(f"{modality}-only fold {k} stopped after interrupt_after; resume to go on")
        model.load_state_dict(res.best_state)
        held_ds = EmotionDataset(train_df.loc[held].reset_index(drop=True), *stores, audio_pool=tc.audio_pool,
                                 name=f"{modality} held {k}")
        logits = loop.predict(model, held_ds, loop.forward_batch, device, tc.eval_batch_size)
        frames.append(logit_frame(held_ds.utt_ids, logits))
    oof = pd.concat(frames, ignore_index=True)
    if is_main_process():
        oof.to_parquet(path, index=False)
    return logit_dict(oof)
