"""The paper's study: its settings, and its reported numbers beside ours."""

from __future__ import annotations

import pytest
from bber_utils.study import design
from bber_utils.study import registry as study_registry
from bber_utils.study import stats
from tests.study.common import write_run
# ------------------------------------------------------------------------------ sweep values (issue 25)



def test_paper_table_marks_reported_numbers(tmp_path):
    write_run(tmp_path, "r", {"model": "biformer", "seed": 1}, {("meld", "dev"): .5, ("meld", "test"): .42})
    t = design.paper_table(study_registry.load_registry(tmp_path))
    meld_wf1 = t[(t["corpus"] == "meld") & (t["metric"] == "wf1")].iloc[0]
    assert meld_wf1["paper (reported)"] == 68.31 and meld_wf1["ours (test, %)"] == 42.0
    assert t[t["corpus"] == "resd"]["ours (test, %)"].isna().all()


def test_paper_study_covers_the_questions_and_joins_runs(tmp_path):
    settings = design.paper_study(["x", "y"], fusion_models=["biformer", "bimamba"],
                              augment={"sds_ratio": 0.5, "tug_ratio": 0, "ls_llm_p": 0.2})
    studies = {(s["study"], s["setting"]) for s in settings}
    assert {("modality", "audio_only"), ("modality", "text_only"), ("fusion", "bimamba"),
            ("augmentation", "+sds_ratio=0.5"), ("augmentation", "+all"), ("corpora", "single: y")} <= studies
    assert not any("tug" in s for _, s in studies)
    for i, s in enumerate(settings):
        cfg = {k: v for k, v in s.items() if k not in ("study", "setting")}
        cfg.setdefault("sds_ratio", 0.0)
        write_run(tmp_path, f"r{i}", {**cfg, "seed": 1}, {("x", "test"): i / 100, ("x", "dev"): 0.1})
    table = stats.study_table(study_registry.load_registry(tmp_path), settings)
    assert len(table) == len(settings)  # each setting found exactly its own run (corpus x)
    plain = table[(table["study"] == "fusion") & (table["setting"] == "biformer")].iloc[0]
    assert plain["mean"] == pytest.approx(2 / 100)  # not mixed with the +sds / +ls runs of biformer
