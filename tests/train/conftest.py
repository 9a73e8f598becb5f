"""Fixtures of the trainer tests: fake feature stores, one torch thread."""

from __future__ import annotations

import pytest

from bber_utils.core.labels import CLASSES
from bber_utils.train import inputs
from tests.train.common import FakeStore, features_for


@pytest.fixture
def fake_features(monkeypatch):
    calls = []

    def build(tc, manifest):
        calls.append(len(manifest))
        ids = manifest["utt_id"].tolist()
        y = [CLASSES.index(lbl) for lbl in manifest["label"]]
        return (FakeStore(features_for(ids, y, 6, 0, "audio"), 6, "audio"),
                FakeStore(features_for(ids, y, 5, 1, "text"), 5, "text"))

    monkeypatch.setattr(inputs, "build_feature_stores", build)
    return calls


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster than two fighting over a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
