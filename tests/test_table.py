"""The generic table reader (``bber prepare table``), text-only manifests end to end, and dialogue context."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bber_utils.corpora.table import map_table_label, parse_label_map, prepare_table, read_table
from bber_utils.labels import CLASSES


def _write(tmp_path, rows, name="t.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _wav(path, seconds=0.5):
    import soundfile as sf

    sf.write(str(path), np.zeros(int(16000 * seconds), np.float32), 16000)
    return path


def test_label_map_unmapped_counted_and_reported(tmp_path):
    rows = [{"text": f"line {i}", "label": lab, "split": "train"}
            for i, lab in enumerate(["Joy", "exc", "frustrated", "frustrated", "neutral", "xxx", "Angry"])]
    frames, skips, report = read_table(_write(tmp_path, rows), label_map="exc=happy,angry=anger")
    assert frames["train"]["label"].tolist() == ["happy", "happy", "neutral", "anger"]
    assert report.unmapped == {"frustrated": 2, "xxx": 1}
    assert len(skips) == 3 and skips["reason"].str.contains("unmapped label").all()
    assert report.skipped == 3 and report.kept["train"] == 4
    assert "frustrated" in report.summary()


def test_label_map_drop_and_bad_target():
    assert parse_label_map("exc=happy, fru=drop") == {"exc": "happy", "fru": "drop"}
    assert map_table_label("fru", parse_label_map("fru=drop")) is None
    assert map_table_label("NEUTRAL", {}) == "neutral"
    with pytest.raises(ValueError, match="one of"):
        parse_label_map("exc=excited")


def test_text_only_rows_and_missing_audio(tmp_path):
    _wav(tmp_path / "a.wav")
    rows = [
        {"text": "hello there", "audio_path": "", "label": "neutral", "split": "train"},   # text only: kept
        {"text": "", "audio_path": "a.wav", "label": "sad", "split": "train"},             # audio only: kept
        {"text": "where is it", "audio_path": "gone.wav", "label": "fear", "split": "dev"},  # missing: skipped
        {"text": "", "audio_path": "", "label": "anger", "split": "dev"},                   # nothing: skipped
    ]
    frames, skips, report = read_table(_write(tmp_path, rows))
    train = frames["train"]
    assert train["audio_path"].tolist()[0] == "" and np.isnan(train["duration_s"].iloc[0])
    assert train["audio_path"].iloc[1].endswith("a.wav") and train["duration_s"].iloc[1] == pytest.approx(0.5)
    assert report.text_only == 1 and len(frames["dev"]) == 0
    reasons = " | ".join(skips["reason"])
    assert "missing audio file" in reasons and "neither text nor audio" in reasons


def test_columns_split_aliases_and_errors(tmp_path):
    rows = [{"Utterance": "hi", "Emotion": "joy", "part": "validation", "Dialogue_ID": 3, "Utterance_ID": 1},
            {"Utterance": "ho", "Emotion": "joy", "part": "holdout", "Dialogue_ID": 3, "Utterance_ID": 2}]
    cols = {"text": "Utterance", "label": "Emotion", "split": "part", "dialogue_id": "Dialogue_ID",
            "utterance_id": "Utterance_ID"}
    frames, skips, _ = read_table(_write(tmp_path, rows), corpus="iemo", columns=cols)
    assert frames["dev"]["utt_id"].tolist() == ["iemo-dev-dia3_utt1"]
    assert "split 'holdout'" in skips["reason"].iloc[0]
    from bber_utils.corpora.text_clean import TableError

    with pytest.raises(TableError, match="no label column"):
        read_table(_write(tmp_path, [{"text": "x"}], "nolabel.csv"))
    with pytest.raises(TableError, match="text column"):
        read_table(_write(tmp_path, [{"label": "sad"}], "notext.csv"))


def test_no_split_column_keeps_dialogues_whole(tmp_path):
    rows = [{"text": f"u{d}-{u}", "label": "neutral", "dialogue_id": d, "utterance_id": u}
            for d in range(20) for u in range(3)]
    frames, _, _ = read_table(_write(tmp_path, rows), seed=1)
    where = {}
    for split, df in frames.items():
        for d in df["dialogue_id"]:
            where.setdefault(d, set()).add(split)
    assert all(len(s) == 1 for s in where.values()) and all(len(frames[s]) for s in ("train", "dev", "test"))


LABELS = st.sampled_from(["neutral", "joy", "Sadness", "ANGER", "surprise", "disgust", "fear", "fru", "", "?"])
ROW = st.fixed_dictionaries({"text": st.text(max_size=12), "label": LABELS,
                             "split": st.sampled_from(["train", "dev", "test", "val", "bogus"]),
                             "utterance_id": st.integers(0, 6)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=25))
def test_reader_rows_property(tmp_path, rows):
    """Every row is kept or skipped (never lost); kept rows are valid, unique, and unmapped labels add up."""
    path = tmp_path / "h.parquet"
    pd.DataFrame(rows).to_parquet(path)
    frames, skips, report = read_table(path, check_audio=False)
    kept = pd.concat(frames.values())
    assert len(kept) + len(skips) == len(rows) == report.rows
    assert kept["label"].isin(CLASSES).all() and not kept["utt_id"].duplicated().any()
    assert (kept["audio_path"] == "").all() and report.text_only == len(kept)
    unmapped_rows = sum(1 for r in rows if map_table_label(r["label"], {}) is None
                        and r["split"] in ("train", "dev", "test", "val"))
    assert sum(report.unmapped.values()) == unmapped_rows
    for split, df in frames.items():
        assert (df["split"] == split).all() and df["utt_id"].str.startswith(f"table-{split}-").all()


def test_prepare_table_cli(tmp_path, capsys):
    from bber_utils.cli import main

    rows = [{"text": f"t{i}", "label": lab, "split": sp} for i, (lab, sp) in
            enumerate([("joy", "train"), ("fru", "train"), ("sad", "dev"), ("fear", "test")])]
    csv = _write(tmp_path, rows)
    assert main(["prepare", "table", "--csv", str(csv), "--out", str(tmp_path / "w"), "--corpus", "mine"]) == 0
    out = capsys.readouterr().out
    assert "unmapped labels (skipped): 'fru': 1" in out and "skipped 1 utterance(s)" in out
    assert (tmp_path / "w" / "manifests" / "mine_train.parquet").exists()
    frames, report = prepare_table(csv, tmp_path / "w", corpus="mine", columns={}, label_map=None, language="en",
                                   dev_fraction=0.15, test_fraction=0.15, seed=42, limit=0)
    assert report is None  # same options: read back


# ------------------------------------------------------------------------------------ text-only end to end
def _dialogue_table(tmp_path, n_dia=6, n_utt=4):
    words = {"happy": "great wonderful", "sad": "sorry lost", "anger": "hate stupid", "neutral": "okay the"}
    labs = list(words)
    rows = []
    for d in range(n_dia):
        for u in range(n_utt):
            lab = labs[(d + u) % len(labs)]
            rows.append({"text": f"{words[lab]} {d} {u}", "label": lab, "dialogue_id": d, "utterance_id": u,
                         "split": "dev" if d == 4 else "test" if d == 5 else "train"})
    return _write(tmp_path, rows)


def test_text_only_end_to_end_without_audio(tmp_path):
    from bber_utils.features.extract import extract_all
    from bber_utils.train import train

    work = tmp_path / "w"
    prepare_table(_dialogue_table(tmp_path), work)
    ex = extract_all(work, text_spec="hashgram", progress=False)
    assert ex.audio is None and int(ex.summary["no_audio"].sum()) == 24
    common = dict(workdir=str(work), model="text_only", text_encoder="hashgram", epochs=2, unimodal_epochs=2,
                  hidden_dim=8, num_heads=2, mamba_layers=1, mamba_d_state=4, mamba_d_conv=2, out_features=8, batch_size=8,
                  device="cpu", progress=False, num_threads=1, oof_folds=2)
    res = train(common)
    assert set(res.metrics["unimodal"]) == {"text_only"}  # no audio stage trained
    assert not list((work / "features").glob("audio-*"))
    assert not list((work / "train" / "_unimodal").glob("audio-*"))
    assert "test" in res.metrics["metrics"]["table"]
    ctx = train({**common, "text_context": 2})
    assert ctx.run_dir != res.run_dir and "test" in ctx.metrics["metrics"]["table"]
    with pytest.raises(ValueError, match="needs audio"):
        train({**common, "model": "biformer"})


def test_predict_texts_from_text_only_checkpoint(tmp_path):
    from bber_utils.features.extract import extract_all
    from bber_utils.predict import predict_texts
    from bber_utils.train import train

    work = tmp_path / "w"
    prepare_table(_dialogue_table(tmp_path), work)
    extract_all(work, text_spec="hashgram", progress=False)
    res = train(dict(workdir=str(work), model="text_only", text_encoder="hashgram", epochs=1, unimodal_epochs=1,
                     hidden_dim=8, num_heads=2, mamba_layers=1, mamba_d_state=4, mamba_d_conv=2, out_features=8,
                     device="cpu", progress=False, num_threads=1, text_context=1))
    out = predict_texts(res.run_dir / "best.pt", ["great wonderful", "sorry lost"], contexts=[[], ["okay"]])
    assert len(out) == 2 and set(out.columns) >= {"text", "label", *CLASSES}
    assert np.allclose(out[list(CLASSES)].sum(axis=1), 1.0, atol=1e-4)


def test_e5_windows_steps_are_pooled_word_windows():
    from bber_utils.features.text_encoders import build_text_encoder, load_e5

    enc = build_text_encoder("e5-windows", max_tokens=95)
    x = enc.encode(["oh no you did not"])[0]
    assert x.shape == (6, 384)  # sentence + 5 windows
    want = np.asarray(load_e5().passage(["oh no you"])[0], np.float32)
    assert np.allclose(x[2], want, atol=1e-5) and enc.key["window"] == 3


def test_e5_sentence_vectors_cached_once_per_text_and_equal_to_fresh(monkeypatch):
    """Duplicate texts (frequent in MELD: "Okay.", "Yeah.") are embedded once; the cached vector is exact."""
    from bber_utils.features import text_encoders as te

    enc = te.build_text_encoder("e5-words")
    model = te.load_e5()
    texts = ["Okay.", "What a day!", "Okay."]
    fresh = [np.asarray(model.passage([t])[0], np.float32) for t in texts]
    te._E5_SENTENCES.clear()
    calls = []
    real = type(model).passage
    monkeypatch.setattr(type(model), "passage", lambda self, ts: calls.append(list(ts)) or real(self, ts))
    a = enc.encode(texts)
    b = te.build_text_encoder("e5-windows").encode(texts[::-1])[::-1]
    sentence_calls = [c for c in calls if set(c) & {"Okay.", "What a day!"}]
    assert sentence_calls == [["Okay.", "What a day!"]]  # each distinct text once, across both encoders
    for x, y, f in zip(a, b, fresh):
        assert np.array_equal(x[0], f) and np.array_equal(y[0], f)


def test_class_weight_power_scales_loss_weights_and_keeps_default_names(tmp_path, monkeypatch):
    """``class_weight_power`` p: loss weights = balanced ** p; p = 1 (default) keeps earlier run names."""
    import bber_utils.train as tr
    from bber_utils.data import class_weights
    from bber_utils.features.extract import extract_all

    work = tmp_path / "w"
    prepare_table(_dialogue_table(tmp_path), work)
    extract_all(work, text_spec="hashgram", progress=False)
    from bber_utils.train import loop

    seen, real_fit = [], loop.fit  # the stages call loop.fit through its module
    monkeypatch.setattr(loop, "fit", lambda *a, **kw: seen.append(np.asarray(kw["weights"])) or real_fit(*a, **kw))
    common = dict(workdir=str(work), model="text_only", text_encoder="hashgram", epochs=1, unimodal_epochs=1,
                  hidden_dim=8, num_heads=2, mamba_layers=1, mamba_d_state=4, mamba_d_conv=2, out_features=8,
                  batch_size=8, device="cpu", progress=False, num_threads=1)
    base = tr.train(common)
    half = tr.train({**common, "class_weight_power": 0.5})
    train_labels = pd.read_parquet(next((work / "manifests").rglob("*_train.parquet")))["label"]
    balanced = class_weights(np.array([CLASSES.index(x) for x in train_labels]))
    assert np.allclose(seen[0], balanced) and np.allclose(seen[-1], np.sqrt(balanced), atol=1e-6)
    assert half.run_dir != base.run_dir
    assert "class_weight_power" not in tr.TrainConfig.from_dict(common).identity()
    with pytest.raises(ValueError, match="class_weight_power"):
        tr.TrainConfig.from_dict({**common, "class_weight_power": -1})
