"""Augmentation-ratio search chooses on dev only."""

from __future__ import annotations

import pytest
from bber_utils.study import search as study_search
from tests.study.common import fake_runner
# ------------------------------------------------------------------------------ sweep values (issue 25)



@pytest.mark.parametrize("search", [study_search.grid_search, study_search.greedy_search])
def test_ratio_search_selects_on_dev_only(tmp_path, search):
    calls = []
    best, trials = search({"model": "biformer", "sds_ratio": 0.0, "tug_ratio": 0.0},
                          {"sds_ratio": [0.0, 0.5, 1.0], "tug_ratio": [0.0, 1.0]}, [1, 2], tmp_path,
                          corpus="x", runner=fake_runner(tmp_path, calls))
    assert best == {"sds_ratio": 0.5, "tug_ratio": 1.0}
    assert all("dev_score" in t for t in trials)
