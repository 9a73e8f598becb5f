"""The study's schedule: runs sharing a stage 1 wait for the first of them, which trains every modality."""

from __future__ import annotations

from bber_utils.study import schedule


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


def test_a_groups_first_run_trains_every_stage_one_modality():
    """text_only trains no audio stage 1 (no audio store); were it a group's first run, the group's fusion runs
    would then run at once and all train the shared audio stage 1 together."""
    jobs = [{"model": m, "seed": 1, "train_corpora": ["x"]} for m in ("text_only", "biformer", "bimamba")]
    order = []
    schedule._run_scheduled(jobs, lambda p: order.append(p["model"]), workers=1, progress=False)
    assert order[0] != "text_only" and sorted(order) == ["biformer", "bimamba", "text_only"]
