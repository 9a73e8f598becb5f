"""The generic table reader (``bber prepare table``), text-only manifests end to end, and dialogue context."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bber_utils.corpora.table import SPLIT_ALIASES, map_table_label, parse_label_map, prepare_table, read_table
from bber_utils.corpora.text_clean import repair_text
from bber_utils.core.labels import CLASSES


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
        {"text": "fine", "audio_path": "", "label": "neutral", "split": "dev"},            # text only: kept
    ]
    frames, skips, report = read_table(_write(tmp_path, rows))
    train = frames["train"]
    assert train["audio_path"].tolist()[0] == "" and np.isnan(train["duration_s"].iloc[0])
    assert train["audio_path"].iloc[1].endswith("a.wav") and train["duration_s"].iloc[1] == pytest.approx(0.5)
    assert report.text_only == 2 and frames["dev"]["text"].tolist() == ["fine"]
    reasons = " | ".join(skips["reason"])
    assert "missing audio file" in reasons and "neither text nor audio" in reasons


def test_columns_split_aliases_and_errors(tmp_path):
    rows = [{"Utterance": "hi", "Emotion": "joy", "part": "validation", "Dialogue_ID": 3, "Utterance_ID": 1},
            {"Utterance": "ho", "Emotion": "joy", "part": "holdout", "Dialogue_ID": 3, "Utterance_ID": 2},
            {"Utterance": "he", "Emotion": "sad", "part": "Train", "Dialogue_ID": 4, "Utterance_ID": 1}]
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
    from bber_utils.corpora.text_clean import TableError

    path = tmp_path / "h.parquet"
    pd.DataFrame(rows).to_parquet(path)
    try:
        frames, skips, report = read_table(path, check_audio=False)
    except TableError as err:  # only for a split left empty, whose rows (if any) were all skipped
        sp = str(err).split("the ")[-1].split(" split is empty")[0] if "split is empty" in str(err) else None
        assert sp in ("train", "dev", "test") or "no usable row" in str(err), err
        usable = [r for r in rows if repair_text(r["text"]) and map_table_label(r["label"], {}) is not None
                  and SPLIT_ALIASES.get(r["split"]) == sp]
        assert sp is None or not usable or any(  # a duplicate id is the only other skip
            sum(u["utterance_id"] == r["utterance_id"] for u in usable) > 1 for r in usable), err
        return
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
    from bber_utils.predict.texts import predict_texts
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
    from bber_utils.train.loss import class_weights
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


def test_a_meld_run_that_sets_no_class_weighting_trains_with_square_root_weights(tmp_path, monkeypatch):
    """MELD's default ``class_weight_power`` is 0.5 (``corpora.CLASS_WEIGHT_POWER``): the loss weights are
    sqrt(balanced), and the run is the one that sets 0.5 (same folder, reused; 0.5 in its metrics.json)."""
    import json

    import bber_utils.train as tr
    from bber_utils.features.extract import extract_all
    from bber_utils.study.registry import run_name_for
    from bber_utils.train import loop
    from bber_utils.train.loss import class_weights

    work = tmp_path / "w"
    prepare_table(_dialogue_table(tmp_path), work, corpus="meld")
    extract_all(work, text_spec="hashgram", progress=False)
    seen, real_fit = [], loop.fit
    monkeypatch.setattr(loop, "fit", lambda *a, **kw: seen.append(np.asarray(kw["weights"])) or real_fit(*a, **kw))
    common = dict(workdir=str(work), model="text_only", text_encoder="hashgram", epochs=1, unimodal_epochs=1,
                  hidden_dim=8, num_heads=2, mamba_layers=1, mamba_d_state=4, mamba_d_conv=2, out_features=8,
                  batch_size=8, device="cpu", progress=False, num_threads=1)
    default = tr.train(common)
    labels = pd.read_parquet(work / "manifests" / "meld_train.parquet")["label"]
    ids = np.array([CLASSES.index(x) for x in labels])
    balanced = class_weights(ids, sorted(set(ids.tolist())))
    assert len(seen) == 1 and np.allclose(seen[0], np.sqrt(balanced), atol=1e-6)
    assert json.loads((default.run_dir / "metrics.json").read_text())["config"]["class_weight_power"] == 0.5
    assert tr.train({**common, "class_weight_power": 0.5}).run_dir == default.run_dir and len(seen) == 1
    assert run_name_for(common, work) == default.run_dir.name  # a study finds the run under the name it was given


# ------------------------------------------------------------------------------------ hostile tables (issue 25)
def _dialogues(n_dia=10, n_utt=3, **extra):
    return [{"text": f"t {d} {u}", "label": "joy", "dialogue_id": d, "utterance_id": u, **extra}
            for d in range(n_dia) for u in range(n_utt)]


def _cli(capsys, *args):
    """``bber prepare table ARGS`` -> (exit status, printed lines)."""
    from bber_utils.cli import main

    code = main(["prepare", "table", *map(str, args)])
    out = capsys.readouterr()
    return code, [line for line in (out.out + out.err).splitlines() if line.strip()]


ROLE_COLUMNS = {"text": "text", "audio_path": "audio_path", "label": "label", "split": "split",
                "dialogue_id": "dialogue_id", "utterance_id": "utterance_id", "speaker": "speaker",
                "language": "language", "start_s": "start_s", "end_s": "end_s"}


def test_every_role_is_covered_by_the_missing_column_test():
    from bber_utils.corpora.table import COLUMN_ROLES

    assert set(ROLE_COLUMNS) == set(COLUMN_ROLES)


@pytest.mark.parametrize("role", sorted(ROLE_COLUMNS))
def test_a_column_named_for_a_role_must_exist(tmp_path, role):
    """``columns={role: name}`` with no such column: one TableError naming the role, the column, the table's
    columns and the closest one; never the role silently dropped (splits drawn per row, no context)."""
    from bber_utils.corpora.text_clean import TableError

    rows = [{"text": "hi", "audio_path": "", "label": "joy", "split": "train", "dialogue_ID": 1, "utterance_id": 1,
             "language": "en", "start_s": "", "end_s": ""}]
    path = _write(tmp_path, rows)
    name = "dialogue_Id" if role == "dialogue_id" else "NoSuchColumn"
    with pytest.raises(TableError) as err:
        read_table(path, columns={role: name})
    msg = str(err.value)
    assert "\n" not in msg and role in msg and repr(name) in msg and "'utterance_id'" in msg
    if role == "dialogue_id":
        assert "did you mean 'dialogue_ID'?" in msg


@pytest.mark.parametrize("role", ["dialogue_id", "split"])
def test_cli_column_for_a_missing_column_exits_2_before_writing(tmp_path, capsys, role):
    csv = _write(tmp_path, [dict(r, split="train") for r in _dialogues()])
    out = tmp_path / "w"
    code, lines = _cli(capsys, "--csv", csv, "--out", out, "--column", f"{role}=NoSuchColumn")
    assert code == 2 and len(lines) == 1, lines
    assert f"{role}" in lines[0] and "'NoSuchColumn'" in lines[0] and "'text'" in lines[0]
    assert not out.exists()  # nothing written, not even the folder


@pytest.mark.parametrize("spec, words", [
    ("text", ["ROLE=NAME", "'text'"]),
    ("text=", ["ROLE=NAME", "'text='"]),
    ("Text=text", ["unknown column role 'Text'", "did you mean 'text'?"]),
    ("dialog_id=dialogue_id", ["did you mean 'dialogue_id'?"]),
])
def test_cli_malformed_column_is_one_line(tmp_path, capsys, spec, words):
    csv = _write(tmp_path, _dialogues())
    code, lines = _cli(capsys, "--csv", csv, "--out", tmp_path / "w", "--column", spec)
    assert code == 2 and len(lines) == 1, lines
    assert all(w in lines[0] for w in words), lines


def test_cli_column_role_given_twice_is_refused(tmp_path, capsys):
    csv = _write(tmp_path, _dialogues())
    code, lines = _cli(capsys, "--csv", csv, "--out", tmp_path / "w", "--column", "text=text", "--column",
                       "text=label")
    assert code == 2 and len(lines) == 1 and "text" in lines[0] and "twice" in lines[0], lines


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_tables_are_read(tmp_path, encoding):
    rows = [{"text": "Привет, мир", "label": "joy", "split": "train"}, {"text": 'say "hi"', "label": "sad",
                                                                         "split": "train"}]
    path = tmp_path / "u.csv"
    pd.DataFrame(rows).to_csv(path, index=False, encoding=encoding)
    frames, skips, _ = read_table(path)
    assert frames["train"]["text"].tolist() == ["Привет, мир", 'say "hi"'] and len(skips) == 0


def test_nul_bytes_that_are_not_utf16_are_one_table_error(tmp_path):
    from bber_utils.corpora.text_clean import TableError, read_csv_robust

    path = tmp_path / "x.csv"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)  # an Excel (zip) file named .csv
    with pytest.raises(TableError, match=r"x\.csv.*(zip|Excel)"):
        read_csv_robust(path)


@pytest.mark.parametrize("data, words", [
    ("text,label\nhi,joy\n".encode("utf-32-le"), "NUL bytes in the header line"),  # UTF-32 without BOM
    (b"\xff\xfe" + "text,label\nhi,joy\n".encode("utf-16-le")[:-1], "looks like UTF-16-LE"),  # cut short
])
def test_undecodable_wide_tables_are_one_table_error(tmp_path, data, words):
    from bber_utils.corpora.text_clean import TableError, read_csv_robust

    path = tmp_path / "w.csv"
    path.write_bytes(data)
    with pytest.raises(TableError, match=rf"w\.csv: {words}") as err:
        read_csv_robust(path)
    assert "\n" not in str(err.value)


def test_a_parquet_file_named_csv_is_read_as_parquet(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame([{"text": "hi", "label": "joy", "split": "train"}]).to_parquet(path)
    frames, _, _ = read_table(path)
    assert frames["train"]["text"].tolist() == ["hi"]


def test_a_huge_text_cell_is_kept(tmp_path):
    """One 1 MB transcript (over the csv module's default field limit) is a valid row, kept whole."""
    big = "word " * 250_000
    path = _write(tmp_path, [{"text": big, "label": "joy", "split": "train"},
                             {"text": "hi", "label": "sad", "split": "train"}])
    frames, skips, _ = read_table(path)
    assert len(frames["train"]) == 2 and len(frames["train"]["text"].iloc[0]) == len(big.strip())
    assert len(skips) == 0
    import csv

    assert csv.field_size_limit() == 131072  # the reader leaves the process-wide limit as it was


def test_every_row_unmapped_is_an_error_naming_the_cause(tmp_path, capsys):
    csv = _write(tmp_path, [{"text": f"t{i}", "label": "foo", "split": "train"} for i in range(12)])
    code, lines = _cli(capsys, "--csv", csv, "--out", tmp_path / "w")
    assert code == 2 and len(lines) == 1, lines
    assert "all 12 rows" in lines[0] and "unmapped label 'foo'" in lines[0] and "12" in lines[0]
    assert "--label-map" in lines[0]
    assert not (tmp_path / "w" / "manifests").exists()


def test_an_empty_train_or_dev_split_is_an_error(tmp_path):
    from bber_utils.corpora.text_clean import TableError

    rows = [{"text": f"t{i}", "label": "foo" if sp == "train" else "joy", "split": sp}
            for i, sp in enumerate(["train"] * 4 + ["dev"] * 2)]
    with pytest.raises(TableError, match=r"train split is empty.*4 row.*unmapped label 'foo'"):
        read_table(_write(tmp_path, rows))
    rows = [{"text": f"t{i}", "label": "foo" if sp == "dev" else "joy", "split": sp}
            for i, sp in enumerate(["train"] * 4 + ["dev"] * 2)]
    with pytest.raises(TableError, match=r"dev split is empty.*2 row.*unmapped label 'foo'"):
        read_table(_write(tmp_path, rows, "b.csv"))
    frames, _, _ = read_table(_write(tmp_path, [dict(r, split="train") for r in rows[:4]], "c.csv"))
    assert len(frames["train"]) == 4 and len(frames["dev"]) == 0  # no dev asked for: not an error


def test_drawn_dev_split_that_rounds_to_nothing_is_an_error(tmp_path):
    from bber_utils.corpora.text_clean import TableError

    path = _write(tmp_path, _dialogues(n_dia=2))
    with pytest.raises(TableError, match=r"dev split is empty.*2 dialogue"):
        read_table(path)
    frames, _, _ = read_table(path, dev_fraction=0, test_fraction=0)
    assert len(frames["train"]) == 6


@pytest.mark.parametrize("dev, test", [(0.9, 0.9), (-0.5, 0.15), (0.15, -0.1), (1.0, 0.0), (0.5, 0.5),
                                       (float("nan"), 0.1)])
def test_bad_split_fractions_are_refused(tmp_path, capsys, dev, test):
    csv = _write(tmp_path, _dialogues())
    code, lines = _cli(capsys, "--csv", csv, "--out", tmp_path / "w", "--dev-fraction", dev, "--test-fraction", test)
    assert code == 2 and len(lines) == 1 and "fraction" in lines[0], lines


def test_drawn_splits_always_leave_train_rows(tmp_path):
    frames, _, _ = read_table(_write(tmp_path, _dialogues(n_dia=3)), dev_fraction=0.5, test_fraction=0.45)
    assert len(frames["train"]) and len(frames["dev"]) and len(frames["test"])


def test_missing_json_label_map_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"^label map file not found: .*nope\.json$"):
        parse_label_map(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"label map file .*bad\.json.*JSON"):
        parse_label_map(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text('["joy"]')
    with pytest.raises(ValueError, match=r"label map file .*list\.json.*object"):
        parse_label_map(str(tmp_path / "list.json"))
    (tmp_path / "ok.json").write_text('{"Exc": "happy"}')
    assert parse_label_map(str(tmp_path / "ok.json")) == {"exc": "happy"}
    with pytest.raises(ValueError, match="did you mean 'happy'"):
        parse_label_map("exc=hapy")


def test_a_folder_given_as_table_is_named(tmp_path):
    from bber_utils.corpora.text_clean import TableError

    for name in ("dir.csv", "dir.parquet", "dir"):
        (tmp_path / name).mkdir()
        with pytest.raises(TableError, match=rf"{name}: is a folder, not a table file"):
            read_table(tmp_path / name)


def test_a_parquet_that_is_not_parquet_is_one_line(tmp_path):
    from bber_utils.corpora.text_clean import TableError

    (tmp_path / "t.parquet").write_text("text,label\nhi,joy\n")
    with pytest.raises(TableError, match=r"t\.parquet: not a readable Parquet file") as err:
        read_table(tmp_path / "t.parquet")
    assert "\n" not in str(err.value)


def test_non_numeric_utterance_ids_follow_the_table_order(tmp_path):
    """Ids like ``u2, u10`` or none at all: the dialogue's context follows the table's row order, said once."""
    from bber_utils.corpora.dialogues import context_map

    order = ["b7", "a3", "c10", "c2"]  # the table's order is the conversation's
    rows = [{"text": f"{d} {u}", "label": "joy", "split": "train", "dialogue_id": d, "utterance_id": u}
            for d in ("x", "y") for u in order]
    rows += [{"text": "z", "label": "joy", "split": "train", "dialogue_id": "n", "utterance_id": u}
             for u in (2, 1)]  # numeric ids: their own order
    frames, _, report = read_table(_write(tmp_path, rows))
    train = frames["train"]
    ctx = context_map(train, 3)
    ids = dict(zip(train["text"], train["utt_id"]))
    assert ctx[ids["x c2"]] == [ids["x b7"], ids["x a3"], ids["x c10"]]
    assert ctx[ids["y b7"]] == []
    n = train[train["dialogue_id"] == "n"]["utt_id"].tolist()  # rows utterance 2, then 1
    assert ctx[n[0]] == [n[1]] and ctx[n[1]] == []
    assert "2 dialogue(s)" in report.summary() and "table's row order" in report.summary()
    no_ids = [{k: v for k, v in r.items() if k != "utterance_id"} for r in rows if r["dialogue_id"] == "x"]
    frames, _, report = read_table(_write(tmp_path, no_ids, "no_ids.csv"))  # dialogue_id, no utterance_id
    train = frames["train"]
    assert context_map(train, 1)[train["utt_id"].iloc[3]] == [train["utt_id"].iloc[2]]
    assert "1 dialogue(s) have no utterance ids" in report.summary()


# cp1252 characters whose byte is a UTF-8 continuation byte (0x80-0xBF): such a line can never be valid UTF-8,
# so the reader's "UTF-8, else cp1252 per line" rule reads it back exactly (a lead byte 0xC2-0xF4 followed by
# continuation bytes is genuinely ambiguous: "Ã©" in cp1252 is "é" in UTF-8).
_CP1252_SAFE = "".join(ch for ch in (bytes([b]).decode("cp1252", errors="ignore") for b in range(0x80, 0xC0)) if ch)
_ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
_CP1252_TEXT = st.text(alphabet=st.characters(codec="ascii") | st.sampled_from(_CP1252_SAFE), max_size=30)
_LONG = st.builds(lambda ch, n: ch * n, st.sampled_from("aé,\"\nЖ"), st.sampled_from([131_073, 400_000]))
_ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(encoding=st.sampled_from(_ENCODINGS), data=st.data())
def test_any_table_pandas_writes_reads_back(tmp_path, encoding, data):
    """Any text (any unicode, NUL, commas, quotes, newlines, cells over the csv module's field limit) in any of
    the usual encodings: the same texts and row count come back. The one file refused (one ``TableError`` naming
    it) has a lone carriage return, which pandas writes unquoted: a line break to any CSV reader."""
    from bber_utils.corpora.table import load_table
    from bber_utils.corpora.text_clean import TableError

    cell = _CP1252_TEXT if encoding == "cp1252" else _ANY_TEXT | _LONG
    texts = data.draw(st.lists(cell, min_size=1, max_size=6), label="texts")
    path = tmp_path / f"t-{encoding}.csv"
    pd.DataFrame({"text": texts, "label": "joy"}).to_csv(path, index=False, encoding=encoding)
    try:
        df = load_table(path)
    except TableError as err:
        assert any("\r" in t.replace("\r\n", "") for t in texts), err
        assert str(err).startswith(f"{path} line ") and "\n" not in str(err)
        return
    assert list(df.columns) == ["text", "label"]
    assert df["text"].tolist() == texts and len(df) == len(texts)


@pytest.mark.parametrize("name, content, words", [
    ("empty.csv", b"", "the file is empty"),
    ("blank.csv", "\n \n".encode("utf-16"), "the file is empty"),
    ("header.csv", b"text,label\n", "header but no rows"),
    ("t.parquet", b"text,label\nhi,joy\n", "not a readable Parquet file"),
    ("folder.csv", None, "is a folder, not a table file"),
    ("gone.csv", "missing", "file not found"),
])
def test_cli_unusable_table_file_is_one_line_and_writes_nothing(tmp_path, capsys, name, content, words):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    out = tmp_path / "w"
    code, lines = _cli(capsys, "--csv", path, "--out", out)
    assert code == 2 and len(lines) == 1 and name in lines[0] and words in lines[0], lines
    assert not out.exists()


def test_negative_limit_is_refused(tmp_path):
    with pytest.raises(ValueError, match="limit -1"):
        read_table(_write(tmp_path, _dialogues()), limit=-1)


def test_resd_negative_dev_fraction_is_refused_before_reading(tmp_path, capsys):
    from bber_utils.cli import main

    assert main(["prepare", "resd", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "w"),
                 "--dev-fraction", "-0.2"]) == 2
    out = capsys.readouterr().err  # errors go to stderr
    assert out.strip().count("\n") == 0 and "--dev-fraction -0.2" in out and not (tmp_path / "w").exists()


