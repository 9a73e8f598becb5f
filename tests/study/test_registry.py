"""The run registry: every metrics.json as one table, unreadable runs named, `bber results`' checks."""

from __future__ import annotations

import pytest
from bber_utils.study import registry as study_registry
from bber_utils.core.paths import run_dirs
# ------------------------------------------------------------------------------ sweep values (issue 25)
from bber_utils.study import registry
from tests.study.common import write_run


def _two_runs_one_corrupt(workdir):
    write_run(workdir, "good", {"model": "biformer", "seed": 1}, {("x", "dev"): .5, ("x", "test"): .4})
    for name, text in [("truncated", '{"run": "t", "metrics": {"x"'), ("a_list", "[1, 2]"),
                       ("bad_splits", '{"config": {}, "metrics": {"x": [0.5]}}')]:
        d = run_dirs(workdir).train / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(text)



def test_registry_is_tidy_and_skips_internal_stages(tmp_path):
    write_run(tmp_path, "a", {"model": "biformer", "seed": 1, "sds_ratio": 0.5, "train_corpora": ["x", "y"]},
               {("x", "dev"): .5, ("x", "test"): .4, ("y", "test"): .3})
    write_run(tmp_path, "_unimodal", {"model": "audio_only"}, {("x", "test"): .9})
    reg = study_registry.load_registry(tmp_path)
    assert len(reg) == 3 and set(reg["run"]) == {"a"}
    row = reg[(reg["corpus"] == "y") & (reg["split"] == "test")].iloc[0]
    assert row["wf1"] == pytest.approx(.3) and row["sds_ratio"] == 0.5 and row["train_corpora"] == "x,y"


def test_unreadable_metrics_are_reported_not_fatal(tmp_path):
    d = run_dirs(tmp_path).train / "broken"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken"):
        study_registry.load_registry(tmp_path)
    skipped = []
    assert study_registry.load_registry(tmp_path, skipped=skipped).empty and skipped[0][0].endswith("metrics.json")


def test_results_skip_a_corrupt_metrics_json_and_name_it(tmp_path, capsys):
    """One truncated metrics.json used to hide every run behind a traceback."""
    from bber_utils import cli

    _two_runs_one_corrupt(tmp_path)
    rc = cli.main(["results", "--workdir", str(tmp_path), "--by", "model"])
    out, err = capsys.readouterr()
    assert rc == 0 and "biformer" in out, err
    assert err.count("\n") == 1 and "skipped 2 unreadable metrics.json" in err, err
    assert "truncated" in err and "a_list" in err and "Traceback" not in err
    assert "bad_splits" not in err  # an odd split entry is ignored, the file's other rows are read


def test_results_on_a_missing_workdir_create_nothing(tmp_path, capsys):
    from bber_utils import cli

    missing = tmp_path / "no" / "such"
    for argv in (["results"], ["results", "--env", "a", "b"]):
        rc = cli.main([*argv, "--workdir", str(missing)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and f"no such work folder {missing}" in err, err
    assert not (tmp_path / "no").exists()
    (tmp_path / "empty").mkdir()
    assert cli.main(["results", "--workdir", str(tmp_path / "empty")]) == 1
    assert list((tmp_path / "empty").iterdir()) == []  # no train/ made by a reader


@pytest.mark.parametrize("argv, needles", [
    (["--split", "tset"], ["unknown --split 'tset'", "did you mean 'test'", "'dev'"]),
    (["--by", "nosuchcol"], ["unknown --by column 'nosuchcol'", "'model'", "'sds_ratio'"]),
    (["--by", "model", "tug_ration"], ["'tug_ration'", "did you mean 'tug_ratio'"]),
])
def test_results_refuse_an_unknown_split_or_column(tmp_path, capsys, argv, needles):
    """``--split tset`` printed an empty table and ``--by nosuchcol`` was a KeyError traceback."""
    from bber_utils import cli

    write_run(tmp_path, "good", {"model": "biformer", "seed": 1}, {("x", "dev"): .5, ("x", "test"): .4})
    rc = cli.main(["results", "--workdir", str(tmp_path), *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err and out == "", err
    for n in needles:
        assert n in err, err


def test_older_augmented_fusion_run_is_not_pooled_with_the_new_protocol():
    """A run from before augment_unimodal (its metrics.json config has no such key) trained stage 1 on the
    augmented rows: its setting must not equal the new default's (stage 1 on the originals), or study_table pools
    the two and keeps either one of a seed's runs."""
    from bber_utils.train import TrainConfig

    old = {"model": "biformer", "sds_ratio": 0.5}
    new = TrainConfig.from_dict(old).identity()
    assert "augment_unimodal" in new and new["augment_unimodal"] is False
    assert registry.run_settings(old) != registry.run_settings(new)
    assert registry.run_settings(old) == registry.run_settings({**new, "augment_unimodal": True})
    # where the key changes nothing, old and new runs stay one setting
    for cfg in ({"model": "biformer"}, {"model": "audio_only", "sds_ratio": 0.5}):
        assert registry.run_settings(cfg) == registry.run_settings(TrainConfig.from_dict(cfg).identity())


def test_best_run_is_chosen_on_dev_averaged_over_corpora_never_on_test(tmp_path):
    """Notebook 08 reports it and notebook 09 predicts with it: the best dev mean over the corpora, whatever test
    says (run "b" is best on test and on one corpus's dev, "a" on the average of dev)."""
    write_run(tmp_path, "a", {"model": "biformer", "seed": 1},
              {("x", "dev"): .8, ("y", "dev"): .6, ("x", "test"): .1, ("y", "test"): .1})
    write_run(tmp_path, "b", {"model": "biformer", "seed": 2},
              {("x", "dev"): .9, ("y", "dev"): .4, ("x", "test"): .9, ("y", "test"): .9})
    registry = study_registry.load_registry(tmp_path)
    assert study_registry.best_run(registry) == "a"
    assert study_registry.best_run(registry, split="test") == "b"
    assert study_registry.best_run(study_registry.load_registry(tmp_path / "none")) is None
