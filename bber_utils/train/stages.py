"""``train(cfg) -> RunResult``: the run from its inputs to ``metrics.json``, in the order of the method.

1. inputs (``inputs``): corpora, manifests, SDS/TUG rows, feature stores, soft labels, class weights;
2. the run folder ``<workdir>/train/<run>/`` (``{model}-s{seed}-{hash of the config}`` unless ``run_name``);
3. stage 1 (``unimodal``): the audio-only and text-only classifiers (cached), plus out-of-fold train logits; for
   a fusion model on the original train rows unless ``augment_unimodal`` (``TrainConfig.stage1_config``);
4. stage 2 (``fusion``): the chosen model on the stage-1 encoders;
5. ``metrics.json`` and ``history.csv`` (``runs``).

Owns: ``train``, the order of the stages, the default run name (``default_run_name``) and the content of
``metrics.json``.
Imports from this package: every module but ``cli``; must not import ``cli``. Calls ``inputs.*`` through the
module (tests patch ``inputs.build_feature_stores`` and friends there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bber_utils.core.device import resolve_device
from bber_utils.core.errors import ConfigError
from bber_utils.core.fileio import check_writable
from bber_utils.core.labels import CLASSES
from bber_utils.core.paths import run_dirs, workdir_path
from bber_utils.core.provenance import environment
from bber_utils.features.context import with_text_context
from bber_utils.features.normalise import with_audio_norm
from bber_utils.models import MODEL_NAMES
from bber_utils.train import inputs, loop
from bber_utils.train.config import UNIMODAL_MODELS, TrainConfig, config_hash, feature_spec
from bber_utils.train.dataset import matching_soft_labels, soft_label_table
from bber_utils.train.distributed import barrier, init_distributed, is_main_process, rank_zero_first
from bber_utils.train.fusion import needs_oof, reuse_unimodal, train_fusion
from bber_utils.train.loss import class_weights
from bber_utils.train.runs import RunResult, git_commit, save_json, write_history
from bber_utils.train.parallel_stage1 import train_stage1

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


def train(cfg: dict[str, Any] | TrainConfig) -> RunResult:
    """Train the configured model (see the package docstring); returns the run folder, metrics and history.

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


@dataclass
class _Inputs:
    """What both stages train and score on."""

    corpora: list[str]
    splits: dict[str, pd.DataFrame]        # train (augmented) / dev / test rows whose features exist
    stage1_train: pd.DataFrame             # the rows stage 1 trains on: the original ones unless it is augmented
    stores: tuple                          # (audio store or None, text store)
    skipped: dict[str, dict[str, int]]     # {split: {reason: count}}
    soft_table: dict                       # {utt_id: (7,)} LS-LLM targets (empty when ls_llm_p = 0)
    soft_stale: int                        # soft labels dropped: made for another label than the manifest's
    weights: np.ndarray                    # (7,) class weights of the train rows
    fingerprint: str = ""                  # what stage 2 reads (``_data_fingerprint``)
    space: inputs.LabelSpace = inputs.LabelSpace()  # the corpora's label sets: what is predicted and scored
    unseen: dict | None = None             # {corpus: {split: {class: n}}}: scored classes its train lacks


def _train(tc: TrainConfig) -> RunResult:
    t_start = time.perf_counter()
    if tc.model not in MODEL_NAMES:
        raise ValueError(f"unknown model {tc.model!r}; choose one of {list(MODEL_NAMES)}")
    device = init_distributed(resolve_device(tc.device))  # torchrun: join the process group, cuda:LOCAL_RANK
    resolve_device(tc.feature_device, allow_mps=True)  # a typo fails now, not when features are missing
    if device.type == "cpu":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    check_writable(workdir_path(tc.workdir) / "train", "training writes its run folder there; make it writable "
                                                       "or choose another workdir=")
    loop.seed_everything(tc.seed)
    tc = tc.for_corpora(inputs.resolve_corpora(tc.train_corpora, tc.workdir))  # the corpora's defaults
    data = _load_inputs(tc)
    run_name, run_dir = _open_run_dir(tc, data.corpora)
    phases = {"inputs_s": time.perf_counter() - t_start}  # where the run's time goes (metrics.json "phases")

    # --- stage 1: unimodal encoders (the baselines) -------------------------------------------------
    stores = data.stores
    if stores[0] is None and tc.model != "text_only":
        raise ValueError(f"model {tc.model!r} needs audio, but no manifest row has any; use model=text_only")
    dims = (int(stores[0].dim) if stores[0] is not None else 1, int(stores[1].dim))
    tc1, splits1, weights1 = _stage1_inputs(tc, data)
    unimodal = train_stage1(tc1, stores, splits1, data.soft_table, weights1, device, needs_oof(tc.model), dims,
                            oof_train=data.splits["train"], space=data.space, parallel=tc.parallel_stage1)
    phases["stage1_s"] = time.perf_counter() - t_start - sum(phases.values())

    # --- stage 2: the chosen model ------------------------------------------------------------------
    meta = {"model_name": tc.model, "d_audio": dims[0], "d_text": dims[1],
            "model_config": tc.model_config().to_dict(), "features": feature_spec(tc), "config": tc.identity(),
            "data": data.fingerprint, **_classes_meta(data.space)}
    if tc.model in UNIMODAL_MODELS:
        history, best_epoch, metrics = reuse_unimodal(unimodal[tc.model.split("_")[0]], run_dir)
    else:
        history, best_epoch, metrics = train_fusion(tc, stores, data.splits, unimodal, data.soft_table,
                                                    data.weights, device, run_dir, meta, space=data.space)

    phases["stage2_s"] = time.perf_counter() - t_start - sum(phases.values())
    result = _metrics_json(tc, run_name, data, unimodal, metrics, best_epoch, device, t_start)
    result["phases"] = phases
    write_history(history, run_dir / "history.csv")
    save_json(result, run_dir / "metrics.json")
    barrier()  # every rank returns once the run folder is complete
    return RunResult(run_dir, result, history, {f"{m}_only": r.history for m, r in unimodal.items()})


