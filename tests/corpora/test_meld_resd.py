"""Hostile corpus input (issue 18): CSVs with extra fields, splits that would come out empty, RESD parquet
without ids, clips cut short, stale manifests after the data was fixed; property tests of the CSV readers.
Every fixture is written here (small wavs, CSVs, parquet files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bber_utils.corpora import prepare
from bber_utils.corpora.meld import _parse_rows, read_meld
from bber_utils.corpora.resd import _meta_rows, read_resd
from bber_utils.corpora.text_clean import TableError, read_csv_robust
from bber_utils.core.labels import MELD_TO_CLASS, RESD_TO_CLASS

HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
          "Episode", "StartTime", "EndTime"]
FOLDERS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def _wav(path: Path, seconds: float, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def _meld(root: Path, rows: dict[str, list[list]], seconds: dict[str, float] | None = None) -> Path:
    """MELD layout with wav clips; ``rows[split]`` = CSV rows; every clip 1 s unless ``seconds`` says."""
    for split, table in rows.items():
        pd.DataFrame(table, columns=HEADER).to_csv(root / f"{split}_sent_emo.csv", index=False) \
            if root.mkdir(parents=True, exist_ok=True) is None else None
        for r in table:
            name = f"dia{r[5]}_utt{r[6]}"
            _wav(root / FOLDERS[split] / f"{name}.wav", (seconds or {}).get(f"{split}/{name}", 1.0))
    return root


def seed_row(i, d, u, emotion="joy", start="00:00:01,000", end="00:00:02,000"):
    return [i, f"line {i}", "Ross", emotion, "positive", d, u, 1, 1, start, end]


BASE = {"train": [seed_row(1, 0, 0), seed_row(2, 0, 1, "anger")], "dev": [seed_row(1, 0, 0, "neutral")],
        "test": [seed_row(1, 0, 0, "sadness")]}


# ------------------------------------------------------------------------------ more fields than the header
@needs_ffmpeg
def test_meld_csv_with_unquoted_commas_in_times_is_an_error_naming_the_line(tmp_path):
    root = _meld(tmp_path / "MELD", BASE)
    lines = (root / "dev_sent_emo.csv").read_text().splitlines()
    lines[1] = lines[1].replace('"00:00:01,000","00:00:02,000"', "00:00:01,000,00:00:02,000")
    assert lines[1].count(",") == 12  # 13 fields against 11
    (root / "dev_sent_emo.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(TableError, match=r"dev_sent_emo.csv line 2: 13 fields but the header has 11"):
        read_meld(root, tmp_path / "wav", progress=False)


# ----------------------------------------------------------------------------- a split that would be empty
@needs_ffmpeg
def test_meld_split_with_rows_but_none_usable_is_an_error(tmp_path):
    root = _meld(tmp_path / "MELD", {**BASE, "dev": [seed_row(1, 0, 0, "0"), seed_row(2, 0, 1, "0")]})
    with pytest.raises(TableError, match=r"dev_sent_emo.csv: 2 row\(s\) but none usable.*unknown label '0'"):
        read_meld(root, tmp_path / "wav", progress=False)


def _resd_csv(root: Path, rows: dict[str, list[tuple[str, str, float]]]) -> Path:
    """RESD's CSV layout: ``rows[split]`` = (name, emotion, seconds)."""
    for split, table in rows.items():
        for name, _, seconds in table:
            _wav(root / "wavs" / f"{name}.wav", seconds)
        pd.DataFrame({"name": [n for n, _, _ in table], "path": [f"wavs/{n}.wav" for n, _, _ in table],
                      "emotion": [e for _, e, _ in table]}).to_csv(root / f"{split}.csv", index=False)
    return root


def test_resd_split_with_rows_but_none_usable_is_an_error(tmp_path):
    root = _resd_csv(tmp_path / "RESD", {"train": [("a", "anger", 0.5), ("b", "sadness", 0.5)],
                                         "test": [("c", "angr", 0.5)]})
    with pytest.raises(TableError, match="RESD test has rows but none usable.*unknown label 'angr'"):
        read_resd(root, tmp_path / "wav", progress=False)


def test_resd_parquet_without_name_or_path_is_an_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import io

    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000, np.float32), 16000, format="WAV")
    speech = pa.array([{"bytes": buf.getvalue(), "path": None}], type=pa.struct([("bytes", pa.binary()),
                                                                                 ("path", pa.string())]))
    for split in ("train", "test"):
        (tmp_path / "RESD" / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"emotion": ["anger"], "speech": speech}),
                       tmp_path / "RESD" / "data" / f"{split}-0.parquet")
    with pytest.raises(TableError, match="train-0.parquet: no column 'name' or 'path'"):
        read_resd(tmp_path / "RESD", tmp_path / "wav", progress=False)


# ------------------------------------------------------------------------------------------ cut-short clips
@needs_ffmpeg
def test_meld_clip_cut_short_is_skipped_under_its_own_reason(tmp_path):
    rows = {**BASE, "train": [seed_row(1, 0, 0, start="00:01:00,000", end="00:01:04,000"), seed_row(2, 0, 1, "anger"),
                              seed_row(3, 0, 2, "fear", start="00:02:00,000", end="00:02:04,000")]}
    root = _meld(tmp_path / "MELD", rows, seconds={"train/dia0_utt0": 1.5, "train/dia0_utt2": 3.5})
    frames, skips = read_meld(root, tmp_path / "wav", progress=False)
    assert list(frames["train"]["native_id"]) == ["dia0_utt1", "dia0_utt2"]  # 3.5 s of 4 s is kept
    assert len(skips) == 1 and skips["reason"].iloc[0].startswith("clip cut short (1.50 s of audio, 4.00 s")
    from bber_utils.corpora.meld import expected_seconds

    assert expected_seconds("00:00:01,500", "00:00:01,000") is None  # a reversed span is not checked