def _speakers_table(tmp_path, speakers=("m2", "m3", "m4", "m5"), classes=("anger", "fear", "neutral")):
    rows = [{"text": "tak", "label": c, "speaker": s, "utterance_id": f"{s}_{c}_{i}"}
            for s in speakers for c in classes for i in range(2)]
    return _write(tmp_path, rows)


def test_a_declared_label_set_is_written_and_rows_outside_it_are_skipped_and_counted(tmp_path):
    from bber_utils.corpora import corpus_classes

    rows = [{"text": f"t{i}", "label": lab, "split": sp} for i, (lab, sp) in
            enumerate([("anger", "train"), ("fear", "train"), ("joy", "train"), ("neutral", "dev"), ("fear", "test")])]
    frames, report = prepare_table(_write(tmp_path, rows), tmp_path / "w", corpus="pl", classes="Anger,fear,neutral")
    assert report.classes == ("neutral", "anger", "fear") and report.classes_declared
    assert report.skipped == 1 and "happy" not in set(frames["pl"]["train"]["label"])
    assert corpus_classes(tmp_path / "w", "pl") == ("neutral", "anger", "fear")
    assert "label set: neutral, anger, fear (declared)" in report.summary()


def test_without_a_declared_label_set_a_table_has_the_classes_its_labels_name(tmp_path):
    from bber_utils.corpora import corpus_classes

    frames, report = prepare_table(_speakers_table(tmp_path), tmp_path / "w", corpus="pl", split_by="speaker")
    assert report.classes == ("neutral", "anger", "fear") and not report.classes_declared
    assert corpus_classes(tmp_path / "w", "pl") == ("neutral", "anger", "fear")
    assert corpus_classes(tmp_path / "w", "other") == CLASSES  # no label-set file: all seven (MELD, RESD, demo)


