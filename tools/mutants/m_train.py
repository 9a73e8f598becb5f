"""Mutants for the trainer defects fixed in issue 20 (items 1, 2, 5, 6, 8) and issue 19 (dialogue folds, the shared
stage 1): each puts the old behaviour back."""

from __future__ import annotations

from .base import Mutant


# 1. OOF folds: a merged row takes its first component's fold; fold models still train on its other components --
def _oof_first_component_fold(mp):
    import numpy as np
    import pandas as pd

    from bber_utils.train import crossfit as T

    def fold_assignment(train_df, k, seed, links=None):
        from sklearn.model_selection import StratifiedKFold

        comps = [T._components(v) for v in train_df["components"]] if "components" in train_df \
            else [[]] * len(train_df)
        plain = np.array([len(c) == 0 for c in comps])
        folds = np.zeros(len(train_df), dtype=int)
        idx = np.flatnonzero(plain)
        labels = train_df["label"].to_numpy()[idx]
        n_splits = min(k, len(idx))
        if pd.Series(labels).value_counts().min() >= n_splits:
            for f, (_, held) in enumerate(StratifiedKFold(n_splits, shuffle=True, random_state=seed)
                                          .split(idx, labels)):
                folds[idx[held]] = f
        else:
            perm = np.random.default_rng(seed).permutation(len(idx))
            folds[idx[perm]] = np.arange(len(idx)) % n_splits
        fold_of = dict(zip(train_df["utt_id"].astype(str), folds))
        rng = np.random.default_rng(seed + 1)
        for i in np.flatnonzero(~plain):
            cf = [int(fold_of[c]) for c in comps[i] if c in fold_of]
            folds[i] = cf[0] if cf else int(rng.integers(n_splits))
        return folds

    def fold_training_rows(train_df, folds, k):  # kept out of the folds of its components, nothing more
        comps = [T._components(v) for v in train_df["components"]] if "components" in train_df \
            else [[]] * len(train_df)
        fold_of = dict(zip(train_df["utt_id"].astype(str), folds))
        return np.array([k != f and k not in {fold_of[c] for c in cs if c in fold_of}
                         for f, cs in zip(folds, comps)])

    mp.setattr(T, "fold_assignment", fold_assignment)
    mp.setattr(T, "fold_training_rows", fold_training_rows)


# 2. class weights multiply the soft target (q ⊙ w) ----------------------------------------------------------------
def _weights_reshape_target(mp):
    from bber_utils.train import loss
    from bber_utils.study import registry as study_registry
    from bber_utils.study import stats
    def soft_cross_entropy_parts(logits, target, weight=None, labels=None):
        import torch

        logp = torch.log_softmax(logits.float(), dim=-1)
        q = target.float()
        if weight is not None:
            q = q * weight.to(q.device, q.dtype)
        return -(q * logp).sum(), q.sum()

    mp.setattr(loss, "soft_cross_entropy_parts", soft_cross_entropy_parts)


# 5. summaries grouped on a fixed list of keys ---------------------------------------------------------------------
def _summaries_fixed_keys(mp):
    from bber_utils.train import loss
    from bber_utils.study import registry as study_registry
    from bber_utils.study import stats
    def summarize(registry, by, split="test", metrics=study_registry.METRICS):
        import pandas as pd

        keys = list(dict.fromkeys([*by, "corpus"]))
        df = registry[registry["split"] == split]
        same_run = [c for c in (*study_registry.SETTING_KEYS, *keys, "seed") if c in df]
        df = df.drop_duplicates(list(dict.fromkeys(same_run)))
        rows = []
        for group, part in df.groupby(keys, dropna=False, sort=True):
            row = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
            for m in metrics:
                mean, std, half, n = stats.confidence_interval(part[m])
                row.update({m: mean, f"{m}_std": std, f"{m}_ci95": half})
            row["n_seeds"] = int(part["seed"].nunique())
            rows.append(row)
        return pd.DataFrame(rows)

    mp.setattr(stats, "summarize", summarize)


# 6. AdamW decays every parameter ------------------------------------------------------------------------------------
def _decay_everything(mp):
    from bber_utils.train import loop as T

    def optimizer_param_groups(model, weight_decay):
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    mp.setattr(T, "optimizer_param_groups", optimizer_param_groups)


