"""Notebook 06's walkthrough (shapes, metrics, convergence) and the ratio explorer widget."""

from __future__ import annotations

import math
import pandas as pd
import pytest


def test_walkthrough_traces_shapes_and_metrics():
    from bber_utils.notebook import walkthrough
    from bber_utils.models import build_model

    model = build_model("bigraphformer", {"hidden_dim": 16, "num_heads": 2, "num_layers": 1, "mamba_layers": 1,
                                          "out_features": 8}, 10, 12)
    trace = walkthrough.shape_trace(model, walkthrough.example_batch(10, 12))
    out = dict(zip(trace["module"], trace["output"]))
    assert out["(model)"] == "(2, 7)" and out["cross"] == "(2, 48, 16), (2, 11, 16)" and "graph" in out
    m = walkthrough.metrics_example()
    bal, imb = m.iloc[0], m.iloc[1]
    assert bal["uar"] == bal["war"] and bal["mf1"] == bal["wf1"]
    assert imb["war"] > imb["uar"] + 30  # MELD's gap: WAR/WF1 high, UAR low
    ex = walkthrough.validator_examples()
    assert {"ok", "repaired", "rejected"} <= set(ex["status"])
    assert set(walkthrough.FUSION_GLOSSARY) >= {"biformer", "bigraphformer", "bimamba", "predictions_fusion"}


def test_ratio_explorer_shows_the_mix_and_follows_the_slider():
    pytest.importorskip("ipywidgets")
    from bber_utils.notebook import widgets

    seen = []
    box = widgets.ratio_explorer(lambda r: seen.append(r) or pd.DataFrame({"rows": [round(100 * r)]}), 0.5)
    slider = box.children[0]
    slider.value = 0.8
    assert seen == [0.5, 0.8] and not math.isnan(slider.value)


def test_convergence_table_says_whether_early_stopping_or_the_cap_ended_a_run():
    import pandas as pd

    from bber_utils.notebook import walkthrough

    rising = pd.DataFrame({"epoch": range(10), "dev_mean": [0.1 * i for i in range(10)]})
    flat = pd.DataFrame({"epoch": range(8), "dev_mean": [0.1, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]})
    table = walkthrough.convergence_table({"rising": rising, "flat": flat}, {"rising": 10, "flat": 10})
    assert table.loc["rising", "ended by"] == "the epoch cap"
    assert table.loc["flat", "ended by"] == "early stopping (cap 10)"
    gain = table["gain in the last 5 epochs"]
    assert gain["rising"] > 0.4 and gain["flat"] == 0
    assert "ended by" not in walkthrough.convergence_table({"flat": flat}).columns
