"""Each corpus on its own label set: training never predicts a class no training corpus has, and each corpus is
scored over its own classes (``corpora.corpus_classes``, ``train.inputs.LabelSpace``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bber_utils import train as T
from bber_utils.core.labels import CLASSES
from bber_utils.corpora import save_label_set
from bber_utils.corpora.manifest import save_manifest
from tests.train.common import make_workdir, tiny_config

OWN = ("neutral", "anger", "fear")


def _three_class_corpus(wd, corpus="pl", per_split=(6, 2, 2), train_classes=OWN, extra_test=()):
    for split, n in zip(("train", "dev", "test"), per_split):
        labels = [c for c in (train_classes if split == "train" else OWN) for _ in range(n)]
        labels += list(extra_test) if split == "test" else []
        rows = [{"utt_id": f"{corpus}-{split}-{i}", "corpus": corpus, "language": "pl", "split": split,
                 "audio_path": "/nonexistent.wav", "start_s": 0.0, "end_s": np.nan, "duration_s": 1.0,
                 "text": "tak", "label": lbl, "source": "original"} for i, lbl in enumerate(labels)]
        save_manifest(pd.DataFrame(rows), wd / "manifests" / f"{corpus}_{split}.parquet")
    save_label_set(wd, corpus, OWN)
    return wd


def _predicted(confusion) -> set[str]:
    cm = np.asarray(confusion)
    return {CLASSES[j] for j in np.flatnonzero(cm.sum(axis=0))}


def test_a_three_class_corpus_is_trained_and_scored_on_its_three_classes(tmp_path, fake_features):
    wd = _three_class_corpus(tmp_path / "wd")
    res = T.train(tiny_config(wd, model="biformer", epochs=2, run_name="r"))
    m = res.metrics
    assert m["classes"] == {"pl": list(OWN)}
    for part in (m["metrics"]["pl"], m["unimodal"]["audio_only"]["pl"], m["unimodal"]["text_only"]["pl"]):
        for split in ("dev", "test"):
            s = part[split]
            assert s["classes"] == list(OWN)
            assert _predicted(s["confusion"]) <= set(OWN)  # the other four classes are never predicted
            cm = np.asarray(s["confusion"])
            idx = [CLASSES.index(c) for c in OWN]
            recall = np.diag(cm)[idx] / cm.sum(axis=1)[idx]
            assert s["uar"] == pytest.approx(recall.mean())  # the average over the corpus's own classes
    best = T.load_checkpoint(res.run_dir / "best.pt")
    assert best["classes"] == list(OWN)


def test_corpora_with_different_label_sets_train_together_each_scored_on_its_own(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    _three_class_corpus(wd)
    res = T.train(tiny_config(wd, model="text_only", epochs=2, run_name="r"))
    m = res.metrics["metrics"]
    assert m["pl"]["test"]["classes"] == list(OWN)
    assert "classes" not in m["demo_en"]["test"]  # all seven classes: scored over the seven
    assert res.metrics["classes"] == {"demo_en": list(CLASSES), "pl": list(OWN)}


def test_a_scored_class_the_train_split_lacks_is_counted_and_reported(tmp_path, fake_features):
    wd = _three_class_corpus(tmp_path / "wd", train_classes=("neutral", "anger"))
    with pytest.warns(UserWarning, match=r"pl: its test split has 2 row\(s\) of classes its train split lacks"):
        res = T.train(tiny_config(wd, model="audio_only", epochs=1, unimodal_epochs=1, run_name="r"))
    assert res.metrics["unseen_classes"] == {"pl": {"dev": {"fear": 2}, "test": {"fear": 2}}}


def test_rows_whose_class_is_outside_their_corpus_label_set_are_skipped_and_counted(tmp_path, fake_features):
    wd = _three_class_corpus(tmp_path / "wd", extra_test=("happy", "happy", "sad"))
    res = T.train(tiny_config(wd, model="audio_only", epochs=1, unimodal_epochs=1, run_name="r"))
    assert res.metrics["skipped"]["test"] == {"class outside the corpus's label set": 3}
    assert np.asarray(res.metrics["metrics"]["pl"]["test"]["confusion"]).sum() == 6


def test_a_masked_class_gets_no_gradient_and_soft_targets_stay_on_the_label_set():
    import torch

    from bber_utils.train.dataset import EmotionDataset
    from bber_utils.train.loss import soft_cross_entropy

    logits = torch.zeros(2, 7, requires_grad=True)
    allowed = (0, 3, 6)
    target = torch.zeros(2, 7)
    target[0, 3] = target[1, 6] = 1.0
    soft_cross_entropy(logits, target, allowed=allowed).backward()
    assert torch.all(logits.grad[:, [1, 2, 4, 5]] == 0) and torch.any(logits.grad[:, list(allowed)] != 0)
    with pytest.raises(ValueError, match="masked class"):
        soft_cross_entropy(torch.zeros(1, 7), torch.tensor([[0.5, 0.5, 0, 0, 0, 0, 0]]), allowed=allowed)
    df = pd.DataFrame({"utt_id": ["a"], "corpus": ["pl"], "label": ["anger"]})
    soft = {"a": np.array([0.1, 0.4, 0.0, 0.3, 0.0, 0.0, 0.2], np.float32)}
    ds = EmotionDataset(df, None, None, soft_labels=soft, ls_llm_p=1.0, allowed=allowed, load_features=False)
    assert ds.target(0) == pytest.approx(np.array([1 / 6, 0, 0, 3 / 6, 0, 0, 2 / 6]))
    ds = EmotionDataset(df, None, None, label_smoothing=0.3, allowed=allowed, load_features=False)
    assert ds.target(0) == pytest.approx(np.array([0.1, 0, 0, 0.8, 0, 0, 0.1]))


def test_tug_on_a_language_without_templates_is_one_line(tmp_path, fake_features):
    from bber_utils.core.errors import ConfigError

    wd = _three_class_corpus(tmp_path / "wd")
    with pytest.raises(ConfigError) as err:
        T.train(tiny_config(wd, model="audio_only", tug_ratio=0.5, epochs=1, unimodal_epochs=1))
    assert "\n" not in str(err.value) and "TUG has no templates for language(s) pl" in str(err.value)