# 8. every cross-modal layer carries the 4H feed-forward (the paper profile is not the paper's model size) ------------
def _ff4_everywhere(mp):
    from bber_utils.models import blocks

    real = blocks.CrossAttentionBlock.__init__

    def __init__(self, d_model, num_heads, dropout, norm_first, ff_expansion=1):
        real(self, d_model, num_heads, dropout, norm_first, 4)

    mp.setattr(blocks.CrossAttentionBlock, "__init__", __init__)


# issue 19: with dialogue context, folds ignore the dialogues (a fold model reads held-out rows' text as context) -----
def _oof_dialogues_split(mp):
    from bber_utils.train import crossfit as T

    real = T.fold_assignment

    def fold_assignment(train_df, k, seed, links=None):
        return real(train_df, k, seed)

    mp.setattr(T, "fold_assignment", fold_assignment)


# issue 19: stage 1 of an augmented fusion run trains on the augmented rows (nothing shared across settings) ---------
def _stage1_always_augmented(mp):
    from bber_utils.train.config import TrainConfig

    mp.setattr(TrainConfig, "stage1_config", lambda self: self)


# issue 19: settings compared by their own intervals only (the seed-by-seed pairing ignored) ------------------------
def _unpaired_comparison(mp):
    import math

    from bber_utils.train import loss

    from bber_utils.study import registry as study_registry

    from bber_utils.study import stats
    mp.setattr(stats, "paired_difference", lambda values, reference: (math.nan, math.nan, 0))


MUTANTS = [
    Mutant("fix1-oof-sds-first-component", "issue 20.1: an SDS row takes its first component's fold; the fold model "
           "that predicts it trains on its other components",
           ("tests/train/test_train.py::test_fold_assignment_keeps_merged_rows_away_from_their_components",
            "tests/train/test_train.py::test_out_of_fold_models_never_saw_any_part_of_a_row_they_predict"),
           _oof_first_component_fold),
    Mutant("fix2-weights-reshape-soft-target", "issue 20.2: class weights multiply the soft target (q ⊙ w), moving "
           "the loss optimum to p ∝ w ⊙ q",
           ("tests/train/test_dataset.py::test_loss_optimum_keeps_the_target_argmax_for_any_valid_soft_target",
            "tests/train/test_dataset.py::test_class_weights_do_not_move_the_optimum_of_a_soft_target",
            "tests/train/test_dataset.py::test_per_sample_weights_add_up_over_ranks_and_ignore_padding"),
           _weights_reshape_target),
    Mutant("fix5-summaries-fixed-keys", "issue 20.5: multi-seed summaries group on a fixed key list (runs differing "
           "in lr pooled)",
           ("tests/study/test_stats.py::test_summarize_never_pools_runs_that_differ_in_any_setting",),
           _summaries_fixed_keys),
    Mutant("fix6-decay-everything", "issue 20.6: AdamW decays Mamba's A_log and D, norms and biases",
           ("tests/train/test_train.py::test_adamw_does_not_decay_ssm_norm_and_bias_parameters",), _decay_everything),
    Mutant("fix8-ff4-cross-layers", "issue 20.8: every cross-modal layer has a 4H feed-forward, so the paper "
           "profile is not the reference's model size",
           ("tests/models/test_models.py::test_paper_profile_has_the_reference_cross_modal_layers",), _ff4_everywhere),
    Mutant("fix19-oof-dialogues-split", "issue 19: with text_context, cross-fitting folds split dialogues, so a fold "
           "model reads a held-out row's text as a later turn's context",
           ("tests/train/test_train.py::test_with_dialogue_context_a_dialogue_is_never_split_across_folds",),
           _oof_dialogues_split),
    Mutant("fix19-stage1-always-augmented", "issue 19: an augmented fusion run retrains stage 1 on its augmented "
           "rows (augment_unimodal ignored; no stage 1 shared across the settings of a seed)",
           ("tests/train/test_train.py::test_augmentations_train_the_fusion_on_a_shared_unaugmented_stage_1",
            "tests/train/test_train.py::test_out_of_fold_models_never_saw_any_part_of_a_row_they_predict"),
           _stage1_always_augmented),
    Mutant("fix19-unpaired-comparison", "issue 19: two settings are compared by their own 95 % intervals only, not "
           "seed by seed (the runs of a seed share encoders and data order)",
           ("tests/study/test_stats.py::test_compare_to_uses_the_seed_by_seed_difference",
            "tests/study/test_findings.py::test_findings_are_computed_seed_by_seed_and_name_the_control"),
           _unpaired_comparison),
]
