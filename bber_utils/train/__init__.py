"""The trainer: unimodal encoders first, then the chosen fusion model; metrics per corpus; resumable runs.

``train(cfg) -> RunResult`` takes the notebook-06 parameters (every key and its default: ``TrainConfig``):

1. corpora: ``train_corpora`` (a list, or ``"all"`` = every corpus with manifests in ``<workdir>/manifests``);
2. the train manifest: original rows + SDS (``sds_ratio``) + TUG (``tug_ratio``); dev and test untouched;
3. features for every row (``audio_encoder``, ``text_encoder`` ...), kept in ``<workdir>/features``;
4. stage 1: the audio-only and text-only Mamba classifiers, trained on train, early-stopped on dev, cached
   under ``<workdir>/train/_unimodal/<hash>/`` by a hash of everything that changes them. For a fusion model
   the augmentations train stage 2 only: stage 1 trains on the original rows with one-hot targets and is shared
   by every augmentation setting of a seed (``augment_unimodal=True`` trains it on the augmented rows and
   targets too; ``TrainConfig.stage1_config``). For prediction
   fusion and the *_withprob models, out-of-fold train logits by K-fold cross-fitting (``oof_folds``): the
   fusion never sees a logit from a unimodal model that was trained on that sample or on any part of it
   (SDS rows and their components share a fold, ``fold_assignment``; the reference's stacking leak, notes
   §11.9); dev/test logits come from the full unimodal models;
5. stage 2: the chosen model with the unimodal encoders loaded and, by default, frozen; frozen encoders are run
   once per utterance and their outputs cached, so each epoch trains only the fusion layers;
6. ``<workdir>/train/<run>/``: ``metrics.json``, ``history.csv``, ``best.pt``, ``last.pt``, ``config.json``.

What a run reads is fingerprinted (``inputs.data_fingerprint``: its rows, labels and the feature store's content
hash of every utterance's text or audio, plus the LS-LLM targets), and the fingerprint is kept in the stage-1
cache's ``done.json``, the checkpoints and ``metrics.json`` (``data``); run names and cache names do not carry it,
so they are those of earlier versions. After re-preparing with changed transcripts, clips or labels, ``train``
trains again: stage 1 into a new cache entry (``{hash}-{fingerprint}``; the old one stays for the old data),
stage 2 from scratch in the same run folder, with one warning line. LS-LLM rows made for another label than the
manifest's are dropped to one-hot and counted (``metrics.json`` ``soft_labels.stale``). A cache file that cannot
be read back (truncated) is computed again with one warning line.

Loss: soft-target cross-entropy, each sample weighted by its true class's weight (``data.soft_cross_entropy``).
AdamW with parameter groups (``optimizer_param_groups``: no weight decay on biases, norms, Mamba's ``A_log`` and
``D``, embeddings); warm-up + cosine (or plateau / none); early stopping on the dev mean of (UAR, WAR, MF1, WF1)
averaged over corpora. Deterministic on CPU for a seed: every epoch reseeds the torch RNG (dropout) and the
samplers from ``(seed, epoch)``, so a run resumed from ``last.pt`` gives the same numbers as an uninterrupted one
(tests/train/test_train.py).

Distributed training: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) ``train`` joins the process
group (nccl on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on CPU) and trains with DistributedDataParallel.
``batch_size`` stays the *global* batch: each global batch of the single-process epoch order is split across the
ranks (``data.RankBatchSampler``, also for the balanced multi-corpus sampler) and the loss is normalised by the
summed sample weights (``w[y_i]``) of the whole global batch, so the all-reduced gradient is the single-process one
and a 2-process run gives the single-process metrics up to float summation order (and dropout masks, which each
rank draws for its own samples; docs/scaling.md gives the measured difference). Rank 0 does the per-epoch dev
evaluation and broadcasts the score (early stopping, plateau scheduler); the final dev/test scoring and the
encoder caches run on every rank on identical weights, so every rank returns the same metrics without a gather.
Rank 0 writes every file (``is_main_process``); it extracts features / SDS clips first while the others wait
(``rank_zero_first``), and barriers keep the others from reading a cache or checkpoint before it is written.

The files, bottom-up (each imports only the ones above it; tests/test_train_layout.py checks it):

    config.py       TrainConfig, its checks, CONTROL_KEYS / MODEL_KEYS, the run hash, the stage-1 key, --help text
    distributed.py  process group, barriers, broadcast, DDP wrapping (no-ops without torchrun)
    runs.py         the run folder: metrics.json, history.csv, checkpoints, RunResult, load_run
    crossfit.py     fold assignment by SDS groups (pure)
    inputs.py       corpora, manifests, SDS/TUG rows, feature stores, soft labels, datasets per corpus
    loop.py         one model: fit / evaluate / predict, scheduler, AMP, early stopping, param groups
    unimodal.py     stage 1: the unimodal classifiers (cached) and their out-of-fold train logits
    fusion.py       stage 2: the chosen model on the stage-1 encoders, cached encodings
    stages.py       train(): inputs -> stage 1 -> stage 2 -> metrics.json
    profiles.py     a profile's parameters: every default (TrainConfig, core.parameters), the profile file over them
    cli.py          bber train

This ``__init__`` only re-exports. To replace a function in a test, patch it in the module that defines it
(``bber_utils.train.loop.fit``, ``bber_utils.train.inputs.build_feature_stores``): the stages call them through
their modules, so a patch of the name re-exported here would not be seen.
"""

