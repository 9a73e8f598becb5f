"""bber_utils.train: the two-stage trainer on a tiny synthetic work folder (fake feature stores)."""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bber_utils.train as T
from bber_utils.train import crossfit, inputs, loop
from bber_utils.corpora.manifest import save_manifest
from bber_utils.core.labels import CLASSES
from tests.train.common import FakeStore, features_for, make_workdir, real_workdir, tiny_config



def test_train_writes_the_run_folder(tmp_path, fake_features):
    import torch

    wd = make_workdir(tmp_path)
    res = T.train(tiny_config(wd, run_name="r1"))
    assert res.run_dir == wd.resolve() / "train" / "r1"
    m = json.loads((res.run_dir / "metrics.json").read_text())
    for key in ("run", "model", "seed", "config", "git_commit", "wall_time_s", "best_epoch", "soft_labels",
                "metrics", "unimodal"):
        assert key in m
    assert m["run"] == "r1" and m["model"] == "biformer" and m["config"]["epochs"] == 3
    assert set(m["phases"]) == {"inputs_s", "stage1_s", "stage2_s"} and min(m["phases"].values()) > 0
    assert sum(m["phases"].values()) <= m["wall_time_s"] + 1e-6
    assert set(m["metrics"]) == {"demo_en", "demo_ru"}
    for corpus in ("demo_en", "demo_ru"):
        for split in ("dev", "test"):
            s = m["metrics"][corpus][split]
            assert {"uar", "war", "mf1", "wf1", "mean"} <= set(s)
            assert np.array(s["confusion"]).shape == (7, 7)
            assert np.array(s["confusion"]).sum() == 7  # every utterance of that corpus and split, no other
        assert set(m["unimodal"]["audio_only"][corpus]) == {"dev", "test"}
    assert m["soft_labels"] == {"used": 0, "missing": 0, "stale": 0, "p": 0.0}
    assert len(m["data"]) == 16  # the fingerprint of what the run read
    hist = pd.read_csv(res.run_dir / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2]
    assert {"train_loss", "dev_mean", "lr", "dev_demo_en_uar", "dev_demo_ru_mean"} <= set(hist.columns)
    assert 0 <= m["best_epoch"] <= 2
    assert hist.loc[m["best_epoch"], "dev_mean"] == pytest.approx(hist["dev_mean"].max())
    best = T.load_checkpoint(res.run_dir / "best.pt")
    last = T.load_checkpoint(res.run_dir / "last.pt")
    assert best["epoch"] == m["best_epoch"] and last["epoch"] == 2 and last["finished"]
    assert all(v.device.type == "cpu" for v in best["model"].values())
    assert json.loads((res.run_dir / "config.json").read_text())["model"] == "biformer"
    # the checkpoint rebuilds the model
    from bber_utils.models import build_model

    model = build_model(best["model_name"], best["model_config"], best["d_audio"], best["d_text"])
    model.load_state_dict(best["model"])
    # frozen encoders: the fusion model's encoders are exactly the stage-1 unimodal models
    uni = T.load_checkpoint(Path(m["unimodal_folders"]["audio_only"]) / "full" / "best.pt")["model"]
    for k, v in uni.items():
        assert torch.equal(best["model"]["audio_encoder." + k.removeprefix("encoder.")], v)
    table = res.table()
    assert set(table["model"]) == {"biformer", "audio_only", "text_only"}
    assert len(table) == 3 * 2 * 2


