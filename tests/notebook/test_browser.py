"""Notebook 09 in a real browser: JupyterLab + headless Chromium (tools/browser_check.py) on the smoke run's folder:
Run All, the inference widget, and an exercise cell edited and run as a student would.

Skips with the reason when chromium or playwright is missing (``apt-get install -y chromium``; the ``dev`` extra
installs playwright)."""

from __future__ import annotations

import importlib.util

import pytest

from bber_utils.core.paths import REPO_ROOT

pytestmark = pytest.mark.notebook


def _tool():
    spec = importlib.util.spec_from_file_location("browser_check", REPO_ROOT / "tools" / "browser_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_notebook_09_widget_works_in_jupyterlab(smoke_run, tmp_path):
    tool = _tool()
    why = tool.missing_requirements()
    if why:
        pytest.skip(why)
    dirs, _ = smoke_run
    found = tool.check(dirs.root, "smoke", screenshot=tmp_path / "09.png")
    assert found["figure_rendered"], found
    assert found["figure_updated_after_edit"], found
    assert found["exercise_ran_edited"] and tool.EXERCISE_TRANSCRIPT in found["exercise_output"], found
    assert found["error_outputs"] == 0, found
    assert (tmp_path / "09.png").stat().st_size > 5000