# ------------------------------------------------------------------------------- prepare after a data fix
def test_prepare_rebuilds_when_the_inputs_changed(tmp_path, capsys):
    root = _resd_csv(tmp_path / "RESD", {"train": [(f"t{i}", e, 0.4) for i, e in
                                                   enumerate(["anger", "sadness", "anger", "sadness", "angr"])],
                                         "test": [("x", "anger", 0.4)]})
    wd = tmp_path / "run"
    first = prepare("resd", wd, resd_root=root, progress=False, dev_fraction=0.0)
    skips = pd.read_csv(wd / "manifests" / "skips.csv")
    assert len(first["resd"]["train"]) == 4 and len(skips) == 1
    df = pd.read_csv(root / "train.csv")
    df.loc[df["emotion"] == "angr", "emotion"] = "anger"   # the user fixes the typo in the data
    df.to_csv(root / "train.csv", index=False)
    second = prepare("resd", wd, resd_root=root, progress=False, dev_fraction=0.0)
    assert len(second["resd"]["train"]) == 5
    assert len(pd.read_csv(wd / "manifests" / "skips.csv")) == 0
    assert "train.csv (content)" in capsys.readouterr().out
    _wav(root / "wavs" / "x.wav", 0.9)                      # a clip replaced: size and mtime change
    third = prepare("resd", wd, resd_root=root, progress=False, dev_fraction=0.0)
    assert third["resd"]["test"]["duration_s"].iloc[0] == pytest.approx(0.9, abs=0.01)
    assert "wavs/x.wav (size or mtime)" in capsys.readouterr().out
    again = prepare("resd", wd, resd_root=root, progress=False, dev_fraction=0.0)  # unchanged: read back
    assert "rebuilding" not in capsys.readouterr().out
    assert len(again["resd"]["train"]) == 5


# --------------------------------------------------------------------------------- property-based tests
_cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_meld_label = st.sampled_from(sorted(MELD_TO_CLASS) + ["", "boredom", "0", " Joy "])
_id = st.one_of(st.integers(-3, 50).map(str), _cell)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_cell, _cell, _meld_label, _id, _id, _cell, _cell), min_size=1, max_size=8))
def test_meld_rows_become_a_row_or_a_counted_reason(tmp_path, rows):
    """Random CSV text survives the file round trip: every row is either a manifest row with exactly its own
    values, or a skip naming its line; never an exception, never a shifted value."""
    table = [[i + 1, utt, spk, emo, "x", d, u, 1, 1, start, end] for i, (utt, spk, emo, d, u, start, end)
             in enumerate(rows)]
    path = tmp_path / "dev_sent_emo.csv"
    pd.DataFrame(table, columns=HEADER).to_csv(path, index=False)
    try:
        df = read_csv_robust(path, required=["Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"])
    except TableError:
        return  # e.g. a header with no rows after blank-only lines: a named error is fine
    skips: list[dict] = []
    out = _parse_rows(df, path, "dev", "meld", tmp_path, skips)
    assert len(out) + len(skips) == len(df)
    for r in out:
        src = table[int(r["line"]) - 2] if "line" in r else table[out.index(r) + len(skips)]
        assert r["native_id"] == f"dia{int(str(src[5]).strip())}_utt{int(str(src[6]).strip())}"
        assert r["label"] == MELD_TO_CLASS[str(src[3]).strip().lower()]
    for s in skips:
        assert " line " in s["reason"]


_resd_label = st.sampled_from(sorted(RESD_TO_CLASS) + ["", "angr", "Anger"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({"name": _cell, "path": st.one_of(st.none(), _cell), "emotion": _resd_label,
                                       "text": st.one_of(st.none(), _cell)}), min_size=1, max_size=8))
def test_resd_rows_become_a_row_or_a_counted_reason(records):
    skips: list[dict] = []
    out = _meta_rows(records, Path("train-0.parquet"), "train", "resd", skips, set())
    assert len(out) + len(skips) == len(records)
    for r in out:
        src = records[r["row"]]
        assert r["label"] == RESD_TO_CLASS[str(src["emotion"]).strip().lower()]
        assert r["native_id"] in (str(src["name"]).strip(), Path(str(src["path"] or "")).stem)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.text(alphabet="ab ,\"'\n", max_size=6), min_size=1, max_size=5), min_size=1,
                max_size=6))
def test_csv_reader_never_shifts_columns(tmp_path, rows):
    """Any raw text: a table whose cells are exactly the raw fields, or a ``TableError``; never another error."""
    import csv
    import io

    text = "c0,c1,c2\n" + "\n".join(",".join(r) for r in rows) + "\n"
    path = tmp_path / "t.csv"
    path.write_text(text)
    try:
        df = read_csv_robust(path)
    except TableError:
        return
    parsed = [r for r in csv.reader(io.StringIO(text))][1:]
    parsed = [r for r in parsed if r]
    assert all(len(r) == 3 for r in parsed)  # a row of another width must have raised
    assert df.shape[1] == 3 and list(df.columns) == ["c0", "c1", "c2"]
    assert df.index.equals(pd.RangeIndex(len(df)))  # no field taken into the index
    full = [r for r in parsed if any(c.strip() for c in r)]
    assert [list(r) for r in df.itertuples(index=False)][:len(full)] == full[:len(df)] or len(df) != len(full)
