"""Stage 1: the audio-only and text-only Mamba classifiers, trained on train and early-stopped on dev, cached
under ``<workdir>/train/_unimodal/<hash>/`` by a hash of everything that changes them (features, sizes, rows,
optimisation, targets), with their dev/test logits; for the ``*_withprob`` and ``predictions_fusion`` models
also the out-of-fold train logits of K fold models (``oof{K}.parquet``, folds from ``crossfit``).

The data a cache entry was trained on is fingerprinted (``inputs.data_fingerprint``: rows, labels and the
content hash of each utterance's features) in its ``done.json``, checkpoints and Parquet files: after a
re-prepare that changed a transcript, a clip or a label, the same config trains a new entry
(``_cache_entry``) and the out-of-fold logits are computed again. A cache file that cannot be read back is
computed again with one warning line (``runs.read_cache``).

Owns: ``train_unimodal``, ``is_cached``, ``UnimodalRun``, ``unimodal_model``, ``_unimodal_hash``, ``_cache_entry``,
``_out_of_fold_logits``.
Imports from this package: ``config``, ``distributed``, ``runs``, ``loop``, ``inputs``, ``crossfit``.
Must not import: ``fusion``, ``stages``, ``cli``. Calls ``loop.fit`` / ``loop.predict`` and
``crossfit.fold_assignment`` through their modules (tests and mutants patch them there).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bber_utils.core.labels import CLASSES
from bber_utils.core.paths import run_dirs
from bber_utils.corpora.dialogues import dialogue_positions
from bber_utils.models import build_model
from bber_utils.train import crossfit, inputs, loop
from bber_utils.train.config import TrainConfig, config_hash, feature_spec, stage1_key
from bber_utils.train.dataset import EmotionDataset
from bber_utils.train.distributed import barrier, is_main_process
from bber_utils.train.inputs import split_datasets, store_key
from bber_utils.train.runs import (Interrupted, load_checkpoint, load_parquet, logit_dict, logit_frame, read_cache,
                                   read_history, save_json, save_parquet, write_history)


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
                   soft_table: dict, space: inputs.LabelSpace | None = None) -> str:
    """The cache folder name of a unimodal model: ``{modality}-{hash of what changes its numbers}``: the config's
    keys marked ``stage1`` (``config.stage1_key``), the feature store, the rows' ids and labels, the soft labels,
    and the label space when fewer than seven classes are predicted. The content of the rows is not in it
    (``_cache_entry`` adds it where the data changed), so the names of caches written before data fingerprints
    existed stay valid."""
    key = {**stage1_key(tc, modality), "modality": modality, "features": store_key(store),
           "train": config_hash(list(zip(train_df["utt_id"], train_df["label"])), 16),
           "dev": config_hash(list(zip(dev_df["utt_id"], dev_df["label"])), 16)}
    key["targets"].append(inputs.soft_digest(soft_table) if tc.ls_llm_p > 0 else None)
    if space is not None and space.allowed is not None:  # fewer than seven classes predicted (label sets)
        key["allowed"] = list(space.allowed)
        key["scoring"] = {c: list(v) for c, v in sorted(space.scoring.items())}
    return f"{modality}-{config_hash(key, 12)}"


def _cache_entry(root: Path, key: str, fingerprint: str) -> tuple[str, Path]:
    """``(key, folder)`` of the stage-1 cache for this data: ``root/key``, unless its ``done.json`` names other
    data (another ``data_fingerprint``: a transcript, clip or label changed since), then the new entry
    ``root/{key}-{fingerprint[:10]}`` (the old one stays, for the old data). An entry written before data
    fingerprints existed is taken as it is (and gets this fingerprint, ``_load_cached``)."""
    try:  # a missing or unreadable done.json: this entry, (re)computed there
        info = _read_json(root / key / "done.json")
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("data", fingerprint) == fingerprint:
        return key, root / key
    return f"{key}-{fingerprint[:10]}", root / f"{key}-{fingerprint[:10]}"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def unimodal_model(tc: TrainConfig, modality: str, d_in: int):
    """A fresh ``audio_only`` / ``text_only`` classifier of this config's sizes."""

    name = f"{modality}_only"
    d_audio, d_text = (d_in, 1) if modality == "audio" else (1, d_in)
    return build_model(name, tc.model_config(), d_audio, d_text)


