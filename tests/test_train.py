"""bber_utils.train: the two-stage trainer on a tiny synthetic work folder (fake feature stores)."""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bber_utils.train as T
from bber_utils.corpora.manifest import save_manifest
from bber_utils.labels import CLASSES

TINY = dict(hidden_dim=16, num_heads=2, num_layers=1, mamba_layers=1, mamba_d_state=4, mamba_d_conv=2,
            bimamba_layers=1, gated_dim=8, out_features=16, dropout=0.1, graph_heads=1)


class FakeStore(dict):
    """``store[utt_id] -> (T, D)`` with ``dim`` and ``path`` like a FeatureStore."""

    def __init__(self, data, dim, name):
        super().__init__(data)
        self.dim, self.path = dim, Path(f"/fake/{name}")


def _features(ids, labels, dim, seed, modality):
    """Class-dependent means, so that the task is learnable; each modality sees only part of the classes well."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1 if modality == "audio" else 2).standard_normal((7, dim)) * 1.5
    out = {}
    for u, y in zip(ids, labels):
        t = int(rng.integers(2, 9))
        out[u] = (centers[y] + rng.standard_normal((t, dim))).astype(np.float32)
    return out


def make_workdir(root: Path, corpora=("demo_en", "demo_ru"), per_class=(3, 1, 1)) -> Path:
    wd = root / "wd"
    for c in corpora:
        for split, n in zip(("train", "dev", "test"), per_class):
            rows = [{"utt_id": f"{c}-{split}-{k}_{i}", "corpus": c, "language": "en" if c.endswith("en") else "ru",
                     "split": split, "audio_path": "/nonexistent.wav", "start_s": 0.0, "end_s": np.nan,
                     "duration_s": 1.0, "text": "x", "label": lbl, "source": "original"}
                    for k, lbl in enumerate(CLASSES) for i in range(n)]
            save_manifest(pd.DataFrame(rows), wd / "manifests" / f"{c}_{split}.parquet")
    return wd


@pytest.fixture
def fake_features(monkeypatch):
    calls = []

    def build(tc, manifest):
        calls.append(len(manifest))
        ids = manifest["utt_id"].tolist()
        y = [CLASSES.index(lbl) for lbl in manifest["label"]]
        return (FakeStore(_features(ids, y, 6, 0, "audio"), 6, "audio"),
                FakeStore(_features(ids, y, 5, 1, "text"), 5, "text"))

    monkeypatch.setattr(T, "build_feature_stores", build)
    return calls


def _cfg(wd, **kw):
    base = dict(workdir=str(wd), seed=3, device="cpu", model="biformer", epochs=3, unimodal_epochs=2,
                batch_size=8, lr=3e-3, patience=5, warmup_ratio=0.1, progress=False, **TINY)
    base.update(kw)
    return base


def test_train_writes_the_run_folder(tmp_path, fake_features):
    import torch

    wd = make_workdir(tmp_path)
    res = T.train(_cfg(wd, run_name="r1"))
    assert res.run_dir == wd.resolve() / "train" / "r1"
    m = json.loads((res.run_dir / "metrics.json").read_text())
    for key in ("run", "model", "seed", "config", "git_commit", "wall_time_s", "best_epoch", "soft_labels",
                "metrics", "unimodal"):
        assert key in m
    assert m["run"] == "r1" and m["model"] == "biformer" and m["config"]["epochs"] == 3
    assert set(m["metrics"]) == {"demo_en", "demo_ru"}
    for corpus in ("demo_en", "demo_ru"):
        for split in ("dev", "test"):
            s = m["metrics"][corpus][split]
            assert {"uar", "war", "mf1", "wf1", "mean"} <= set(s)
            assert np.array(s["confusion"]).shape == (7, 7)
            assert np.array(s["confusion"]).sum() == 7  # every utterance of that corpus and split, no other
        assert set(m["unimodal"]["audio_only"][corpus]) == {"dev", "test"}
    assert m["soft_labels"] == {"used": 0, "missing": 0, "p": 0.0}
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
    r1 = T.train(_cfg(wd, epochs=1, run_name="a"))
    done = sorted((wd / "train" / "_unimodal").glob("*/done.json"))
    assert len(done) == 2
    stamps = [p.stat().st_mtime_ns for p in done]
    r2 = T.train(_cfg(wd, epochs=1, model="bigatedformer", run_name="b"))
    assert [p.stat().st_mtime_ns for p in done] == stamps
    assert r2.metrics["unimodal"] == r1.metrics["unimodal"]
    # a unimodal model as the chosen model reuses stage 1 as its run
    r3 = T.train(_cfg(wd, epochs=1, model="text_only"))
    assert r3.metrics["metrics"] == r1.metrics["unimodal"]["text_only"]
    assert r3.run_dir.name.startswith("text_only-s3-")
    ck = T.load_checkpoint(r3.run_dir / "best.pt")
    assert ck["model_name"] == "text_only" and ck["features"]["text_encoder"] == "e5-words"
    from bber_utils.models import build_model

    build_model(ck["model_name"], ck["model_config"], ck["d_audio"], ck["d_text"]).load_state_dict(ck["model"])
    # a change that matters for stage 1 gives a new cache entry
    T.train(_cfg(wd, epochs=1, unimodal_epochs=1, run_name="c"))
    assert len(list((wd / "train" / "_unimodal").glob("*/done.json"))) == 4


def test_resume_reaches_the_same_result(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    full = T.train(_cfg(wd, epochs=4, patience=10, run_name="full"))
    assert full.history["dev_mean"].nunique() > 1  # it really trains
    with pytest.raises(T.Interrupted, match="resume=True"):
        T.train(_cfg(wd, epochs=4, patience=10, run_name="cut", interrupt_after=2))
    assert T.load_checkpoint(wd / "train" / "cut" / "last.pt")["epoch"] == 1
    assert not (wd / "train" / "cut" / "metrics.json").exists()
    resumed = T.train(_cfg(wd, epochs=4, patience=10, run_name="cut", resume=True))
    assert resumed.metrics["metrics"] == full.metrics["metrics"]
    assert resumed.metrics["best_epoch"] == full.metrics["best_epoch"]
    pd.testing.assert_frame_equal(resumed.history.drop(columns="seconds"), full.history.drop(columns="seconds"))
    # a finished run is reused, and a different config under the same name is refused
    again = T.train(_cfg(wd, epochs=4, patience=10, run_name="cut"))
    assert again.metrics["metrics"] == full.metrics["metrics"]
    with pytest.raises(ValueError, match="another configuration"):
        T.train(_cfg(wd, epochs=4, patience=10, lr=1e-3, run_name="cut"))


def test_soft_labels_are_used_and_missing_ones_counted(tmp_path, fake_features, monkeypatch):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    train_ids = pd.read_parquet(wd / "manifests" / "demo_en_train.parquet")["utt_id"].tolist()
    probs = np.full((len(train_ids), 7), 1 / 7)
    soft = pd.DataFrame({"utt_id": train_ids, **{c: probs[:, i] for i, c in enumerate(CLASSES)}}).iloc[:20]
    monkeypatch.setattr(T, "load_soft_labels_for", lambda tc: soft if tc.ls_llm_p > 0 else None)
    res = T.train(_cfg(wd, epochs=1, ls_llm_p=0.5))
    assert res.metrics["soft_labels"] == {"used": 20, "missing": len(train_ids) - 20, "p": 0.5}


def test_missing_soft_label_table_is_a_clear_error(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    with pytest.raises(FileNotFoundError, match="ls_llm_p=0.3.*soft_labels.parquet"):
        T.train(_cfg(wd, ls_llm_p=0.3))


def test_fold_assignment_keeps_merged_rows_away_from_their_components():
    ids = [f"u{i}" for i in range(21)]
    df = pd.DataFrame({"utt_id": ids + ["m0", "m1"], "label": [CLASSES[i % 7] for i in range(21)] + ["sad", "fear"],
                       "components": [None] * 21 + [["u0", "u5"], "u2|u3"]})
    folds, exclude = T.fold_assignment(df, 3, seed=0)
    assert sorted(np.bincount(folds[:21]).tolist()) == [7, 7, 7]
    fold_of = dict(zip(ids, folds[:21]))
    assert folds[21] == fold_of["u0"] and exclude[21] == {fold_of["u0"], fold_of["u5"]}
    assert exclude[22] == {fold_of["u2"], fold_of["u3"]}
    for k in range(3):  # no model trains on a row it must predict
        trained = {i for i in range(len(df)) if k not in exclude[i]}
        assert not trained & set(np.flatnonzero(folds == k))


def test_withprob_gets_out_of_fold_train_logits(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    res = T.train(_cfg(wd, epochs=1, model="biformer_withprob", oof_folds=2))
    folder = Path(res.metrics["unimodal_folders"]["audio_only"])
    oof = pd.read_parquet(folder / "oof2.parquet")
    train_ids = pd.read_parquet(wd / "manifests" / "demo_en_train.parquet")["utt_id"]
    assert sorted(oof["utt_id"]) == sorted(train_ids)
    assert (folder / "fold0of2" / "best.pt").exists() and (folder / "fold1of2" / "best.pt").exists()
    full_logits = pd.read_parquet(folder / "logits.parquet")
    assert not set(full_logits["utt_id"]) & set(train_ids)  # the full model's logits: dev and test only


def test_errors_name_the_problem(tmp_path, fake_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        T.train(_cfg(wd, model="nope"))
    with pytest.raises(FileNotFoundError, match="train_corpora \\['meld'\\]"):
        T.train(_cfg(wd, train_corpora=["meld"]))
    with pytest.raises(ValueError, match="scheduler must be one of"):
        T.TrainConfig.from_dict({"scheduler": "step"})
    with pytest.raises(FileNotFoundError, match="run notebook 01"):
        T.train(_cfg(tmp_path / "empty"))


def test_cli_trains_with_overrides(tmp_path, fake_features, capsys):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    profile = tmp_path / "p.yaml"
    import yaml

    profile.write_text(yaml.safe_dump(_cfg(wd, epochs=1)))
    parser = argparse.ArgumentParser()
    T.register_cli(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", str(profile), "model=bimamba", "run_name=cli"])
    assert args.func(args) == 0
    assert json.loads((wd / "train" / "cli" / "metrics.json").read_text())["model"] == "bimamba"
    assert "bimamba" in capsys.readouterr().out
    args = parser.parse_args(["train", "--config", str(profile), "epoch=2"])
    with pytest.raises(ValueError, match="unknown parameter 'epoch'"):
        args.func(args)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster than two fighting over a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_train_on_real_feature_stores(tmp_path):
    """No fakes: log-mel and hashgram features extracted from wavs into <workdir>/features by train itself."""
    import soundfile as sf

    wd = make_workdir(tmp_path, corpora=("demo_en",), per_class=(2, 1, 1))
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for split in ("train", "dev", "test"):
        path = wd / "manifests" / f"demo_en_{split}.parquet"
        df = pd.read_parquet(path)
        for i, row in df.iterrows():
            y = CLASSES.index(row["label"])
            t = np.arange(int(16000 * 0.3)) / 16000
            wav = wavs / f"{row['utt_id']}.wav"
            sf.write(wav, (0.3 * np.sin(2 * np.pi * (150 + 60 * y) * t)).astype(np.float32), 16000)
            df.loc[i, "audio_path"] = str(wav)
            df.loc[i, "text"] = f"{row['label']} words {i}"
        save_manifest(df, path)
    res = T.train(_cfg(wd, epochs=1, unimodal_epochs=1, audio_encoder="logmel", text_encoder="hashgram",
                       text_max_tokens=8, audio_pool=2))
    assert sorted(p.name.split("-")[0] for p in (wd / "features").iterdir()) == ["audio", "text"]
    assert res.metrics["skipped"] == {"train": {}, "dev": {}, "test": {}}
    ck = T.load_checkpoint(res.run_dir / "best.pt")
    assert ck["d_audio"] == 80 and ck["features"]["text_encoder"] == "hashgram"
