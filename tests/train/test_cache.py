"""The trainer's caches against changed data and damaged files (issue 25).

A run reads its rows and their features; after re-preparing with fixed transcripts or clips the same config
must train again (a new stage-1 cache entry, stage 2 trained again in its folder), never report the old model.
With unchanged data the run names and cache folders stay those of earlier versions. A truncated cache file is
computed again with one warning line instead of failing every rerun.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bber_utils.train as T
from bber_utils.corpora.manifest import save_manifest
from bber_utils.core.labels import CLASSES
from bber_utils.train import inputs
from tests.train.common import FakeStore, features_for, make_workdir, real_workdir, tiny_config, tone_wav


# ----------------------------------------------------------------------------- real stores, real re-preparing


def _real_cfg(wd, **kw):
    return tiny_config(wd, epochs=2, unimodal_epochs=2, audio_encoder="logmel", text_encoder="hashgram", text_max_tokens=8,
                audio_pool=2, **kw)


def _encoder(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _assert_fusion_uses(run, modality: str) -> None:
    """The fusion model's (frozen) encoder of ``modality`` is the stage-1 model this run names."""
    import torch

    best = T.load_checkpoint(run.run_dir / "best.pt")["model"]
    uni = T.load_checkpoint(Path(run.metrics["unimodal_folders"][f"{modality}_only"]) / "full" / "best.pt")["model"]
    fused = _encoder(best, f"{modality}_encoder.")
    for k, v in _encoder(uni, "encoder.").items():
        assert torch.equal(fused[k], v), k


def test_changed_transcripts_train_again(tmp_path):
    wd = real_workdir(tmp_path)
    r1 = T.train(_real_cfg(wd))
    path = wd / "manifests" / "demo_en_train.parquet"
    df = pd.read_parquet(path)
    df["text"] = [f"fixed transcript {i} {lbl}" for i, lbl in enumerate(df["label"])]
    save_manifest(df, path)  # re-preparing with fixed transcripts: same ids, same labels, new texts
    with pytest.warns(UserWarning, match="the data changed since this model was trained"):
        r2 = T.train(_real_cfg(wd))
    f1, f2 = r1.metrics["unimodal_folders"], r2.metrics["unimodal_folders"]
    assert f2["text_only"] != f1["text_only"]  # a new stage-1 entry for the new texts
    assert f2["audio_only"] == f1["audio_only"]  # the audio did not change
    assert r2.run_dir == r1.run_dir  # the run keeps its name ...
    assert r2.metrics["data"] != r1.metrics["data"]  # ... and is trained again on the new data
    assert Path(f1["text_only"], "done.json").exists()  # the old entry stays, for the old data
    _assert_fusion_uses(r2, "text")
    # the same data again: nothing retrains, the same numbers
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        r3 = T.train(_real_cfg(wd))
    assert r3.metrics["metrics"] == r2.metrics["metrics"]
    assert r3.metrics["unimodal_folders"] == f2


def test_a_changed_clip_trains_the_audio_model_again(tmp_path):
    wd = real_workdir(tmp_path)
    r1 = T.train(_real_cfg(wd))
    df = pd.read_parquet(wd / "manifests" / "demo_en_train.parquet")
    tone_wav(Path(df["audio_path"].iloc[0]), 440.0, seconds=0.5)  # a fixed clip, same path and manifest row
    with pytest.warns(UserWarning, match="the data changed since this model was trained"):
        r2 = T.train(_real_cfg(wd))
    f1, f2 = r1.metrics["unimodal_folders"], r2.metrics["unimodal_folders"]
    assert f2["audio_only"] != f1["audio_only"] and f2["text_only"] == f1["text_only"]
    assert r2.metrics["data"] != r1.metrics["data"]
    _assert_fusion_uses(r2, "audio")


# --------------------------------------------------------------------------- fake stores whose features follow
@pytest.fixture
def text_features(monkeypatch):
    """Fake stores whose text features follow the manifest's text (and the audio's its audio_path), as a real
    store's do."""

    def build(tc, manifest):
        ids, y = manifest["utt_id"].tolist(), [CLASSES.index(lbl) for lbl in manifest["label"]]
        text = {u: features_for([f"{u}|{t}"], [k], 5, 1, "text")[f"{u}|{t}"]
                for u, t, k in zip(ids, manifest["text"], y)}
        audio = {u: features_for([f"{u}|{a}"], [k], 6, 0, "audio")[f"{u}|{a}"]
                 for u, a, k in zip(ids, manifest["audio_path"], y)}
        return FakeStore(audio, 6, "audio"), FakeStore(text, 5, "text")

    monkeypatch.setattr(inputs, "build_feature_stores", build)