def train_unimodal(tc: TrainConfig, modality: str, store, splits: dict[str, pd.DataFrame], soft_table: dict,
                   weights: np.ndarray, device, need_oof: bool, dims: tuple[int, int],
                   oof_train: pd.DataFrame | None = None, space: inputs.LabelSpace | None = None) -> UnimodalRun:
    """Stage 1 for one modality: train (or reuse from the cache) the unimodal classifier and its logits.

    The cache entry is the config's (``_unimodal_hash``) for the data it reads (``inputs.data_fingerprint`` of
    its train, dev and test rows in this modality's store, ``_cache_entry``): changed transcripts or clips
    train a new entry. ``oof_train``: the rows that need out-of-fold logits (stage 2's train rows; default
    ``splits["train"]``). When stage 1 trains on fewer rows (the originals of an augmented run), the folds are
    drawn over ``oof_train`` and each fold model trains on the stage-1 rows outside its fold. ``space``: the
    corpora's label sets (what the model may predict, what each corpus is scored over; None: all seven)."""
    space = space or inputs.LabelSpace()
    stores = (store, None) if modality == "audio" else (None, store)
    barrier()  # every rank sees the same cache state
    key, folder, fingerprint = _entry_for(tc, modality, store, splits, soft_table, space)
    epochs, lr = tc.unimodal_epochs or tc.epochs, tc.unimodal_lr or tc.lr
    meta = {"model_name": f"{modality}_only", "d_audio": int(dims[0]), "d_text": int(dims[1]), "key": key,
            "model_config": tc.model_config().to_dict(), "features": feature_spec(tc), "data": fingerprint}
    if space.allowed is not None:
        meta["classes"] = [CLASSES[i] for i in space.allowed]
    run = _load_cached(folder, modality, fingerprint)
    if run is None:
        run = _fit_unimodal(tc, modality, folder, stores, splits, soft_table, weights, device, meta, lr, epochs,
                            space)
    if need_oof:
        run.oof = _out_of_fold_logits(tc, modality, run, stores, splits, soft_table, weights, device, meta, lr,
                                      epochs, splits["train"] if oof_train is None else oof_train, space)
    return run


def _entry_for(tc: TrainConfig, modality: str, store, splits: dict[str, pd.DataFrame], soft_table: dict,
               space: inputs.LabelSpace) -> tuple[str, Path, str]:
    """``(key, folder, data fingerprint)`` of the stage-1 cache entry these inputs train or read."""
    fingerprint = inputs.data_fingerprint({s: splits[s] for s in ("train", "dev", "test")}, (store,))
    key, folder = _cache_entry(run_dirs(tc.workdir).train / "_unimodal",
                               _unimodal_hash(tc, modality, store, splits["train"], splits["dev"], soft_table,
                                              space),
                               fingerprint)
    return key, folder, fingerprint


def is_cached(tc: TrainConfig, modality: str, store, splits: dict[str, pd.DataFrame], soft_table: dict,
              space: inputs.LabelSpace | None = None) -> bool:
    """True when ``train_unimodal`` would read this modality's classifier from the cache (its ``done.json``)."""
    folder = _entry_for(tc, modality, store, splits, soft_table, space or inputs.LabelSpace())[1]
    return (folder / "done.json").exists()


def _load_cached(folder: Path, modality: str, fingerprint: str) -> UnimodalRun | None:
    """The finished stage 1 in ``folder``, or None when there is none or a file of it cannot be read (one
    warning line; the caller computes it again). An entry without a data fingerprint gets ``fingerprint``."""
    done = folder / "done.json"
    if not done.exists():
        return None
    info = read_cache(_read_json, done)
    state = read_cache(load_checkpoint, folder / "full" / "best.pt") if isinstance(info, dict) else None
    logits = read_cache(load_parquet, folder / "logits.parquet") if state is not None else None
    history = read_cache(read_history, folder / "history.csv") if logits is not None else None
    if history is None:
        return None
    if "data" not in info:
        save_json({**info, "data": fingerprint}, done)
    return UnimodalRun(modality, folder, state["model"], info["metrics"], logit_dict(logits[0]), history,
                       int(info["best_epoch"]))


def _fit_unimodal(tc: TrainConfig, modality: str, folder: Path, stores: tuple, splits: dict, soft_table: dict,
                  weights, device, meta: dict, lr: float, epochs: int,
                  space: inputs.LabelSpace | None = None) -> UnimodalRun:
    """Train the unimodal classifier into ``folder`` (resumable), score dev and test, write the cache files."""
    loop.seed_everything(tc.seed)
    model = unimodal_model(tc, modality, (stores[0] or stores[1]).dim).to(device)
    train_ds = split_datasets(splits["train"], stores, soft_table, tc=tc, name=f"{modality} train", train=True,
                              space=space)
    dev_sets = split_datasets(splits["dev"], stores, tc=tc, name=f"{modality} dev", space=space)
    res = loop.fit(model, train_ds, dev_sets, tc=tc, ckpt_dir=folder / "full", weights=weights, device=device,
                   forward=loop.forward_batch, lr=lr, epochs=epochs, checkpoint_meta=meta, desc=f"{modality}-only")
    if not res.finished:
        raise Interrupted(f"{modality}-only stopped after interrupt_after={tc.interrupt_after}; resume to go on")
    model.load_state_dict(res.best_state)
    metrics, logit_rows = {}, []
    for split in ("dev", "test"):
        sets = split_datasets(splits[split], stores, tc=tc, name=f"{modality} {split}", space=space)
        scores, lg = loop.evaluate(model, sets, loop.forward_batch, device, tc.eval_batch_size)
        for corpus, s in scores.items():
            metrics.setdefault(corpus, {})[split] = s
            logit_rows.append(logit_frame(sets[corpus].utt_ids, lg[corpus]))
    logits = pd.concat(logit_rows, ignore_index=True)
    save_parquet(logits, folder / "logits.parquet", meta["data"])
    write_history(res.history, folder / "history.csv")
    save_json({"key": meta["key"], "metrics": metrics, "best_epoch": res.best_epoch, "data": meta["data"]},
              folder / "done.json")  # last: the entry is complete
    return UnimodalRun(modality, folder, res.best_state, metrics, logit_dict(logits), res.history, res.best_epoch)


