"""Findings seed by seed: which differences count as findings, and notebook 08's conclusions."""

from __future__ import annotations

import pandas as pd
import pytest
from bber_utils.study import stats
from tests.study.common import paired_study, seed_row



def test_findings_are_computed_seed_by_seed_and_name_the_control():
    from bber_utils.study import findings

    study = paired_study()
    questions = [(q, a[1], b[1]) for q, a, b in findings.study_comparisons(study)]
    assert ("what fusion adds", "biformer", "audio_only") in questions
    assert ("synthetic emotional rows or just more rows", "+tug_ratio=0.5", "+sds_ratio=1.0") in questions
    table = findings.study_findings(study, {"c": 100}).set_index("comparison")
    fusion = table.loc["BiFormer − audio only"]
    assert fusion["diff_pts"] == 20.0 and fusion["seeds_ahead"] == 3 and fusion["verdict"] == "better"
    assert study.set_index("setting").loc["biformer", "war_ci95"] > 0.10  # the unpaired intervals overlap
    control = table.loc["BiFormer + TUG (0.5) − BiFormer + SDS (1.0)"]
    assert control["diff_pts"] == -1.0 and control["verdict"] == "within 3 test clips"
    text = findings.conclusions_markdown(findings.study_findings(study, {"c": 100}))
    assert "**What fusion adds.** BiFormer − audio only: c +20.0 points, ahead on 3 of 3 seeds, a finding" in text
    assert "not a finding (within 3 test clips)" in text
    report = findings.study_report(study, {"c": 100})
    assert report.startswith("| study | setting |") and "**Findings**" in report and "+20.0 (3/3 seeds ahead" in report



def test_one_seed_is_never_called_a_finding():
    """One seed per setting: no interval, so "its interval excludes 0" cannot hold; the findings must not say
    "a finding"."""
    from bber_utils.study import findings

    study = pd.DataFrame([seed_row("biformer", {42: .50}), seed_row("bimamba", {42: .60})])
    compared = stats.compare_rows(study.iloc[1], study.iloc[0], "war", 100)
    assert compared["diff_pts"] == pytest.approx(10.0) and compared["verdict"] == "one seed: no interval"
    text = findings.conclusions_markdown(findings.study_findings(study, {"c": 100}))
    assert "a finding" not in text.replace("not a finding", "")


def test_findings_name_a_setting_with_two_rows():
    """study_table gives one setting two rows when its runs differ in a key the setting does not fix (an older
    work folder, a changed profile); the findings must say so, not crash inside pandas."""
    from bber_utils.study import findings

    study = pd.DataFrame([seed_row("biformer", {42: .5, 43: .6}), seed_row("biformer", {42: .52, 43: .61}),
                          seed_row("bimamba", {42: .6, 43: .7})])
    study.insert(3, "augment_unimodal", [False, True, False])
    with pytest.raises(ValueError, match=r"fusion/biformer.*augment_unimodal"):
        findings.study_findings(study, {"c": 100})
