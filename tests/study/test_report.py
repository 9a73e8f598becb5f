"""The README's study table and the published figures come from notebook 08's file and cannot drift apart."""

from __future__ import annotations

import pandas as pd
import pytest
from bber_utils.study import design
from bber_utils.study import readme as study_readme
from bber_utils.study import report as study_report
from bber_utils.core.paths import REPO_ROOT


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _study():
    rows = []
    for setting, study, war in (("biformer", "fusion", .700), ("+tug_ratio=0.5", "augmentation", .715),
                                ("+sds_ratio=1.0", "augmentation", .800), ("audio_only", "modality", .400)):
        for corpus in ("demo_en", "demo_ru"):
            rows.append({"study": study, "setting": setting, "corpus": corpus, "n_seeds": 3,
                         **{m: war for m in ("uar", "war", "mf1", "wf1", "mean")},
                         **{f"{m}_ci95": .01 for m in ("uar", "war", "mf1", "wf1", "mean")}})
    return pd.DataFrame(rows)


def test_readme_block_is_the_published_study_table():
    """`make reproduce` writes figures/study_table.md and copies it into the README; a hand edit of either fails."""
    table = (REPO_ROOT / "figures" / study_readme.TABLE_FILE).read_text(encoding="utf-8")
    assert study_readme.readme_block(REPO_ROOT / "README.md") == table.strip("\n"), "run `bber readme`"


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{study_readme.BEGIN}\nold\n{study_readme.END}\nafter\n", encoding="utf-8")
    assert study_readme.update_readme(readme, "| a |\n|---|\n")
    assert readme.read_text(encoding="utf-8") == f"# x\nbefore\n{study_readme.BEGIN}\n| a |\n|---|\n{study_readme.END}\nafter\n"
    assert not study_readme.update_readme(readme, "| a |\n|---|\n")  # unchanged: not rewritten
    with pytest.raises(ValueError, match="markers"):
        study_readme.update_readme(_write(tmp_path / "no_markers.md", "nothing"), "x")


def test_study_markdown_flags_differences_within_a_few_test_clips():
    md = study_report.study_markdown(_study(), {"demo_en": 112, "demo_ru": 112})
    lines = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| ")}
    assert "within 3 test clips" in lines["BiFormer + TUG (0.5)"]  # 1.5 points = 1.7 clips of 112
    assert "within" not in lines["BiFormer + SDS (1.0)"] and "overlap" not in lines["BiFormer + SDS (1.0)"]
    assert "70.0 ± 1.0" in lines["BiFormer"] and "reference" in lines["BiFormer"]
    assert "synthetic demo" in md and "3 seed(s)" in md


def test_paper_table_shows_a_dash_not_none():
    from bber_utils.study import report as study_report
    view = study_report.paper_table_view(design.paper_table(pd.DataFrame(
        [{"run": "r", "corpus": "meld", "split": s, "uar": .4, "war": .4, "mf1": .4, "wf1": .4, "mean": .4}
         for s in ("dev", "test")])))
    resd = view[view["corpus"] == "resd"]
    assert (resd["ours (test, %)"] == "–").all() and (resd["ours: best run by dev"] == "–").all()
    assert not view.isna().any().any()


def test_publish_only_from_the_default_workdir(tmp_path):
    assert study_readme.is_default_workdir(REPO_ROOT / "runs" / "demo", "demo")
    assert not study_readme.is_default_workdir(tmp_path, "demo")


def test_publish_leaves_unchanged_files_alone(tmp_path):
    (tmp_path / "README.md").write_text(f"{study_readme.BEGIN}\n{study_readme.END}\n", encoding="utf-8")
    src = _write(tmp_path / "08_study_table.md", "| t |\n")
    fig = tmp_path / "08_x.png"
    fig.write_bytes(b"png")
    out = study_readme.publish([src, fig], tmp_path)
    stamp = (out / "x.png").stat().st_mtime_ns
    study_readme.publish([src, fig], tmp_path)
    assert (out / "x.png").stat().st_mtime_ns == stamp and (out / "study_table.md").exists()
    assert study_readme.readme_block(tmp_path / "README.md") == "| t |"
