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


# ------------------------------------------------------------------------------ the whole model, on real rows
SIZES = {"hidden_dim": 16, "num_heads": 2, "num_layers": 2, "mamba_layers": 1, "out_features": 8, "gated_dim": 8,
         "graph_heads": 1}


def _model(name="biformer", **over):
    import torch

    from bber_utils.models import build_model

    torch.manual_seed(0)
    return build_model(name, {**SIZES, **over}, 10, 12).eval()


def test_real_batch_is_what_the_trainer_reads_with_audio_pool(tmp_path, monkeypatch):
    from bber_utils.core.labels import CLASSES
    from bber_utils.notebook import walkthrough
    from bber_utils.train import inputs
    from tests.train.common import FakeStore, features_for, make_workdir

    wd = make_workdir(tmp_path)

    def stores(tc, manifest):
        ids, y = manifest["utt_id"].tolist(), [CLASSES.index(v) for v in manifest["label"]]
        return (FakeStore(features_for(ids, y, 6, 0, "audio"), 6, "a"),
                FakeStore(features_for(ids, y, 5, 1, "t"), 5, "t"))

    monkeypatch.setattr(inputs, "build_feature_stores", stores)
    batch, rows = walkthrough.real_batch({"workdir": str(wd), "audio_pool": 3})
    assert list(rows["corpus"]) == ["demo_en", "demo_ru"]  # one test utterance per corpus
    audio, text = stores(None, rows)
    for b, u in enumerate(rows["utt_id"]):
        frames = len(audio[u])
        assert rows.loc[b, "audio frames"] == frames and rows.loc[b, "audio steps"] == -(-frames // 3)
        assert int(batch["audio_mask"][b].sum()) == -(-frames // 3) and int(batch["text_mask"][b].sum()) == len(text[u])
    table = walkthrough.audio_steps(rows, 3)
    assert (table["seconds per step"] == 0.06).all() and (table["seconds"] == table["audio frames"] * 0.02).all()


def test_variants_share_the_trained_encoders_and_show_their_graph_and_gate():
    import torch

    from bber_utils.notebook import walkthrough

    trained = _model("biformer")
    graph = walkthrough.variant("bigraphformer", trained)
    assert walkthrough.variant("biformer", trained) is trained
    for k, v in trained.audio_encoder.state_dict().items():
        assert torch.equal(graph.audio_encoder.state_dict()[k], v)
    nodes, edges = walkthrough.graph_nodes(graph), walkthrough.graph_edges(graph)
    assert list(nodes["modality"]) == ["audio", "text"]
    assert sorted(zip(edges["from"], edges["to"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    segmented = walkthrough.variant("bigraphformer", _model("biformer", graph_segments=2))
    nodes, edges = walkthrough.graph_nodes(segmented), walkthrough.graph_edges(segmented)
    assert len(nodes) == 6 and (edges["edge"] == "audio ↔ text").sum() == 18
    assert (edges["edge"] == "self-loop").sum() == 6
    trace = walkthrough.shape_trace(graph, walkthrough.example_batch(10, 12))
    assert "graph" in set(trace["module"])

    gated = walkthrough.variant("bigatedformer", trained)
    batch = walkthrough.example_batch(10, 12)
    z = walkthrough.gate_values(gated, batch, index=1)
    with torch.no_grad():
        a, t = gated.summaries(gated.encode(batch))
        expected = torch.sigmoid(gated.gate.gate_proj(torch.cat([a, t], dim=-1)))[1]
    assert z.shape == (SIZES["gated_dim"],) and torch.allclose(torch.as_tensor(z), expected)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("layer", [0, 1])
def test_cross_attention_map_is_the_attention_the_model_computes(norm_first, layer):
    """The map equals the weights of the attention call the forward pass makes (captured by a hook), on the real
    frames and words of the utterance only, and each audio step's row sums to 1."""
    import torch

    from bber_utils.notebook import walkthrough

    model = _model("biformer", norm_first=norm_first)
    batch = walkthrough.example_batch(10, 12)
    seen = []
    attn = model.cross.layers[layer].audio_from_text.attn
    hook = attn.register_forward_pre_hook(lambda mod, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    with torch.no_grad():
        model(batch)
    hook.remove()
    (q, k, v), kwargs = seen[0]
    _, expected = attn(q, k, v, key_padding_mask=kwargs["key_padding_mask"], need_weights=True)
    weights = walkthrough.cross_attention(model, batch, index=1, layer=layer)
    assert weights.shape == (30, 6)  # utterance 1: 30 real audio steps, 6 real text steps
    assert torch.allclose(torch.as_tensor(weights), expected[1, :30, :6], atol=1e-6)
    assert weights.sum(axis=1) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="no layer 5"):
        walkthrough.cross_attention(model, batch, layer=5)


def test_text_step_labels_name_the_words():
    from bber_utils.notebook import walkthrough

    assert walkthrough.text_step_labels("Oh no!!", 4) == ["(sentence)", "oh", "no", "!!"]
    assert walkthrough.text_step_labels("Oh no", 2, "hashgram") == ["oh", "no"]
    assert walkthrough.text_step_labels("Oh no", 5, "some/model") == [f"step {i}" for i in range(5)]


def test_scan_code_and_optimiser_table_come_from_the_code():
    from bber_utils.notebook import walkthrough

    md = walkthrough.scan_code()
    assert "def _sequential_steps" in md and "torch.exp(delta" in md and "runs `fused`" in md
    model = _model("biformer").train()
    model.freeze_encoders(True)
    table = walkthrough.optimiser_table(model, {"lr": 0.002, "weight_decay": 0.01, "epochs": 30, "patience": 12})
    said = " ".join(table.iloc[:, 0])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    decayed, rest = (int(x.replace(",", "")) for x in
                     (said.split(" on ")[1].split(" ")[0], said.split("; 0 on ")[1].split(" ")[0]))
    assert decayed + rest == trainable and "AdamW" in said and "learning rate 0.002" in said
    assert "stop after 12" in said


def test_pooled_pca_projects_each_modality():
    import numpy as np

    from bber_utils.core.labels import CLASSES
    from bber_utils.notebook import walkthrough

    class Store(dict):
        key = {"name": "fake"}

        def mean_pooled(self, ids):
            return np.stack([self[u] for u in ids])

    rng = np.random.default_rng(0)
    sample = pd.DataFrame({"utt_id": [f"u{i}" for i in range(14)], "label": list(CLASSES) * 2,
                           "language": ["en"] * 7 + ["ru"] * 7})
    store = Store({u: rng.standard_normal(5) for u in sample["utt_id"]})
    coords = walkthrough.pooled_pca({"audio": store, "text": store}, sample)
    assert list(coords["modality"].value_counts()) == [14, 14]
    assert (coords["pc1_share"] >= coords["pc2_share"]).all() and coords["encoder"].eq("fake").all()


def test_right_and_wrong_stops_once_it_has_one_of_each():
    from bber_utils.core.labels import CLASSES
    from bber_utils.notebook import walkthrough
    from bber_utils.predict.predictor import Prediction

    calls = []

    class Predictor:
        def predict(self, paths, texts, contexts=None):
            calls.append(list(paths))
            out = []
            for p in paths:
                label = "anger" if p == "c5.wav" else "sad"
                out.append(Prediction(path=p, label=label, fused=[float(c == label) for c in CLASSES]))
            return out

    clips = pd.DataFrame({"audio_path": [f"c{i}.wav" for i in range(20)], "text": "t", "label": "sad"})
    pair, checked = walkthrough.right_and_wrong(Predictor(), clips, chunk=4)
    assert len(calls) == 2 and len(checked) == 8  # c5 (wrong) is in the second chunk
    assert list(pair["path"]) == ["c0.wav", "c5.wav"] and list(pair["true label"]) == ["sad", "sad"]