def _out_of_fold_logits(tc, modality, run: UnimodalRun, stores, splits, soft_table, weights, device, meta, lr,
                        epochs, train_df: pd.DataFrame, space: inputs.LabelSpace | None = None) -> dict:
    """Cross-fitted logits of ``train_df``'s rows (cached as ``oof{K}[-{rows hash}].parquet`` beside the unimodal
    model); the fold models train on the stage-1 rows (``splits["train"]``) outside their fold."""

    stage1_ids = set(splits["train"]["utt_id"].astype(str))
    ids = train_df["utt_id"].astype(str)
    tag = f"{tc.oof_folds}"
    if set(ids) != stage1_ids:  # stage 2 trains on more rows than stage 1: these folds are its own
        tag += "-" + config_hash(list(zip(ids, train_df["label"])), 8)
    links = None
    if tc.text_context:  # a row's text is the context of its dialogue's later turns: one dialogue, one fold

        pos = dialogue_positions(train_df)
        links = dict(zip(pos["utt_id"], pos["dialogue"]))
        tag += "-dialogues"  # earlier caches had folds without that grouping
    path = run.folder / f"oof{tag}.parquet"
    fingerprint = config_hash([meta["data"], inputs.data_fingerprint({"train": train_df}, stores)], 16)
    barrier()
    cached = read_cache(load_parquet, path) if path.exists() else None
    if cached is not None and cached[1] in (None, fingerprint):  # None: written before data fingerprints
        return logit_dict(cached[0])
    if cached is not None:  # the fold models were trained on other data too: start them over
        warnings.warn(f"{path}: made from other data; computing it again", stacklevel=3)
        if is_main_process():
            for old in run.folder.glob(f"fold*of{tag}"):
                shutil.rmtree(old, ignore_errors=True)
    folds = crossfit.fold_assignment(train_df, tc.oof_folds, tc.seed, links)
    dev_sets = split_datasets(splits["dev"], stores, tc=tc, name=f"{modality} dev", space=space)
    frames = []
    for k in sorted(set(folds.tolist())):
        fit_rows = crossfit.fold_training_rows(train_df, folds, k) & ids.isin(stage1_ids).to_numpy()
        held = folds == k
        loop.seed_everything(tc.seed + 1 + k)
        model = unimodal_model(tc, modality, (stores[0] or stores[1]).dim).to(device)
        train_ds = EmotionDataset(train_df.loc[fit_rows].reset_index(drop=True), *stores, soft_labels=soft_table,
                                  ls_llm_p=tc.ls_llm_p, label_smoothing=tc.label_smoothing, seed=tc.seed,
                                  audio_pool=tc.audio_pool, name=f"{modality} fold {k}",
                                  allowed=space.allowed if space is not None else None)
        res = loop.fit(model, train_ds, dev_sets, tc=tc, ckpt_dir=run.folder / f"fold{k}of{tag}",
                       weights=weights, device=device, forward=loop.forward_batch, lr=lr, epochs=epochs,
                       checkpoint_meta={**meta, "fold": k, "data": fingerprint},
                       desc=f"{modality}-only fold {k + 1}/{tc.oof_folds}")
        if not res.finished:
            raise Interrupted(f"{modality}-only fold {k} stopped after interrupt_after; resume to go on")
        model.load_state_dict(res.best_state)
        held_ds = EmotionDataset(train_df.loc[held].reset_index(drop=True), *stores, audio_pool=tc.audio_pool,
                                 name=f"{modality} held {k}")
        logits = loop.predict(model, held_ds, loop.forward_batch, device, tc.eval_batch_size)
        frames.append(logit_frame(held_ds.utt_ids, logits))
    oof = pd.concat(frames, ignore_index=True)
    save_parquet(oof, path, fingerprint)
    return logit_dict(oof)
