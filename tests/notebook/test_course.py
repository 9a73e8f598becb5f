"""The notebooks as a course, read from their stored JSON (nothing executed): each ends with a recap, exercises whose
answers sit in a collapsed cell, the "where we differ" notes after the method and a link to the next notebook; the
exercise cells are skipped by papermill; the figures come from ``plots`` with the "synthetic demo" tag; no takeaway
is typed with a number in it; every test a notebook cites exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from bber_utils.core.paths import REPO_ROOT
from bber_utils.notebook import course, plots
from bber_utils.notebook.pipeline import list_notebooks

NOTEBOOKS = list_notebooks()


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


def _heading(cells, heading) -> int:
    hits = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and _text(c).startswith(heading)]
    assert len(hits) == 1, f"{heading!r}: {len(hits)} cells"
    return hits[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_ends_as_a_lesson(path):
    cells = _cells(path)
    recap, exercises, nxt = (_heading(cells, h) for h in ("## Recap", "## Exercises", "## Where to go next"))
    assert recap < exercises < nxt == len(cells) - 1, "recap, exercises, ..., where to go next (last)"
    assert len(re.findall(r"(?m)^\d\. \*\*", _text(cells[exercises]))) >= 2, "two or three exercises"
    answers = [c for c in cells if _text(c).startswith("### Answers and hints")]
    assert len(answers) == 1 and answers[0]["metadata"].get("jupyter", {}).get("source_hidden") is True
    if path != NOTEBOOKS[-1]:
        following = NOTEBOOKS[NOTEBOOKS.index(path) + 1].name
        assert f"]({following})" in _text(cells[nxt]), f"no link to {following}"
    differ = [i for i, c in enumerate(cells) if "where we differ from the reference" in _text(c).lower()]
    assert all(i > exercises for i in differ), "the method's text comes first; the differences at the end"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_cells_are_not_run_by_papermill(path):
    """`make reproduce` keeps its time: a cell tagged skip-execution is skipped by nbclient (papermill's engine)."""
    from nbclient import NotebookClient

    skip = NotebookClient.skip_cells_with_tag.default_value
    exercise = [c for c in _cells(path) if "exercise" in c.get("metadata", {}).get("tags", [])]
    assert all(skip in c["metadata"]["tags"] and c["cell_type"] == "code" for c in exercise)
    assert all(_text(c).startswith("# Exercise") for c in exercise)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_come_from_the_package_and_say_synthetic_demo(path):
    """No inline matplotlib (issue 26: 01-05 drew 145 lines of it); every figure call passes the notebook's tag,
    except the architecture figure, which shows no data."""
    code = "\n".join(_text(c) for c in _cells(path) if c["cell_type"] == "code")
    assert "matplotlib" not in code and "plt." not in code, path.name
    calls = re.findall(r"plots\.(\w+)\(", code)
    for name in calls:
        assert callable(getattr(plots, name)), name
    for match in re.finditer(r"plots\.(\w+)\((.*?)(?:save_to=[^)]*\)|\)\n)", code, re.S):
        name, args = match.group(1), match.group(0)
        if name not in ("architecture", "synthetic_tag"):
            assert "tag" in args, f"{path.name}: plots.{name}(...) without the tag"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_typed_takeaway_states_a_number(path):
    """A takeaway with a number in it is computed (``notebook.takeaways``), not typed next to an output it may
    contradict."""
    for c in _cells(path):
        if c["cell_type"] == "markdown" and "*Takeaway" in _text(c):
            # names and the rule's own constants are not data
            said = re.sub(r"notebook \d\d|95 %|clears 0|3 test clips", "", _text(c).split("*Takeaway", 1)[1])
            assert not re.search(r"\d", said), _text(c)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_cited_test_exists(path):
    cited = re.compile(r"`(tests/[\w./-]+\.py)(?:::(\w+))?")
    for c in _cells(path):
        for file, test in cited.findall(_text(c)):
            target = REPO_ROOT / file
            assert target.exists(), f"{path.name} cites {file}"
            if test:
                assert re.search(rf"(?m)^def {test}\(", target.read_text(encoding="utf-8")), f"{file}::{test}"


def test_course_setup_shows_tables_whole_and_returns_the_tag(tmp_path):
    tag = course.setup(tmp_path)
    assert tag == "" and pd.get_option("display.max_colwidth") is None
    assert pd.get_option("display.max_rows") >= 62  # 06's old config table had 62 rows
    cut = pd.DataFrame({"what it does": ["x" * 200]}).to_string()
    assert "..." not in cut and "x" * 200 in cut