def test_unimodal_stage_is_cached_and_reused(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    r1 = T.train(tiny_config(wd, epochs=1, run_name="a"))
    done = sorted((wd / "train" / "_unimodal").glob("*/done.json"))
    assert len(done) == 2
    stamps = [p.stat().st_mtime_ns for p in done]
    r2 = T.train(tiny_config(wd, epochs=1, model="bigatedformer", run_name="b"))
    assert [p.stat().st_mtime_ns for p in done] == stamps
    assert r2.metrics["unimodal"] == r1.metrics["unimodal"]
    # a unimodal model as the chosen model reuses stage 1 as its run
    r3 = T.train(tiny_config(wd, epochs=1, model="text_only"))
    assert r3.metrics["metrics"] == r1.metrics["unimodal"]["text_only"]
    assert r3.run_dir.name.startswith("text_only-s3-")
    ck = T.load_checkpoint(r3.run_dir / "best.pt")
    assert ck["model_name"] == "text_only" and ck["features"]["text_encoder"] == "e5-words"
    from bber_utils.models import build_model

    build_model(ck["model_name"], ck["model_config"], ck["d_audio"], ck["d_text"]).load_state_dict(ck["model"])
    # a change that matters for stage 1 gives a new cache entry
    T.train(tiny_config(wd, epochs=1, unimodal_epochs=1, run_name="c"))
    assert len(list((wd / "train" / "_unimodal").glob("*/done.json"))) == 4


def test_resume_reaches_the_same_result(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    full = T.train(tiny_config(wd, epochs=4, patience=10, run_name="full"))
    assert full.history["dev_mean"].nunique() > 1  # it really trains
    with pytest.raises(T.Interrupted, match="resume=True"):
        T.train(tiny_config(wd, epochs=4, patience=10, run_name="cut", interrupt_after=2))
    assert T.load_checkpoint(wd / "train" / "cut" / "last.pt")["epoch"] == 1
    assert not (wd / "train" / "cut" / "metrics.json").exists()
    resumed = T.train(tiny_config(wd, epochs=4, patience=10, run_name="cut", resume=True))
    assert resumed.metrics["metrics"] == full.metrics["metrics"]
    assert resumed.metrics["best_epoch"] == full.metrics["best_epoch"]
    pd.testing.assert_frame_equal(resumed.history.drop(columns="seconds"), full.history.drop(columns="seconds"))
    # a finished run is reused, and a different config under the same name is refused
    again = T.train(tiny_config(wd, epochs=4, patience=10, run_name="cut"))
    assert again.metrics["metrics"] == full.metrics["metrics"]
    with pytest.raises(ValueError, match="another configuration"):
        T.train(tiny_config(wd, epochs=4, patience=10, lr=1e-3, run_name="cut"))


def test_soft_labels_are_used_and_missing_ones_counted(tmp_path, fake_features, monkeypatch):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    train_ids = pd.read_parquet(wd / "manifests" / "demo_en_train.parquet")["utt_id"].tolist()
    probs = np.full((len(train_ids), 7), 1 / 7)
    soft = pd.DataFrame({"utt_id": train_ids, **{c: probs[:, i] for i, c in enumerate(CLASSES)}}).iloc[:20]
    monkeypatch.setattr(inputs, "load_soft_labels_for", lambda tc: soft if tc.ls_llm_p > 0 else None)
    res = T.train(tiny_config(wd, epochs=1, ls_llm_p=0.5))
    assert res.metrics["soft_labels"] == {"used": 20, "missing": len(train_ids) - 20, "stale": 0, "p": 0.5}


@pytest.mark.parametrize("with_label_column", [True, False])
def test_soft_labels_made_for_another_label_are_dropped_and_counted(tmp_path, fake_features, monkeypatch,
                                                                    with_label_column):
    """Issue 25: after re-preparing with another label map, a row labelled anger was trained on a soft target
    made for happy. The table's ``label`` column (or, without one, its top class: a valid LS-LLM target puts its
    highest value on the true label) is compared with the manifest's; a mismatch falls back to one-hot."""
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    train = pd.read_parquet(wd / "manifests" / "demo_en_train.parquet")
    made_for = train["label"].tolist()
    stale = int(np.flatnonzero(train["label"] == "anger")[0])
    made_for[stale] = "happy"  # the label the table was made for, before the label map changed
    probs = np.full((len(train), 7), 0.05)
    probs[np.arange(len(train)), [CLASSES.index(lbl) for lbl in made_for]] = 0.7
    soft = pd.DataFrame({"utt_id": train["utt_id"], **{c: probs[:, i] for i, c in enumerate(CLASSES)}})
    if with_label_column:
        soft["label"] = made_for
    monkeypatch.setattr(inputs, "load_soft_labels_for", lambda tc: soft if tc.ls_llm_p > 0 else None)
    seen = []
    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", lambda model, train_ds, *a, **k: seen.append(train_ds) or real_fit(
        model, train_ds, *a, **k))
    with pytest.warns(UserWarning, match="1 of .* soft labels were made for another label"):
        res = T.train(tiny_config(wd, model="text_only", epochs=1, unimodal_epochs=1, ls_llm_p=1.0))
    assert res.metrics["soft_labels"] == {"used": len(train) - 1, "missing": 1, "stale": 1, "p": 1.0}
    ds = seen[0]
    i = ds.utt_ids.index(train["utt_id"][stale])
    np.testing.assert_array_equal(ds.target(i), np.eye(7, dtype=np.float32)[CLASSES.index("anger")])