def _retext(wd: Path, split: str = "train") -> None:
    path = wd / "manifests" / f"demo_en_{split}.parquet"
    df = pd.read_parquet(path)
    df["text"] = [f"new text {i}" for i in range(len(df))]
    save_manifest(df, path)


def test_unchanged_data_keeps_the_run_names_and_cache_folders_of_earlier_versions(tmp_path, monkeypatch):
    """Names computed by the code before data fingerprints existed (commit db3ac36): a run or a stage-1 cache
    written by it is found again, not trained a second time."""
    from tests.train.common import FakeStore as Store

    def build(tc, manifest):
        ids, y = manifest["utt_id"].tolist(), [CLASSES.index(lbl) for lbl in manifest["label"]]
        return Store(features_for(ids, y, 6, 0, "audio"), 6, "audio"), Store(features_for(ids, y, 5, 1, "text"), 5, "text")

    monkeypatch.setattr(inputs, "build_feature_stores", build)
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    train_ids = pd.read_parquet(wd / "manifests" / "demo_en_train.parquet")["utt_id"]
    soft = pd.DataFrame({"utt_id": train_ids, **{c: np.full(len(train_ids), 1 / 7) for c in CLASSES}})
    monkeypatch.setattr(inputs, "load_soft_labels_for", lambda tc: soft if tc.ls_llm_p > 0 else None)
    for kw, run, folders in (
        (dict(model="biformer_withprob", oof_folds=2), "biformer_withprob-s3-cd391a42",
         ["audio-9e5381d63b51", "text-a52ffa27d465"]),
        (dict(model="text_only", ls_llm_p=0.5), "text_only-ls0.5-s3-ed2fb98e",
         ["audio-96ed8afab545", "text-f5e38b54c224"]),
        (dict(model="biformer", label_smoothing=0.1), "biformer-s3-050131fc",
         ["audio-9e5381d63b51", "text-a52ffa27d465"]),
    ):
        res = T.train(tiny_config(wd, epochs=1, unimodal_epochs=1, **kw))
        assert res.run_dir.name == run
        assert sorted(Path(f).name for f in res.metrics["unimodal_folders"].values()) == folders
    assert (wd / "train" / "_unimodal" / "audio-9e5381d63b51" / "oof2.parquet").exists()


def test_an_interrupted_run_whose_data_changed_starts_over(tmp_path, text_features):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    with pytest.raises(T.Interrupted):
        T.train(tiny_config(wd, epochs=4, patience=10, run_name="cut", interrupt_after=2))
    _retext(wd)
    with pytest.warns(UserWarning, match="the data changed"):
        cut = T.train(tiny_config(wd, epochs=4, patience=10, run_name="cut"))
    fresh = T.train(tiny_config(wd, epochs=4, patience=10, run_name="fresh"))
    assert list(cut.history["epoch"]) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(cut.history.drop(columns="seconds"), fresh.history.drop(columns="seconds"))


def test_a_changed_test_split_scores_again(tmp_path, text_features):
    """Stage 1's cache holds its test logits and scores: a re-prepared test split is scored again."""
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    r1 = T.train(tiny_config(wd, epochs=1, model="text_only"))
    _retext(wd, "test")
    r2 = T.train(tiny_config(wd, epochs=1, model="text_only"))
    assert r2.metrics["unimodal_folders"] != r1.metrics["unimodal_folders"]
    fresh = T.train(tiny_config(tmp_path / "wd", epochs=1, model="text_only", run_name="again", resume=False))
    assert r2.metrics["metrics"] == fresh.metrics["metrics"]


# --------------------------------------------------------------------------------------- damaged cache files
@pytest.mark.parametrize("name", ["oof2.parquet", "logits.parquet", "done.json", "history.csv", "full/best.pt",
                                  "run:last.pt", "run:best.pt"])
def test_a_truncated_cache_file_is_computed_again(tmp_path, text_features, name):
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    cfg = tiny_config(wd, epochs=1, unimodal_epochs=1, model="biformer_withprob", oof_folds=2)
    r1 = T.train(cfg)
    if name.startswith("run:"):
        path = r1.run_dir / name.removeprefix("run:")
    else:
        path = Path(r1.metrics["unimodal_folders"]["text_only"]) / name
    path.write_bytes(path.read_bytes()[:10])  # a file cut short (a full disk, a copy that stopped)
    with pytest.warns(UserWarning, match="unreadable") as record:
        r2 = T.train(cfg)
    assert len([w for w in record if "unreadable" in str(w.message)]) == 1
    assert r2.metrics["metrics"] == r1.metrics["metrics"]
    T.train(cfg)  # and the file is whole again


