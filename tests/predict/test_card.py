"""The model card is written from what the trainer really writes (a tiny ``train.train`` run on fake features):
model and size, training corpora and rows, scores per corpus and split, provenance, citation, use and limits; a
demo-trained model says so first."""

from __future__ import annotations

import json
import re

import pytest

from bber_utils import train
from bber_utils.core.labels import CLASSES
from bber_utils.predict import card, export
from bber_utils.train import inputs
from tests.train.common import FakeStore, features_for, make_workdir, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run folder of the trainer (metrics.json, best.pt) on the demo corpora, and its export."""
    import torch

    def stores(tc, manifest):
        ids = manifest["utt_id"].tolist()
        y = [CLASSES.index(lbl) for lbl in manifest["label"]]
        return (FakeStore(features_for(ids, y, 6, 0, "audio"), 6, "audio"),
                FakeStore(features_for(ids, y, 5, 1, "text"), 5, "text"))

    mp = pytest.MonkeyPatch()
    mp.setattr(inputs, "build_feature_stores", stores)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("card")
        result = train.train(tiny_config(make_workdir(root), epochs=1, unimodal_epochs=1, text_encoder="hashgram"))
    finally:
        torch.set_num_threads(threads)
        mp.undo()
    return result.run_dir, export.export_model(result.run_dir, root / "model")


def _body(readme: str) -> list[str]:
    """The card's lines after its YAML front matter."""
    assert readme.startswith("---\n")
    return readme.split("\n---\n", 1)[1].lstrip("\n").splitlines()


def test_a_demo_model_says_so_in_its_first_line(trained):
    body = _body((trained[1] / "README.md").read_text())
    assert body[0].startswith("**Trained on the synthetic demo corpus only") and "do not use it on real" in body[0]


def test_the_card_holds_size_data_scores_provenance_citation_and_limits(trained):
    run, folder = trained
    metrics = json.loads((run / "metrics.json").read_text())
    text = (folder / "README.md").read_text()
    assert re.search(r"- \d{1,3}(,\d{3})* parameters \([\d,]+ in the encoders, [\d,]+ in the fusion\)", text)
    for key, n in metrics["n_train"].items():
        corpus, source = key.split("/")
        assert f"| {corpus} | {source} | {n} |" in text
    for corpus, per_split in metrics["metrics"].items():
        for split in ("dev", "test"):
            s = per_split[split]
            row = f"| biformer | {corpus} | {split} | " + " | ".join(f"{100 * s[m]:.1f}" for m in card.METRICS)
            assert row in text
    assert f"bber commit `{metrics['git_commit']}`" in text and metrics["environment"]["packages"]["torch"] in text
    assert f"Run `{metrics['run']}`, seed {metrics['seed']}" in text
    assert "## Citation" in text and "A Novel Data Augmentation Method" in text
    assert "## Intended use and limits" in text and "Not for decisions about people" in text
    assert "library_name: bber" in text and "license: mit" in text  # the Hub's metadata


def test_a_model_of_real_corpora_names_them_first():
    config = {"model_name": "bigraphformer", "model_config": {"hidden_dim": 8}, "features": {},
              "encoders": {"audio": {"name": "logmel"}, "text": {"name": "e5-words"}}, "d_audio": 80, "d_text": 384,
              "labels": list(CLASSES), "source": {}}
    text = card.model_card(config, {"corpora": ["meld", "resd"], "metrics": {}}, {"total": 3, "encoders": 2,
                                                                                 "fusion": 1})
    assert text.splitlines()[0] == "**Trained on meld, resd; scores below.**"
    assert "demo corpus" not in text and "graph-attention fusion" in text
    assert card.model_card(config, None, {"total": 3, "encoders": 2, "fusion": 1}).startswith("**No metrics.json")
