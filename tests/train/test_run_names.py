"""One run name for one configuration: notebook 06's run (``train_corpora="all"``) is the run notebook 07 asks for
with the corpora listed, so 07 reuses it instead of training it again."""

from __future__ import annotations

import json

import pytest

from bber_utils.study import registry

from bber_utils.study import runner
from bber_utils.core.paths import run_dirs
from bber_utils.train import TrainConfig, default_run_name


@pytest.fixture()
def workdir(tmp_path):
    dirs = run_dirs(tmp_path)
    dirs.manifests.mkdir(parents=True, exist_ok=True)
    for corpus in ("demo_en", "demo_ru"):
        (dirs.manifests / f"{corpus}_train.parquet").touch()  # resolve_corpora only lists the names
    return tmp_path


def test_all_and_the_listed_corpora_give_one_name(workdir):
    named_all = default_run_name(TrainConfig(workdir=str(workdir), train_corpora="all", model="biformer"))
    listed = default_run_name(TrainConfig(workdir=str(workdir), train_corpora=["demo_en", "demo_ru"], model="biformer"))
    one = default_run_name(TrainConfig(workdir=str(workdir), train_corpora=["demo_en"], model="biformer"))
    assert named_all == listed != one
    assert registry.run_name_for({"model": "biformer", "train_corpora": ["demo_en", "demo_ru"]}, workdir) == named_all


def test_notebook_07_reuses_the_run_of_notebook_06(workdir, monkeypatch):
    """07's run_one with the corpora listed finds 06's finished run (trained with "all") and never executes."""
    params06 = {"model": "biformer", "seed": 42, "train_corpora": "all", "tug_ratio": 0.0}
    run06 = run_dirs(workdir).train / default_run_name(TrainConfig(workdir=str(workdir), **params06))
    run06.mkdir(parents=True)
    (run06 / "metrics.json").write_text(json.dumps({"run": run06.name, "metrics": {}}))
    monkeypatch.setattr("bber_utils.core.papermill.run_notebook",
                        lambda *a, **k: pytest.fail("notebook 07 trained notebook 06's run again"))
    assert runner.run_one({**params06, "train_corpora": ["demo_en", "demo_ru"]}, workdir) == run06