from bber_utils.core.device import resolve_device
from bber_utils.train.cli import register_cli
from bber_utils.train.config import (AMP_MODES, CONTROL_KEYS, MODEL_KEYS, SCHEDULERS, UNIMODAL_MODEL_KEYS,
                                     UNIMODAL_MODELS, TrainConfig, config_hash, config_key_descriptions,
                                     config_keys_help, feature_spec, stage1_key)
from bber_utils.train.crossfit import fold_assignment, fold_training_rows
from bber_utils.train.distributed import (barrier, broadcast_from_main, destroy_process_group, dist_info, dist_sum,
                                          init_distributed, is_main_process, rank_zero_first, unwrap_model, wrap_model)
from bber_utils.train.fusion import cache_encodings
from bber_utils.train.inputs import (build_feature_stores, build_train_manifest, filter_available, load_soft_labels_for,
                                     load_splits, resolve_corpora)
from bber_utils.train.loop import NO_DECAY_NAMES, FitResult, evaluate, fit, optimizer_param_groups, predict
from bber_utils.train.profiles import load_profile
from bber_utils.train.runs import (Interrupted, RunResult, git_commit, load_checkpoint, load_run, save_checkpoint,
                                   save_json)
from bber_utils.train.stages import default_run_name, train
from bber_utils.train.unimodal import UnimodalRun, train_unimodal

__all__ = [
    "AMP_MODES", "CONTROL_KEYS", "MODEL_KEYS", "NO_DECAY_NAMES", "SCHEDULERS", "UNIMODAL_MODELS",
    "UNIMODAL_MODEL_KEYS", "FitResult", "Interrupted", "RunResult", "TrainConfig", "UnimodalRun", "barrier",
    "broadcast_from_main", "build_feature_stores", "build_train_manifest", "cache_encodings", "config_hash",
    "config_key_descriptions", "config_keys_help", "default_run_name", "destroy_process_group", "dist_info",
    "dist_sum", "evaluate",
    "feature_spec", "filter_available", "fit", "fold_assignment", "fold_training_rows", "git_commit",
    "init_distributed", "is_main_process", "load_checkpoint", "load_profile", "load_run", "load_soft_labels_for",
    "load_splits",
    "optimizer_param_groups", "predict", "rank_zero_first", "register_cli", "resolve_corpora", "resolve_device",
    "save_checkpoint", "save_json", "stage1_key", "train", "train_unimodal", "unwrap_model", "wrap_model",
]