def _load_inputs(tc: TrainConfig) -> _Inputs:
    """Corpora -> splits -> augmented train manifest -> feature stores -> available rows -> soft labels."""

    corpora = inputs.resolve_corpora(tc.train_corpora, tc.workdir)
    space = inputs.label_space(corpora, tc.workdir)
    splits, outside, unseen = inputs.check_label_sets(inputs.load_splits(corpora, tc.workdir), space)
    original = splits["train"]
    with rank_zero_first():  # rank 0 writes the SDS clips and extracts missing features; the others read them
        splits["train"] = inputs.build_train_manifest(tc, original)
        all_rows = pd.concat([splits[s] for s in ("train", "dev", "test")] + [original], ignore_index=True)
        stores = inputs.build_feature_stores(tc, all_rows.drop_duplicates("utt_id", ignore_index=True))
        stores = (with_audio_norm(stores[0], tc.audio_norm, all_rows.drop_duplicates("utt_id")), stores[1])
    skipped = {}
    for split in ("train", "dev", "test"):
        splits[split], skipped[split] = inputs.filter_available(splits[split], stores, f"{split} split")
        skipped[split].update(outside.get(split, {}))
    for split in ("train", "dev"):
        if len(splits[split]) == 0:
            raise ConfigError(f"no {split} row has features (skipped: {skipped[split]}); see the warnings above")
    stage1_train = splits["train"]  # stage 1 trains on the (augmented) train split itself ...
    if tc.stage1_config() is not tc:  # ... or on the original rows (TrainConfig.stage1_config)
        stage1_train, _ = inputs.filter_available(original, stores, "original train rows (stage 1)")
    if tc.text_context:  # our extension: previous utterances of the same dialogue and split (bber_utils.features.context)

        stores = (stores[0], with_text_context(stores[1], splits, tc.text_context, tc.text_context_mode,
                                                        tc.text_context_speaker))
    soft, stale = matching_soft_labels(inputs.load_soft_labels_for(tc), splits["train"], "soft labels")
    soft_table = soft_label_table(soft, "soft labels")
    data = _Inputs(corpora, splits, stage1_train, stores, skipped, soft_table, stale,
                   _loss_weights(splits["train"], tc, space), space=space, unseen=unseen)
    data.fingerprint = _data_fingerprint(tc, data)
    return data


def data_fingerprint_for(cfg: dict[str, Any] | TrainConfig) -> str:
    """The fingerprint of the data a run of ``cfg`` reads now (``metrics.json``'s ``data``), without training
    (missing features are extracted, as training would): a study reuses a finished run only when it matches."""
    tc = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    return _load_inputs(tc.for_corpora(inputs.resolve_corpora(tc.train_corpora, tc.workdir))).fingerprint


def _data_fingerprint(tc: TrainConfig, data: _Inputs) -> str:
    """16 hex digits over what the run reads: its rows and their features' content (``inputs.data_fingerprint``)
    and the LS-LLM targets it uses. Kept in ``metrics.json`` and the checkpoints: a run whose data changed is
    trained again in its folder (``loop.fit``), never reported from the old model."""
    fingerprint = inputs.data_fingerprint(data.splits, data.stores)
    if tc.ls_llm_p > 0:
        fingerprint = config_hash([fingerprint, inputs.soft_digest(data.soft_table)], 16)
    return fingerprint


