"""Review 19: defects found in the stage-1 sharing, the study scheduler and the seed-by-seed findings."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from bber_utils.study import registry

from bber_utils.study import schedule

from bber_utils.study import stats
def test_unimodal_run_shares_group_with_unaugmented_fusion():
    """audio_only/text_only with no augmentation train the same stage-1 caches as an unaugmented fusion run of
    that seed (the unimodal hash has no model name), so the scheduler must never run them at once."""
    base = {"seed": 42, "train_corpora": ["meld", "resd"]}
    fusion = schedule._unimodal_group({**base, "model": "biformer"})
    for m in ("audio_only", "text_only"):
        assert schedule._unimodal_group({**base, "model": m}) == fusion
        assert schedule._unimodal_group({**base, "model": m, "sds_ratio": 0.0, "ls_llm_p": 0}) == fusion
    # augment_unimodal with no augmentation is the plain stage 1 too
    assert schedule._unimodal_group({**base, "model": "biformer", "augment_unimodal": True}) == fusion
    # augmented fusion (stage 1 on the originals) shares it; an augmented unimodal run does not
    assert schedule._unimodal_group({**base, "model": "biformer", "sds_ratio": 0.5}) == fusion
    assert schedule._unimodal_group({**base, "model": "audio_only", "sds_ratio": 0.5}) != fusion


def _row(setting: str, by_seed: dict, study: str = "fusion", corpus: str = "c") -> dict:
    """One study-table row with the given per-seed WAR."""
    mean, _, half, n = stats.confidence_interval(list(by_seed.values()))
    return {"study": study, "setting": setting, "corpus": corpus, "n_seeds": n, "war": mean, "war_ci95": half,
            "uar": mean, "uar_ci95": half, "wf1": mean, "wf1_ci95": half,
            "war_by_seed": json.dumps({str(k): v for k, v in by_seed.items()})}


def test_paired_interval_only_where_both_settings_ran_the_same_seeds():
    """The footer: the paired interval, "or the two rows' own intervals where the seeds differ". Here BiMamba's
    11-point lead comes from its third seed alone (1 point ahead on the two shared seeds): not a finding."""
    study = pd.DataFrame([_row("biformer", {42: .59, 43: .59}), _row("bimamba", {42: .60, 43: .602, 44: .90})])
    row = stats.compare_to(study, ("fusion", "biformer"), {"c": 1000}).iloc[0]
    assert row["diff_pts"] == pytest.approx(11.1)
    assert row["verdict"] == "95 % intervals overlap"
    # the same seeds: the paired interval decides (unchanged)
    same = pd.DataFrame([_row("biformer", {42: .59, 43: .59, 44: .60}), _row("bimamba", {42: .60, 43: .602, 44: .612})])
    assert stats.compare_to(same, ("fusion", "biformer"), {"c": 1000}).iloc[0]["verdict"] == "better"


def test_one_seed_is_never_called_a_finding():
    """One seed per setting: no interval, so "its interval excludes 0" cannot hold; the findings must not say
    "a finding"."""
    from bber_utils.study import findings

    study = pd.DataFrame([_row("biformer", {42: .50}), _row("bimamba", {42: .60})])
    compared = stats.compare_rows(study.iloc[1], study.iloc[0], "war", 100)
    assert compared["diff_pts"] == pytest.approx(10.0) and compared["verdict"] == "one seed: no interval"
    text = findings.conclusions_markdown(findings.study_findings(study, {"c": 100}))
    assert "a finding" not in text.replace("not a finding", "")


def test_findings_name_a_setting_with_two_rows():
    """study_table gives one setting two rows when its runs differ in a key the setting does not fix (an older
    work folder, a changed profile); the findings must say so, not crash inside pandas."""
    from bber_utils.study import findings

    study = pd.DataFrame([_row("biformer", {42: .5, 43: .6}), _row("biformer", {42: .52, 43: .61}),
                          _row("bimamba", {42: .6, 43: .7})])
    study.insert(3, "augment_unimodal", [False, True, False])
    with pytest.raises(ValueError, match=r"fusion/biformer.*augment_unimodal"):
        findings.study_findings(study, {"c": 100})


def test_older_augmented_fusion_run_is_not_pooled_with_the_new_protocol():
    """A run from before augment_unimodal (its metrics.json config has no such key) trained stage 1 on the
    augmented rows: its setting must not equal the new default's (stage 1 on the originals), or study_table pools
    the two and keeps either one of a seed's runs."""
    from bber_utils.train import TrainConfig

    old = {"model": "biformer", "sds_ratio": 0.5}
    new = TrainConfig.from_dict(old).identity()
    assert "augment_unimodal" in new and new["augment_unimodal"] is False
    assert registry.run_settings(old) != registry.run_settings(new)
    assert registry.run_settings(old) == registry.run_settings({**new, "augment_unimodal": True})
    # where the key changes nothing, old and new runs stay one setting
    for cfg in ({"model": "biformer"}, {"model": "audio_only", "sds_ratio": 0.5}):
        assert registry.run_settings(cfg) == registry.run_settings(TrainConfig.from_dict(cfg).identity())


@pytest.mark.parametrize("value", ["false", "no", "0"])
def test_augment_unimodal_given_as_text_is_refused(value):
    """A quoted "false" (profile or --set) is a truthy string: stage 1 of an augmented fusion model would train
    on the augmented rows under a run name that says augment_unimodal: "false". One clear error instead."""
    from bber_utils.core.errors import ConfigError
    from bber_utils.train import TrainConfig

    with pytest.raises(ConfigError, match="augment_unimodal"):
        TrainConfig.from_dict({"model": "biformer", "sds_ratio": 0.5, "augment_unimodal": value})
    assert TrainConfig.from_dict({"model": "biformer", "sds_ratio": 0.5, "augment_unimodal": False}).stage1_config() \
        .sds_ratio == 0.0


def test_a_groups_first_run_trains_every_stage_one_modality():
    """text_only trains no audio stage 1 (no audio store); were it a group's first run, the group's fusion runs
    would then run at once and all train the shared audio stage 1 together."""
    jobs = [{"model": m, "seed": 1, "train_corpora": ["x"]} for m in ("text_only", "biformer", "bimamba")]
    order = []
    schedule._run_scheduled(jobs, lambda p: order.append(p["model"]), workers=1, progress=False)
    assert order[0] != "text_only" and sorted(order) == ["biformer", "bimamba", "text_only"]