def test_missing_soft_label_table_is_a_clear_error(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    with pytest.raises(FileNotFoundError, match="ls_llm_p=0.3.*soft_labels.parquet"):
        T.train(tiny_config(wd, ls_llm_p=0.3))


def _atoms(row_id, comps):
    """The utterances whose audio or text a row contains: itself and its SDS components."""
    return {row_id, *crossfit._components(comps)}


def test_fold_assignment_keeps_merged_rows_away_from_their_components():
    ids = [f"u{i}" for i in range(21)]
    df = pd.DataFrame({"utt_id": ids + ["m0", "m1", "m2"],
                       "label": [CLASSES[i % 7] for i in range(21)] + ["neutral", "neutral", "sad"],
                       "components": [None] * 21 + [["u0", "u7"], "u7|u14", "u2;u9"]})
    folds = crossfit.fold_assignment(df, 3, seed=0)
    fold = dict(zip(df["utt_id"], folds))
    # transitively: m0 = u0 + u7 and m1 = u7 + u14 tie u0, u7, u14, m0, m1 together
    assert len({fold[u] for u in ("u0", "u7", "u14", "m0", "m1")}) == 1
    assert fold["u2"] == fold["u9"] == fold["m2"]
    assert set(folds.tolist()) == {0, 1, 2}
    for k in range(3):  # no fold model trains on any part of a row it predicts
        trained = df[crossfit.fold_training_rows(df, folds, k)]
        seen = set().union(*(_atoms(u, c) for u, c in zip(trained["utt_id"], trained["components"])))
        for u, c in zip(df["utt_id"][folds == k], df["components"][folds == k]):
            assert not _atoms(u, c) & seen, (k, u)


def _add_sds_rows(monkeypatch, always=True):
    """Stand-in for SDS: merged rows of two same-label train utterances, chained so that groups span rows
    (whatever ``sds_ratio`` says, unless ``always=False``)."""
    def build(tc, train_df):
        if not always and not tc.sds_ratio:
            return train_df
        rows = []
        for (corpus, label), part in train_df.groupby(["corpus", "label"]):
            ids = part["utt_id"].tolist()
            for j in range(len(ids) - 1):
                rows.append({**part.iloc[j].to_dict(), "utt_id": f"{corpus}-sds-{label}-{j}",
                             "source": "sds", "components": [ids[j], ids[j + 1]]})
        return pd.concat([train_df, pd.DataFrame(rows)], ignore_index=True)

    monkeypatch.setattr(inputs, "build_train_manifest", build)


def test_augmentations_train_the_fusion_on_a_shared_unaugmented_stage_1(tmp_path, fake_features, monkeypatch):
    """An augmented fusion run reuses the stage 1 of the unaugmented run of its seed (trained on the original
    rows, one-hot), while its fusion stage trains on the augmented rows; ``augment_unimodal=True`` and a
    unimodal chosen model train stage 1 on the augmented rows."""
    _add_sds_rows(monkeypatch, always=False)
    stage1_rows = {}
    real_fit = loop.fit

    def fit(model, train_ds, *a, desc="", **kw):
        stage1_rows.setdefault(desc, []).append(set(train_ds.utt_ids))
        return real_fit(model, train_ds, *a, desc=desc, **kw)

    monkeypatch.setattr(loop, "fit", fit)
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    originals = set(pd.read_parquet(wd / "manifests" / "demo_en_train.parquet")["utt_id"])
    base = T.train(tiny_config(wd, epochs=1))
    aug = T.train(tiny_config(wd, epochs=1, sds_ratio=1.0, label_smoothing=0.1))
    assert aug.metrics["unimodal_folders"] == base.metrics["unimodal_folders"]
    assert len(stage1_rows["audio-only"]) == 1  # stage 1 trained once, on the originals
    assert stage1_rows["audio-only"][0] == originals
    assert stage1_rows["biformer"][1] > originals  # the fusion stage saw the SDS rows
    both = T.train(tiny_config(wd, epochs=1, sds_ratio=1.0, label_smoothing=0.1, augment_unimodal=True))
    assert both.metrics["unimodal_folders"]["audio_only"] != base.metrics["unimodal_folders"]["audio_only"]
    assert stage1_rows["audio-only"][1] > originals
    assert both.run_dir.name != aug.run_dir.name
    text = T.train(tiny_config(wd, epochs=1, model="text_only", sds_ratio=1.0))
    assert text.metrics["unimodal_folders"]["text_only"] != base.metrics["unimodal_folders"]["text_only"]
    # the key changes no run name where it changes nothing
    tc = T.TrainConfig.from_dict(tiny_config(wd))
    assert "augment_unimodal" not in tc.identity()
    assert T.default_run_name(tc) == T.default_run_name(T.TrainConfig.from_dict(tiny_config(wd, augment_unimodal=True)))


@pytest.mark.parametrize("augmented", [False, True], ids=["stage1-on-sds-rows", "stage1-on-originals"])
def test_out_of_fold_models_never_saw_any_part_of_a_row_they_predict(tmp_path, fake_features, monkeypatch,
                                                                      augmented):
    """Through the trainer, on a manifest with SDS rows: for every held-out row, neither it nor any of its
    components is in (or part of a row in) the training data of the fold model that predicts it. Also when
    stage 1 trains on the original rows only (an augmented fusion run): its folds cover stage 2's rows."""
    _add_sds_rows(monkeypatch)
    trained, held = {}, {}
    real_fit, real_predict = loop.fit, loop.predict

    def fit(model, train_ds, *a, desc="", **kw):
        if " fold " in desc:
            trained[desc] = train_ds.manifest
        return real_fit(model, train_ds, *a, desc=desc, **kw)

    def predict(model, dataset, *a, **kw):
        if " held " in dataset.name:
            held[dataset.name] = dataset.manifest
        return real_predict(model, dataset, *a, **kw)

    monkeypatch.setattr(loop, "fit", fit)
    monkeypatch.setattr(loop, "predict", predict)
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    T.train(tiny_config(wd, epochs=1, unimodal_epochs=1, model="predictions_fusion", oof_folds=3,
                 sds_ratio=1.0 if augmented else 0.0))
    assert len(trained) == len(held) == 6  # 3 folds x 2 modalities
    if augmented:
        assert not any("-sds-" in u for rows in trained.values() for u in rows["utt_id"])
    n_sds_held = 0
    for name, rows in held.items():
        modality, k = name.split(" held ")
        train_rows = trained[f"{modality}-only fold {int(k) + 1}/3"]
        seen = set().union(*(_atoms(u, c) for u, c in zip(train_rows["utt_id"], train_rows["components"])))
        for u, c in zip(rows["utt_id"], rows["components"]):
            n_sds_held += bool(crossfit._components(c))
            assert not _atoms(u, c) & seen, f"{name}: {u} shares {_atoms(u, c) & seen} with its fold model"
    assert n_sds_held == 2 * 14  # every merged row was predicted, by both modalities


def test_withprob_gets_out_of_fold_train_logits(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    res = T.train(tiny_config(wd, epochs=1, model="biformer_withprob", oof_folds=2))
    folder = Path(res.metrics["unimodal_folders"]["audio_only"])
    oof = pd.read_parquet(folder / "oof2.parquet")
    train_ids = pd.read_parquet(wd / "manifests" / "demo_en_train.parquet")["utt_id"]
    assert sorted(oof["utt_id"]) == sorted(train_ids)
    assert (folder / "fold0of2" / "best.pt").exists() and (folder / "fold1of2" / "best.pt").exists()
    full_logits = pd.read_parquet(folder / "logits.parquet")
    assert not set(full_logits["utt_id"]) & set(train_ids)  # the full model's logits: dev and test only


def test_withprob_fuses_the_fold_models_logits_on_train(tmp_path, fake_features, monkeypatch):
    """The logits that the WithProb fusion actually mixes on train (the cached ``encoded`` inputs of ``fuse``)
    are the fold models' predictions for their held-out rows, not the full unimodal model's in-sample ones."""
    import torch

    from bber_utils.train.dataset import EmotionDataset
    from bber_utils.models import build_model

    stores, stage2 = [], {}
    real_build, real_fit = inputs.build_feature_stores, loop.fit
    monkeypatch.setattr(inputs, "build_feature_stores", lambda tc, m: stores.append(real_build(tc, m)) or stores[-1])

    def fit(model, train_ds, *a, desc="", **kw):
        if desc == "biformer_withprob":
            stage2["train"] = train_ds
        return real_fit(model, train_ds, *a, desc=desc, **kw)

    monkeypatch.setattr(loop, "fit", fit)
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    res = T.train(tiny_config(wd, epochs=1, model="biformer_withprob", oof_folds=2))
    train_ds = stage2["train"]
    used = {m: {u: enc[f"{m}_logits"].numpy() for u, enc in zip(train_ds.utt_ids, train_ds.encoded)}
            for m in ("audio", "text")}
    train_df = train_ds.manifest
    folds = crossfit.fold_assignment(train_df, 2, 3)
    for m, store in zip(("audio", "text"), stores[0]):
        folder = Path(res.metrics["unimodal_folders"][f"{m}_only"])
        sets = (store, None) if m == "audio" else (None, store)

        def logits_of(ckpt, rows):
            ck = T.load_checkpoint(ckpt)
            model = build_model(ck["model_name"], ck["model_config"], ck["d_audio"], ck["d_text"])
            model.load_state_dict(ck["model"])
            ds = EmotionDataset(rows.reset_index(drop=True), *sets)
            return dict(zip(ds.utt_ids, loop.predict(model, ds, loop.forward_batch, torch.device("cpu"))))

        full = logits_of(folder / "full" / "best.pt", train_df)
        for k in (0, 1):
            fold_logits = logits_of(folder / f"fold{k}of2" / "best.pt", train_df[folds == k])
            assert fold_logits
            for u, lg in fold_logits.items():
                np.testing.assert_allclose(used[m][u], lg, rtol=1e-5, atol=1e-6, err_msg=f"{m} {u}")
                assert not np.allclose(used[m][u], full[u], atol=1e-4), f"{m} {u}: the full model's logits"


def test_training_learns_from_the_soft_label_distribution(tmp_path, fake_features, monkeypatch):
    """LS-LLM through the trainer: every train row's target puts 0.6 on its label and 0.4 on a fixed partner
    class. A run that learns from the distribution gives the partner far more probability than the other wrong
    classes; a trainer that collapses the targets to their argmax between batch and loss does not."""
    import torch

    from bber_utils.train.dataset import EmotionDataset
    from bber_utils.models import build_model

    stores = []
    real_build = inputs.build_feature_stores
    monkeypatch.setattr(inputs, "build_feature_stores", lambda tc, m: stores.append(real_build(tc, m)) or stores[-1])
    wd = make_workdir(tmp_path, corpora=("demo_en",), per_class=(4, 2, 1))
    train_df = pd.read_parquet(wd / "manifests" / "demo_en_train.parquet")
    y = np.array([CLASSES.index(lbl) for lbl in train_df["label"]])
    partner = (y + 1) % 7
    probs = np.zeros((len(y), 7))
    probs[np.arange(len(y)), y], probs[np.arange(len(y)), partner] = 0.6, 0.4
    soft = pd.DataFrame({"utt_id": train_df["utt_id"], **{c: probs[:, i] for i, c in enumerate(CLASSES)}})
    monkeypatch.setattr(inputs, "load_soft_labels_for", lambda tc: soft if tc.ls_llm_p > 0 else None)
    res = T.train(tiny_config(wd, model="text_only", ls_llm_p=1.0, epochs=30, unimodal_epochs=30, patience=30,
                       lr=1e-2, dropout=0.0, warmup_ratio=0.0, scheduler="none"))
    assert res.metrics["soft_labels"]["used"] == len(y)
    ck = T.load_checkpoint(res.run_dir / "last.pt")
    best = T.load_checkpoint(res.run_dir / "best.pt")
    model = build_model(best["model_name"], best["model_config"], best["d_audio"], best["d_text"])
    model.load_state_dict(ck["model"])
    ds = EmotionDataset(train_df, None, stores[0][1])
    p = torch.softmax(torch.as_tensor(loop.predict(model, ds, loop.forward_batch, torch.device("cpu"))), -1).numpy()
    rows = np.arange(len(y))
    p_partner = p[rows, partner].mean()
    others = np.ones_like(p, dtype=bool)
    others[rows, y] = others[rows, partner] = False
    p_other = p[others].reshape(len(y), 5).mean()
    assert p_partner > 0.2 and p_partner > 5 * p_other, (p_partner, p_other)


def test_adamw_does_not_decay_ssm_norm_and_bias_parameters(tmp_path, fake_features, monkeypatch):
    """Every optimiser the trainer builds: Mamba's A_log and D, norm scales, biases (and the logit mixer) sit
    in the group without weight decay; weight matrices in the decayed one."""
    import torch

    made, models = [], []
    real_adamw, real_fit = torch.optim.AdamW, loop.fit

    class SpyAdamW(real_adamw):
        def __init__(self, params, *a, **kw):
            super().__init__(params, *a, **kw)
            made.append(self)

    def fit(model, *a, **kw):
        models.append(model)
        return real_fit(model, *a, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)
    monkeypatch.setattr(loop, "fit", fit)
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    T.train(tiny_config(wd, epochs=1, unimodal_epochs=1, model="bimamba_withprob", oof_folds=2, weight_decay=0.05))
    assert len(made) == len(models) == 2 + 2 * 2 + 1  # unimodal x2, folds x2 x2, fusion
    for opt, model in zip(made, models):
        decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert len(decay) == len(names)
        for n, p in model.named_parameters():
            if not p.requires_grad:
                continue
            leaf = n.split(".")[-1]
            no_decay = (leaf in ("A_log", "D", "bias") or "norm" in n or n.endswith("mix.weight")
                        or p.dim() < 2)
            assert decay[id(p)] == (0.0 if no_decay else 0.05), n
        assert any(n.endswith("A_log") for n in names) and any(n.endswith(".D") for n in names)


def test_errors_name_the_problem(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        T.train(tiny_config(wd, model="nope"))
    with pytest.raises(FileNotFoundError, match="train_corpora \\['meld'\\]"):
        T.train(tiny_config(wd, train_corpora=["meld"]))
    with pytest.raises(ValueError, match="unknown scheduler .step.; choose one of"):
        T.TrainConfig.from_dict({"scheduler": "step"})
    with pytest.raises(FileNotFoundError, match="run notebook 01"):
        T.train(tiny_config(tmp_path / "empty"))


def test_cli_trains_with_overrides(tmp_path, fake_features, capsys):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    profile = tmp_path / "p.yaml"
    import yaml

    profile.write_text(yaml.safe_dump(tiny_config(wd, epochs=1)))
    parser = argparse.ArgumentParser()
    T.register_cli(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", str(profile), "model=bimamba", "run_name=cli"])
    assert args.func(args) == 0
    assert json.loads((wd / "train" / "cli" / "metrics.json").read_text())["model"] == "bimamba"
    assert "bimamba" in capsys.readouterr().out
    args = parser.parse_args(["train", "--config", str(profile), "epoch=2"])
    with pytest.raises(ValueError, match="unknown parameter 'epoch'"):
        args.func(args)



def test_train_on_real_feature_stores(tmp_path):
    """No fakes: log-mel and hashgram features extracted from wavs into <workdir>/features by train itself."""
    wd = real_workdir(tmp_path)
    res = T.train(tiny_config(wd, epochs=1, unimodal_epochs=1, audio_encoder="logmel", text_encoder="hashgram",
                       text_max_tokens=8, audio_pool=2))
    assert sorted(p.name.split("-")[0] for p in (wd / "features").iterdir()) == ["audio", "text"]
    assert res.metrics["skipped"] == {"train": {}, "dev": {}, "test": {}}
    ck = T.load_checkpoint(res.run_dir / "best.pt")
    assert ck["d_audio"] == 80 and ck["features"]["text_encoder"] == "hashgram"


def test_with_dialogue_context_a_dialogue_is_never_split_across_folds(tmp_path, fake_features, monkeypatch):
    """With ``text_context`` a row's text is read as context by its dialogue's later turns, so a fold model
    trained on those turns would have read the held-out row's text: the folds keep each dialogue together."""
    wd = make_workdir(tmp_path, corpora=("demo_en",), per_class=(6, 1, 1))
    path = wd / "manifests" / "demo_en_train.parquet"
    df = pd.read_parquet(path)
    df["dialogue_id"] = [str(i // 6) for i in range(len(df))]  # dialogues of 6 turns across classes
    df["utterance_id"] = [i % 6 for i in range(len(df))]
    save_manifest(df, path)
    seen = {}
    real = crossfit.fold_assignment

    def spy(train_df, k, seed, links=None):
        folds = real(train_df, k, seed, links)
        seen["folds"] = dict(zip(train_df["utt_id"], folds))
        return folds

    monkeypatch.setattr(crossfit, "fold_assignment", spy)
    T.train(tiny_config(wd, epochs=1, unimodal_epochs=1, model="predictions_fusion", oof_folds=3, text_context=2))
    dialogue = dict(zip(df["utt_id"], df["dialogue_id"]))
    per_dialogue = {}
    for u, f in seen["folds"].items():
        per_dialogue.setdefault(dialogue[u], set()).add(int(f))
    assert len(per_dialogue) == 7 and all(len(f) == 1 for f in per_dialogue.values()), per_dialogue
    assert len({f for fs in per_dialogue.values() for f in fs}) == 3  # and every fold is used


def test_a_train_split_without_features_is_one_clear_error(tmp_path, monkeypatch):
    """Every train row skipped (no features): one line naming the skip reasons, not a crash inside training."""
    from bber_utils.core.errors import ConfigError

    def build(tc, manifest):
        keep = manifest[~manifest["utt_id"].str.contains("-train-")]
        ids, y = keep["utt_id"].tolist(), [CLASSES.index(lbl) for lbl in keep["label"]]
        return (FakeStore(features_for(ids, y, 6, 0, "audio"), 6, "audio"),
                FakeStore(features_for(ids, y, 5, 1, "text"), 5, "text"))

    monkeypatch.setattr(inputs, "build_feature_stores", build)
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    with pytest.raises(ConfigError, match=r"no train row has features \(skipped: \{'no audio features': 21\}\)"):
        T.train(tiny_config(wd, epochs=1))


def test_train_in_a_read_only_workdir_says_so_in_one_line(tmp_path, capsys, read_only):
    """A read-only work folder ended in an OSError traceback (the feature store's lock, then the run folder)."""
    from bber_utils import cli

    wd = make_workdir(tmp_path)
    before = read_only.snapshot(wd)
    read_only(wd)
    rc = cli.main(["train", "--config", "smoke", f"workdir={wd}", "epochs=1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot write to {wd / 'train'}: read-only (Permission denied); training writes" in err
    assert read_only.snapshot(wd) == before


def test_progress_bars_end_at_the_epoch_early_stopping_ended_the_run(tmp_path, fake_features, capsys, monkeypatch):
    """A run stopped by early stopping closes its bar at 100 % of the epochs it ran (not "60% 18/30")."""
    from tqdm.std import tqdm

    monkeypatch.setattr(loop, "tqdm", tqdm)  # the text bar, as `bber reproduce` gives its kernels
    wd = make_workdir(tmp_path)
    res = T.train(tiny_config(wd, epochs=12, unimodal_epochs=12, patience=1, lr=1e-6, progress=True))
    assert len(res.history) < 12  # early stopping ended stage 2
    finals = [frame.strip() for frame in capsys.readouterr().err.split("\r") if "early stop" in frame]
    assert finals, "no bar says it stopped early"
    for frame in finals:
        assert "100%" in frame and "early stop at epoch" in frame, frame