def _loss_weights(train_df: pd.DataFrame, tc: TrainConfig, space: inputs.LabelSpace | None = None) -> np.ndarray:
    """(7,) class weights of the loss: balanced over ``train_df``'s labels, to the power ``class_weight_power``."""

    weights = class_weights(np.array([CLASSES.index(lbl) for lbl in train_df["label"]]),
                            space.allowed if space is not None else None)
    return (weights ** float(tc.class_weight_power)).astype(np.float32)


def _stage1_inputs(tc: TrainConfig, data: _Inputs) -> tuple[TrainConfig, dict, np.ndarray]:
    """What stage 1 trains on (``TrainConfig.stage1_config``): ``(config, splits, class weights)``. Without the
    augmentations it is the original train rows with their own class weights, the same inputs as an
    unaugmented run of that seed, so the cached stage 1 is shared."""
    tc1 = tc.stage1_config()
    if tc1 is tc:
        return tc, data.splits, data.weights
    return tc1, {**data.splits, "train": data.stage1_train}, _loss_weights(data.stage1_train, tc1, data.space)


def _classes_meta(space: inputs.LabelSpace) -> dict:
    """``{"classes": [names]}`` for a checkpoint whose model predicts fewer than seven classes (else nothing)."""
    return {} if space.allowed is None else {"classes": [CLASSES[i] for i in space.allowed]}


def default_run_name(tc: "TrainConfig", corpora: list[str] | None = None, resolve: bool = True) -> str:
    """``{model}[-sds..][-tug..][-ls..]-s{seed}-{hash}``; ``"all"`` is resolved to the corpus list *before*
    hashing, so ``train_corpora="all"`` and the same corpora named one by one give one run (notebook 06's run is
    reused by notebook 07). Without manifests to resolve against, the value is hashed as given."""
    if corpora is None and resolve:
        try:
            corpora = inputs.resolve_corpora(tc.train_corpora, tc.workdir)
        except FileNotFoundError:
            corpora = None
    if corpora is not None:  # the corpora's defaults (TrainConfig.for_corpora) are hashed as the run has them
        tc = tc.for_corpora(corpora)
    identity = tc.identity()
    if corpora is not None:
        identity["train_corpora"] = list(corpora)
    tags = [f"{short}{getattr(tc, key)}" for key, short in (("sds_ratio", "sds"), ("tug_ratio", "tug"),
                                                             ("ls_llm_p", "ls")) if getattr(tc, key)]
    return "-".join([str(tc.model), *tags, f"s{tc.seed}", config_hash(identity)])


def _open_run_dir(tc: TrainConfig, corpora: list[str]) -> tuple[str, Path]:
    """``(run name, run folder)``; rank 0 creates the folder and writes ``config.json``."""
    run_name = tc.run_name or default_run_name(tc, corpora)
    run_dir = run_dirs(tc.workdir).train / run_name
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_json(tc.to_dict(), run_dir / "config.json")
    return run_name, run_dir


def _metrics_json(tc: TrainConfig, run_name: str, data: _Inputs, unimodal: dict, metrics: dict, best_epoch: int,
                  device, t_start: float) -> dict:
    """The content of ``metrics.json`` (docs/architecture.md lists its keys)."""

    train_df = data.splits["train"]
    train_counts = train_df.groupby(["corpus", "source"]).size()
    n_soft = int(train_df["utt_id"].astype(str).isin(data.soft_table.keys()).sum()) if tc.ls_llm_p > 0 else 0
    return {
        "run": run_name, "model": tc.model, "seed": tc.seed, "config": tc.to_dict(), "git_commit": git_commit(),
        "wall_time_s": time.perf_counter() - t_start, "best_epoch": int(best_epoch),
        "soft_labels": {"used": n_soft, "missing": len(train_df) - n_soft if tc.ls_llm_p > 0 else 0,
                        "stale": data.soft_stale, "p": tc.ls_llm_p},
        "data": data.fingerprint,
        "metrics": metrics,
        "unimodal": {f"{m}_only": run.metrics for m, run in unimodal.items()},
        "unimodal_folders": {f"{m}_only": str(r.folder) for m, r in unimodal.items()},
        "n_train": {f"{c}/{s}": int(n) for (c, s), n in train_counts.items()},
        "skipped": data.skipped,
        "corpora": data.corpora,
        **({"classes": {c: [CLASSES[i] for i in own] for c, own in data.space.scoring.items()}}
           if data.space.allowed is not None or any(len(o) < len(CLASSES) for o in data.space.scoring.values())
           else {}),
        **({"unseen_classes": data.unseen} if data.unseen else {}),
        "device": str(device),
        "environment": environment(),
    }