def test_a_label_set_naming_an_unknown_class_is_one_cli_line(tmp_path, capsys):
    code, lines = _cli(capsys, "--csv", _speakers_table(tmp_path), "--out", tmp_path / "w", "--classes",
                       "anger,feer,neutral")
    assert code == 2 and len(lines) == 1 and "'feer'" in lines[0] and "did you mean 'fear'?" in lines[0]
    assert not (tmp_path / "w" / "manifests").exists()


def test_a_speaker_independent_split_keeps_every_speaker_in_one_split(tmp_path):
    frames, _, report = read_table(_speakers_table(tmp_path), split_by="speaker", seed=3)
    by_split = {sp: set(df["speaker"]) for sp, df in frames.items()}
    assert all(len(v) == 1 for k, v in by_split.items() if k != "train") and len(by_split["train"]) == 2
    assert set.union(*by_split.values()) == {"m2", "m3", "m4", "m5"}
    assert not set.intersection(*by_split.values())
    assert frames["train"]["speaker"].notna().all()


def test_a_speaker_independent_split_of_a_single_speaker_is_one_line(tmp_path, capsys):
    from bber_utils.corpora.text_clean import TableError

    path = _speakers_table(tmp_path, speakers=("m2",))
    with pytest.raises(TableError, match="single speaker \\('m2'\\)"):
        read_table(path, split_by="speaker")
    code, lines = _cli(capsys, "--csv", path, "--out", tmp_path / "w", "--split-by", "speaker")
    assert code == 2 and len(lines) == 1 and "single speaker" in lines[0]
    rows = [{"text": "t", "label": "fear", "speaker": s, "split": sp} for s, sp in
            (("m2", "train"), ("m3", "dev"), ("m2", "test"))]
    with pytest.raises(TableError, match="speaker 'm2' is in the test and train splits"):
        read_table(_write(tmp_path, rows, "s.csv"), split_by="speaker")
    with pytest.raises(TableError, match="needs a speaker column"):
        read_table(_write(tmp_path, [{"text": "t", "label": "fear"}], "n.csv"), split_by="speaker")


