"""The progress bars: a loop ended early (early stopping) closes its bar at its real end."""

from __future__ import annotations

import io

import pytest

from bber_utils.core.progress import finish_early


def test_a_text_bar_stopped_early_ends_at_100_percent():
    from tqdm.std import tqdm

    out = io.StringIO()
    bar = tqdm(total=30, desc="biformer", file=out, ascii=True)
    bar.update(18)
    finish_early(bar, "biformer (early stop at epoch 18 of 30)")
    bar.close()
    last = out.getvalue().split("\r")[-1]
    assert "100%" in last and "18/18" in last and "early stop at epoch 18 of 30" in last, last


def test_a_widget_bar_stopped_early_is_full_and_green():
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm

    bar = tqdm(total=30, desc="audio_only")
    bar.update(40 - 22)
    finish_early(bar)
    bar.close()
    _, widget, _ = bar.container.children
    assert (widget.value, widget.max) == (18, 18) and widget.bar_style == "success"


def test_a_disabled_bar_is_left_alone():
    from tqdm.std import tqdm

    bar = tqdm(total=30, disable=True)
    finish_early(bar, "x")
    assert bar.total == 30