def test_cache_files_are_written_atomically():
    """Every file under train/ goes through ``fileio.atomic_write`` (a killed job leaves the old file or the new
    one, never half of one): no plain ``to_parquet`` / ``to_csv`` / ``write_text`` / ``open(..., "w")``."""
    import re

    pkg = Path(T.__file__).parent
    for py in sorted(pkg.glob("*.py")):
        src = py.read_text(encoding="utf-8")
        for pattern in (r"\.to_parquet\(", r"\.to_csv\((?!tmp)", r"\.write_text\(", r"open\([^)]*['\"]w"):
            for m in re.finditer(pattern, src):
                line = src[: m.start()].count("\n") + 1
                context = src.splitlines()[line - 1]
                assert "tmp" in context, f"{py.name}:{line}: {context.strip()}"


def test_out_of_fold_logits_of_changed_augmented_rows_are_computed_again(tmp_path, text_features, monkeypatch):
    """Stage 1 trains on the original rows only (``sds_ratio`` > 0, fusion model), but the WithProb fusion needs
    out-of-fold logits for the synthetic rows too: when only those changed (a new TUG text), stage 1 is reused
    and the out-of-fold file is computed again, not read back from the old rows."""
    extra = {"text": "first synthetic text"}

    def build(tc, train_df):
        rows = [{**r, "utt_id": f"{r['utt_id']}-synthetic", "text": f"{extra['text']} {i}", "source": "tug"}
                for i, r in enumerate(train_df.to_dict("records"))]
        return pd.concat([train_df, pd.DataFrame(rows)], ignore_index=True) if tc.sds_ratio else train_df

    monkeypatch.setattr(inputs, "build_train_manifest", build)
    wd = make_workdir(tmp_path, corpora=("demo_en",))
    cfg = tiny_config(wd, epochs=1, unimodal_epochs=1, model="biformer_withprob", oof_folds=2, sds_ratio=0.5)
    r1 = T.train(cfg)
    folder = Path(r1.metrics["unimodal_folders"]["text_only"])
    (oof,) = folder.glob("oof2-*.parquet")
    before = pd.read_parquet(oof).set_index("utt_id")
    extra["text"] = "second synthetic text"
    with pytest.warns(UserWarning, match="made from other data"):
        r2 = T.train(cfg)
    assert r2.metrics["unimodal_folders"] == r1.metrics["unimodal_folders"]  # stage 1 itself is reused
    after = pd.read_parquet(oof).set_index("utt_id")
    synthetic = [u for u in before.index if u.endswith("-synthetic")]
    originals = [u for u in before.index if not u.endswith("-synthetic")]
    assert not np.allclose(after.loc[synthetic].to_numpy(), before.loc[synthetic].to_numpy())
    np.testing.assert_allclose(after.loc[originals].to_numpy(), before.loc[originals].to_numpy(), rtol=1e-5)


def test_a_study_trains_a_finished_run_again_when_its_data_changed(tmp_path, monkeypatch):
    """``run_one`` (``bber sweep``, notebook 07) reused any run with a ``metrics.json``: after re-preparing with fixed
    transcripts a sweep reported the old model. It now compares the run's data fingerprint with the data's."""
    from bber_utils.study import runner
    wd = real_workdir(tmp_path)
    trained = []

    def in_process(name, run_dir, cfg, nproc_per_node=1):
        trained.append(name)
        T.train(cfg)

    monkeypatch.setattr(runner, "_train_process", in_process)
    params = {k: v for k, v in _real_cfg(wd).items() if k != "workdir"}
    first = runner.run_one(params, wd)
    runner.run_one(params, wd)
    assert len(trained) == 1, "a finished run with unchanged data is reused"
    path = wd / "manifests" / "demo_en_train.parquet"
    df = pd.read_parquet(path)
    df["text"] = [f"fixed transcript {i} {lbl}" for i, lbl in enumerate(df["label"])]
    save_manifest(df, path)
    old = json.loads((first / "metrics.json").read_text())["data"]
    with pytest.warns(UserWarning, match="the data changed since it was trained"):
        again = runner.run_one(params, wd)
    assert again == first and len(trained) == 2
    assert json.loads((again / "metrics.json").read_text())["data"] != old