def test_any_iso_639_1_language_is_read_and_anything_else_is_skipped_or_refused(tmp_path):
    rows = [{"text": "tak", "label": "anger", "split": "train", "language": lang} for lang in ("pl", "de", "xx")]
    frames, skips, _ = read_table(_write(tmp_path, rows), language="pl", dev_fraction=0, test_fraction=0)
    assert frames["train"]["language"].tolist() == ["pl", "de"]
    assert "'xx' is not an ISO 639-1 code" in skips["reason"].iloc[0]
    with pytest.raises(ValueError, match="'polish' is not an ISO 639-1 code"):
        read_table(_write(tmp_path, rows), language="polish")


def test_add_keeps_the_other_corpora_and_their_label_sets(tmp_path):
    from bber_utils.corpora import available_corpora, corpus_classes

    rows = [{"text": f"t{i}", "label": lab, "split": sp} for i, (lab, sp) in
            enumerate([("joy", "train"), ("sad", "train"), ("joy", "dev"), ("sad", "test")])]
    prepare_table(_speakers_table(tmp_path), tmp_path / "w", corpus="pl", split_by="speaker")
    prepare_table(_write(tmp_path, rows, "en.csv"), tmp_path / "w", corpus="en", add=True)
    assert available_corpora(tmp_path / "w") == ["pl", "en"]
    assert corpus_classes(tmp_path / "w", "pl") == ("neutral", "anger", "fear")
    assert corpus_classes(tmp_path / "w", "en") == ("happy", "sad")
    prepare_table(_write(tmp_path, rows, "en.csv"), tmp_path / "w", corpus="en", force=True)  # no add: alone
    assert available_corpora(tmp_path / "w") == ["en"]
    assert not (tmp_path / "w" / "manifests" / "pl_classes.json").exists()
