"""Review 19: defects found in the stage-1 sharing, the study scheduler and the seed-by-seed findings."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from bber_utils import experiments


def test_unimodal_run_shares_group_with_unaugmented_fusion():
    """audio_only/text_only with no augmentation train the same stage-1 caches as an unaugmented fusion run of
    that seed (the unimodal hash has no model name), so the scheduler must never run them at once."""
    base = {"seed": 42, "train_corpora": ["meld", "resd"]}
    fusion = experiments._unimodal_group({**base, "model": "biformer"})
    for m in ("audio_only", "text_only"):
        assert experiments._unimodal_group({**base, "model": m}) == fusion
        assert experiments._unimodal_group({**base, "model": m, "sds_ratio": 0.0, "ls_llm_p": 0}) == fusion
    # augment_unimodal with no augmentation is the plain stage 1 too
    assert experiments._unimodal_group({**base, "model": "biformer", "augment_unimodal": True}) == fusion
    # augmented fusion (stage 1 on the originals) shares it; an augmented unimodal run does not
    assert experiments._unimodal_group({**base, "model": "biformer", "sds_ratio": 0.5}) == fusion
    assert experiments._unimodal_group({**base, "model": "audio_only", "sds_ratio": 0.5}) != fusion
