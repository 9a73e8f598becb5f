"""MELD and RESD readers, ``prepare`` and ``bber prepare`` on fixture corpora written in the published layouts."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bber_utils.corpora import available_corpora, counts_table, load_corpus, load_skips, load_union, prepare
from bber_utils.corpora.manifest import SPLITS, validate_manifest
from bber_utils.corpora.meld import read_meld
from bber_utils.corpora.resd import read_resd, stratified_dev_split
from bber_utils.corpora.skips import SKIP_COLUMNS
from bber_utils.corpora.text_clean import TableError

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
               "Episode", "StartTime", "EndTime"]


# ----------------------------------------------------------------------------------------------- fixtures
def make_mp4(path: Path, seconds: float, freq: float = 440.0, video: bool = True) -> Path:
    """A clip like MELD's: tiny h264 video + stereo AAC audio at 44.1 kHz (audio only when ``video=False``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=44100:duration={seconds}"]
    if video:
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=16x16:r=5", *audio,
               "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
               "-ac", "2", str(path)]
    else:
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *audio, "-c:a", "aac", "-b:a", "24k", str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="module")
def clip_bank(tmp_path_factory) -> dict[str, Path]:
    """Clips made once per module: short ones of different lengths and one longer than 60 s."""
    d = tmp_path_factory.mktemp("clips")
    bank = {f"c{i}": make_mp4(d / f"c{i}.mp4", 0.4 + 0.2 * i, 300 + 50 * i) for i in range(3)}
    bank["long"] = make_mp4(d / "long.mp4", 61.0, video=False)
    return bank


def meld_row(i, d, u, text, emotion):
    return [i, text, "Ross", emotion, "neutral", d, u, 1, 1, "00:00:01,000", "00:00:02,000"]


def write_meld_csv(path: Path, rows, encoding="utf-8"):
    df = pd.DataFrame(rows, columns=MELD_HEADER)
    path.write_bytes(df.to_csv(index=False).encode(encoding))


def build_meld(root: Path, bank, raw_subdir: bool = False) -> Path:
    """MELD layout: 3 CSVs (with mojibake and a U+0092 apostrophe) and clip folders, defects included."""
    base = root / "MELD.Raw" if raw_subdir else root
    base.mkdir(parents=True, exist_ok=True)
    train = [meld_row(1, 0, 0, "I donâ€™t know.", "joy"), meld_row(2, 0, 1, "It\x92s fine.", "sadness"),
             meld_row(3, 0, 2, "Corrupt one", "anger"), meld_row(4, 1, 0, "Too long", "neutral"),
             meld_row(5, 1, 1, "Odd label", "boredom"), meld_row(6, 1, 2, "WaitÂ  what?", "surprise")]
    dev = [meld_row(1, 0, 0, "Hello", "neutral"), meld_row(2, 0, 1, "Missing clip", "fear")]
    test = [meld_row(1, 0, 0, "Bye", "disgust")]
    for split, rows in (("train", train), ("dev", dev), ("test", test)):
        write_meld_csv(base / f"{split}_sent_emo.csv", rows)
    tr, dv, te = base / "train_splits", base / "dev_splits_complete", base / "output_repeated_splits_test"
    for d in (tr, dv, te):
        d.mkdir(exist_ok=True)
    shutil.copy(bank["c0"], tr / "dia0_utt0.mp4")
    shutil.copy(bank["c1"], tr / "dia0_utt1.mp4")
    (tr / "dia0_utt2.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a real movie")
    shutil.copy(bank["long"], tr / "dia1_utt0.mp4")
    shutil.copy(bank["c0"], tr / "dia1_utt1.mp4")
    shutil.copy(bank["c2"], tr / "dia1_utt2.mp4")
    shutil.copy(bank["c1"], dv / "dia0_utt0.mp4")          # dia0_utt1 is missing on purpose
    shutil.copy(bank["c2"], te / "dia0_utt0.mp4")
    return root


def wav_bytes(seconds: float, sr: int, freq: float = 220.0, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format=fmt)
    return buf.getvalue()


RESD_EMOTIONS = ["neutral", "happiness", "sadness", "anger", "enthusiasm", "disgust", "fear"]


def resd_records(n_per_class: int, split: str, rng: np.random.Generator) -> list[dict]:
    recs = []
    for k, emo in enumerate(RESD_EMOTIONS):
        for j in range(n_per_class):
            sr = 44100 if (j + k) % 2 else 16000
            name = f"{k + 1:02d}_{emo}_x {emo[0]}_{j:03d}" if j % 3 == 0 else f"{k + 1:02d}_{emo}_{emo[0]}_{j:03d}"
            recs.append({"name": name, "path": f"{name}.wav", "emotion": emo,
                         "speech": {"bytes": wav_bytes(0.3 + 0.1 * rng.random(), sr), "path": f"{name}.wav"}})
    return recs


def write_hub_parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    speech_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"name": [r["name"] for r in records], "path": [r["path"] for r in records],
                      "emotion": [r["emotion"] for r in records],
                      "speech": pa.array([r["speech"] for r in records], type=speech_type)})
    pq.write_table(table, path)
    return path


def build_resd_hub(root: Path, n_train: int = 4, n_test: int = 1, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    write_hub_parquet(root / "data" / "train-00000-of-00001.parquet", resd_records(n_train, "train", rng))
    write_hub_parquet(root / "data" / "test-00000-of-00001.parquet", resd_records(n_test, "test", rng))
    return root


# ----------------------------------------------------------------------------------------------- MELD
def test_meld_reader_reads_layout_repairs_text_and_reports_defects(tmp_path, clip_bank):
    root = build_meld(tmp_path / "meld", clip_bank)
    frames, skips = read_meld(root, tmp_path / "wav", progress=False)
    train = validate_manifest(frames["train"])
    assert list(train["utt_id"]) == ["meld-train-dia0_utt0", "meld-train-dia0_utt1", "meld-train-dia1_utt2"]
    assert list(train["label"]) == ["happy", "sad", "surprise"]
    assert list(train["text"]) == ["I don't know.", "It's fine.", "Wait what?"]
    assert train["language"].eq("en").all() and train["source"].eq("original").all()
    # audio: 16 kHz mono wav with the clip's duration
    info = sf.info(train["audio_path"].iloc[1])
    assert (info.samplerate, info.channels) == (16000, 1)
    assert train["duration_s"].iloc[1] == pytest.approx(0.6, abs=0.06)
    reasons = dict(zip(skips["utt_id"], skips["reason"]))
    assert list(skips.columns) == SKIP_COLUMNS
    assert "corrupt clip" in reasons["meld-train-dia0_utt2"]
    assert "too long" in reasons["meld-train-dia1_utt0"]
    assert "unknown label 'boredom'" in reasons["meld-train-dia1_utt1"]
    assert "line 6" in reasons["meld-train-dia1_utt1"]
    assert reasons["meld-dev-dia0_utt1"] == "missing clip"
    assert len(frames["dev"]) == 1 and len(frames["test"]) == 1


def test_meld_audio_is_extracted_once_and_reused(tmp_path, clip_bank):
    root = build_meld(tmp_path / "meld", clip_bank)
    frames, _ = read_meld(root, tmp_path / "wav", progress=False)
    wav = Path(frames["test"]["audio_path"].iloc[0])
    wav.write_bytes(wav.read_bytes())  # same content, but we can see whether it is rewritten
    stamp = wav.stat().st_mtime_ns
    frames2, _ = read_meld(root, tmp_path / "wav", progress=False)
    assert wav.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(frames["train"], frames2["train"])


def test_batched_extraction_finds_the_bad_clip(tmp_path, clip_bank):
    from bber_utils.corpora.meld import extract_wavs

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a movie")
    pairs = [(clip_bank["c0"], tmp_path / "a.wav"), (bad, tmp_path / "b.wav"), (clip_bank["c2"], tmp_path / "c.wav"),
             (tmp_path / "gone.mp4", tmp_path / "d.wav")]
    errors = extract_wavs(pairs)
    assert set(errors) == {tmp_path / "b.wav", tmp_path / "d.wav"}
    assert "corrupt clip" in errors[tmp_path / "b.wav"].reason and errors[tmp_path / "d.wav"].reason == "missing clip"
    assert sf.info(tmp_path / "c.wav").duration == pytest.approx(0.8, abs=0.06)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "bad.mp4", "c.wav"]  # no temporary files left
    good = extract_wavs(pairs[::2])
    assert good == {}


def test_meld_layout_with_wav_clips(tmp_path, clip_bank):
    root = build_meld(tmp_path / "meld", clip_bank)
    te = root / "output_repeated_splits_test"
    (te / "dia0_utt0.mp4").unlink()
    sf.write(te / "dia0_utt0.wav", np.zeros(22050, dtype=np.float32), 22050)
    frames, _ = read_meld(root, tmp_path / "wav", progress=False)
    assert frames["test"]["duration_s"].tolist() == [pytest.approx(1.0, abs=1e-3)]


def test_meld_raw_subfolder_and_cp1252_csv(tmp_path, clip_bank):
    root = build_meld(tmp_path / "meld", clip_bank, raw_subdir=True)
    # rewrite the test CSV in cp1252 with a typographic apostrophe and an e-acute
    write_meld_csv(root / "MELD.Raw" / "test_sent_emo.csv", [meld_row(1, 0, 0, "Café’s open", "disgust")],
                   encoding="cp1252")
    frames, _ = read_meld(root, tmp_path / "wav", progress=False)
    assert frames["test"]["text"].tolist() == ["Café's open"]


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"Utterance,Emotion\nhi,joy\n", "missing column"),
                                              (",".join(MELD_HEADER).encode() + b"\n", "no rows")])
def test_meld_bad_csv_is_an_error_naming_the_file(tmp_path, clip_bank, content, message):
    root = build_meld(tmp_path / "meld", clip_bank)
    (root / "dev_sent_emo.csv").write_bytes(content)
    with pytest.raises(TableError, match=message) as err:
        read_meld(root, tmp_path / "wav", progress=False)
    assert "dev_sent_emo.csv" in str(err.value)


def test_meld_missing_layout_names_what_is_missing(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(TableError, match="train_sent_emo.csv not found"):
        read_meld(tmp_path / "x", tmp_path / "wav")


def test_meld_limit_keeps_every_class(tmp_path, clip_bank):
    base = tmp_path / "meld"
    emos = ["neutral", "joy", "sadness"]
    rows = [meld_row(i, i, 0, f"u{i}", emos[0] if i < 6 else emos[i % 3]) for i in range(12)]
    base.mkdir()
    write_meld_csv(base / "train_sent_emo.csv", rows)
    for split, folder in (("dev", "dev_splits_complete"), ("test", "output_repeated_splits_test")):
        write_meld_csv(base / f"{split}_sent_emo.csv", [meld_row(0, 0, 0, "x", "joy")])
        (base / folder).mkdir()
        shutil.copy(clip_bank["c0"], base / folder / "dia0_utt0.mp4")
    (base / "train_splits").mkdir()
    for i in range(12):
        shutil.copy(clip_bank["c0"], base / "train_splits" / f"dia{i}_utt0.mp4")
    frames, _ = read_meld(base, tmp_path / "wav", limit=3, seed=1, progress=False)
    assert sorted(frames["train"]["label"]) == ["happy", "neutral", "sad"]
    assert len(list((tmp_path / "wav" / "train").glob("*.wav"))) == 3  # only the kept rows were extracted


# ----------------------------------------------------------------------------------------------- RESD
def test_resd_hub_parquet_decodes_mixed_rates_and_draws_dev(tmp_path):
    root = build_resd_hub(tmp_path / "resd", n_train=4, n_test=1)
    frames, skips = read_resd(root, tmp_path / "wav", seed=3, progress=False)
    assert len(skips) == 0
    assert {s: len(f) for s, f in frames.items()} == {"train": 21, "dev": 7, "test": 7}
    dev = validate_manifest(frames["dev"])
    assert sorted(dev["label"]) == sorted(["neutral", "happy", "sad", "anger", "surprise", "disgust", "fear"])
    assert dev["utt_id"].str.startswith("resd-train-").all() and dev["split"].eq("dev").all()
    assert not set(dev["utt_id"]) & set(frames["train"]["utt_id"])
    assert "resd-train-01_neutral_x n_000" in set(frames["train"]["utt_id"]) | set(dev["utt_id"])
    for p in pd.concat(frames.values())["audio_path"]:
        info = sf.info(p)
        assert (info.samplerate, info.channels) == (16000, 1)
    assert (frames["test"]["text"] == "").all() and frames["test"]["language"].eq("ru").all()
    # the same seed draws the same dev split; another seed another one
    again, _ = read_resd(root, tmp_path / "wav", seed=3, progress=False)
    other, _ = read_resd(root, tmp_path / "wav", seed=4, progress=False)
    assert list(again["dev"]["utt_id"]) == list(dev["utt_id"])
    assert list(other["dev"]["utt_id"]) != list(dev["utt_id"])


def test_resd_duration_after_resampling(tmp_path):
    root = tmp_path / "resd"
    rec = {"name": "01_anger_a_001", "path": "x.wav", "emotion": "anger",
           "speech": {"bytes": wav_bytes(1.0, 44100), "path": "x.wav"}}
    write_hub_parquet(root / "data" / "train-0.parquet", [rec])
    write_hub_parquet(root / "data" / "test-0.parquet", [{**rec, "name": "01_anger_a_002"}])
    frames, _ = read_resd(root, tmp_path / "wav", progress=False)
    assert frames["train"]["duration_s"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    assert sf.info(frames["train"]["audio_path"].iloc[0]).frames == 16000


def test_resd_bad_rows_are_skipped_and_reported(tmp_path):
    rng = np.random.default_rng(0)
    recs = resd_records(3, "train", rng)
    recs[0]["speech"] = {"bytes": None, "path": "nowhere.wav"}
    recs[1]["speech"] = {"bytes": b"RIFF garbage", "path": None}
    recs[2]["emotion"] = "boredom"
    root = tmp_path / "resd"
    write_hub_parquet(root / "data" / "train-0.parquet", recs)
    write_hub_parquet(root / "data" / "test-0.parquet", resd_records(1, "test", rng))
    frames, skips = read_resd(root, tmp_path / "wav", progress=False)
    assert len(skips) == 3
    reasons = " | ".join(skips["reason"])
    assert "no audio in this row" in reasons and "corrupt audio bytes" in reasons and "unknown label" in reasons
    assert skips["path"].str.endswith("train-0.parquet").all()
    assert len(frames["train"]) + len(frames["dev"]) == 21 - 3


def test_resd_several_shards_and_duplicate_names(tmp_path):
    rng = np.random.default_rng(0)
    recs = resd_records(2, "train", rng)
    root = tmp_path / "resd"
    write_hub_parquet(root / "data" / "train-00000-of-00002.parquet", recs[:8])
    write_hub_parquet(root / "data" / "train-00001-of-00002.parquet", recs[6:])  # rows 6, 7 twice
    write_hub_parquet(root / "data" / "test-00000-of-00001.parquet", resd_records(1, "test", rng))
    frames, skips = read_resd(root, tmp_path / "wav", progress=False)
    assert len(frames["train"]) + len(frames["dev"]) == 14
    assert len(skips) == 2 and skips["reason"].str.contains("train-00001-of-00002.parquet row [01]: duplicate").all()
    limited, _ = read_resd(root, tmp_path / "wav", limit=7, progress=False)
    assert len(limited["train"]) + len(limited["dev"]) == 7


def test_resd_parquet_without_audio_is_an_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "resd" / "data").mkdir(parents=True)
    for split in ("train", "test"):
        pq.write_table(pa.table({"name": ["a"], "emotion": ["anger"]}),
                       tmp_path / "resd" / "data" / f"{split}-0.parquet")
    with pytest.raises(TableError, match=r"train-0\.parquet: no audio column 'speech'"):
        read_resd(tmp_path / "resd", tmp_path / "wav", progress=False)


def test_resd_wav_folder_with_csv_and_text(tmp_path):
    root = tmp_path / "resd"
    (root / "wavs").mkdir(parents=True)
    rows = {"train": [], "test": []}
    for k, emo in enumerate(RESD_EMOTIONS):
        for j, split in enumerate(["train", "train", "test"]):
            name = f"{k:02d}_{emo}_{j}"
            (root / "wavs" / f"{name}.flac").write_bytes(wav_bytes(0.5, 22050, fmt="FLAC"))
            rows[split].append({"path": f"wavs/{name}.flac", "emotion": emo, "text": f"Привет номер {j}"})
    rows["test"].append({"path": "wavs/gone.wav", "emotion": "fear", "text": "нет"})
    for split, r in rows.items():
        pd.DataFrame(r).to_csv(root / f"{split}.csv", index=False)
    frames, skips = read_resd(root, tmp_path / "wav", dev_fraction=0.15, seed=0, progress=False)
    assert len(frames["test"]) == 7 and frames["test"]["text"].str.startswith("Привет").all()
    assert len(frames["train"]) + len(frames["dev"]) == 14 and len(frames["dev"]) == 7
    assert frames["test"]["utt_id"].iloc[0] == "resd-test-00_neutral_2"
    assert skips["utt_id"].tolist() == ["resd-test-gone"] and "file not found" in skips["reason"].iloc[0]
    assert "test.csv line 9" in skips["reason"].iloc[0]


def test_stratified_dev_split_fraction_and_single_member_class():
    df = pd.DataFrame({"utt_id": [f"u{i}" for i in range(101)],
                       "label": ["neutral"] * 60 + ["happy"] * 40 + ["fear"], "split": "train"})
    train, dev = stratified_dev_split(df, 0.15, seed=0)
    assert len(dev) == 15 and dev["label"].value_counts().to_dict() == {"neutral": 9, "happy": 6}
    assert "fear" in set(train["label"]) and len(train) + len(dev) == 101
    assert dev["split"].eq("dev").all()


# ----------------------------------------------------------------------------------------------- prepare
def test_prepare_union_writes_manifests_skips_and_is_idempotent(tmp_path, clip_bank):
    meld = build_meld(tmp_path / "meld", clip_bank)
    resd = build_resd_hub(tmp_path / "resd")
    work = tmp_path / "work"
    out = prepare("union", work, meld_root=meld, resd_root=resd, progress=False)
    assert set(out) == {"meld", "resd"} and available_corpora(work) == ["meld", "resd"]
    for corpus in ("meld", "resd"):
        for split in SPLITS:
            assert (work / "manifests" / f"{corpus}_{split}.parquet").exists()
    skips = load_skips(work)
    assert list(skips.columns) == SKIP_COLUMNS and len(skips) == 4 and set(skips["corpus"]) == {"meld"}
    union = load_union(work)
    assert set(union["train"]["corpus"]) == {"meld", "resd"}
    assert len(union["test"]) == len(out["meld"]["test"]) + len(out["resd"]["test"])
    # a second call with the same options reads back without rebuilding
    manifest = work / "manifests" / "meld_train.parquet"
    stamp = manifest.stat().st_mtime_ns
    again = prepare("union", work, meld_root=meld, resd_root=resd, progress=False)
    assert manifest.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again["resd"]["dev"], load_corpus(work, "resd")["dev"])
    # other options rebuild, and manifests of corpora no longer prepared are removed
    prepare("resd", work, resd_root=resd, limit=14, progress=False)
    assert available_corpora(work) == ["resd"] and not manifest.exists()
    assert json.loads((work / "manifests" / "prepare_options.json").read_text())["limit"] == 14
    table = counts_table({"resd": load_corpus(work, "resd")})
    assert table["total"].tolist() == [7, 7, 7] and list(table["split"]) == ["train", "dev", "test"]


def test_size_report_accounts_for_every_published_utterance():
    from bber_utils.corpora import size_report

    frames = {"resd": {"train": pd.DataFrame({"utt_id": ["resd-train-a"] * 900}),
                       "dev": pd.DataFrame({"utt_id": ["resd-train-b"] * 200}),
                       "test": pd.DataFrame({"utt_id": ["resd-test-c"] * 280})}}
    skips = pd.DataFrame({"corpus": ["resd"] * 16, "split": ["train"] * 16})
    report = size_report(frames, skips).set_index("published split")
    assert report.loc["train", ["kept", "skipped", "missing"]].tolist() == [1100, 16, 0]
    assert report.loc["test", "missing"] == 0
    assert size_report({"demo_en": {}}, skips).empty


def test_prepare_needs_roots_and_known_dataset(tmp_path):
    with pytest.raises(ValueError, match="meld_root"):
        prepare("meld", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        prepare("iemocap", tmp_path)


def test_prepare_demo_reads_generated_corpora_with_the_real_readers(tmp_path, clip_bank, monkeypatch):
    """``demo`` calls build_demo_corpus and reads its MELD-layout and RESD-layout output back."""
    calls = []

    def fake_build(out_dir, per_class, seed, **kw):
        calls.append((Path(out_dir), per_class, seed, kw))
        return {"demo_en": build_meld(Path(out_dir) / "demo_en", clip_bank),
                "demo_ru": build_resd_hub(Path(out_dir) / "demo_ru", n_train=per_class)}

    monkeypatch.setattr("bber_utils.corpora.build_demo_corpus", fake_build)
    out = prepare("demo", tmp_path / "w", demo_per_class=3, seed=5, progress=False, voices=2)
    assert calls[0][1:] == (3, 5, {"voices": 2})
    assert out["demo_en"]["train"]["utt_id"].iloc[0] == "demo_en-train-dia0_utt0"
    assert out["demo_ru"]["test"]["language"].eq("ru").all() and out["demo_en"]["dev"]["language"].eq("en").all()
    assert out["demo_ru"]["dev"]["utt_id"].str.startswith("demo_ru-train-").all()
    assert available_corpora(tmp_path / "w") == ["demo_en", "demo_ru"]
    prepare("demo", tmp_path / "w", demo_per_class=3, seed=5, progress=False, voices=2)
    assert len(calls) == 1  # idempotent: not generated twice


def test_cli_prepare_prints_counts(tmp_path, capsys):
    from bber_utils.corpora.cli import register_cli

    resd = build_resd_hub(tmp_path / "resd", n_train=3, n_test=1)
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(["prepare", "resd", "--root", str(resd), "--out", str(tmp_path / "w")])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "resd" in printed and "surprise" in printed and "skipped 0 utterance(s)" in printed
    assert (tmp_path / "w" / "manifests" / "resd_test.parquet").exists()
    bad = parser.parse_args(["prepare", "meld", "--out", str(tmp_path / "w")])
    assert bad.func(bad) == 2


@pytest.mark.slow
def test_prepare_real_demo_corpus_when_available(tmp_path):
    pytest.importorskip("bber_utils.corpora.demo", reason="the demo corpus generator is not in this build yet")
    out = prepare("demo", tmp_path / "w", demo_per_class=1, seed=0, progress=False)
    assert len(out["demo_en"]["train"]) > 0 and len(out["demo_ru"]["train"]) > 0
    assert out["demo_ru"]["train"]["text"].str.len().gt(0).any()  # the demo ships Russian text
    assert len(out["demo_ru"]["dev"]) == len(out["demo_en"]["dev"])
    for frames in out.values():
        for df in frames.values():
            validate_manifest(df)


def test_prepare_in_a_read_only_folder_reads_back_finished_work_and_refuses_new_work(tmp_path, capsys, read_only):
    """A read-only work folder ended in an OSError traceback; manifests prepared before are read back."""
    from bber_utils import cli

    resd = build_resd_hub(tmp_path / "resd", n_train=3, n_test=1)
    argv = ["prepare", "resd", "--root", str(resd), "--out"]
    assert cli.main([*argv, str(tmp_path / "done")]) == 0
    (tmp_path / "empty").mkdir()
    before = read_only.snapshot(tmp_path)
    read_only(tmp_path / "done")
    read_only(tmp_path / "empty")
    capsys.readouterr()
    assert cli.main([*argv, str(tmp_path / "done")]) == 0 and "surprise" in capsys.readouterr().out
    rc = cli.main([*argv, str(tmp_path / "empty")])
    out = "".join(capsys.readouterr())
    assert rc == 2 and out.count("\n") == 1 and "Traceback" not in out, out
    assert f"cannot write to {tmp_path / 'empty'}: read-only (Permission denied); prepare writes" in out
    assert read_only.snapshot(tmp_path) == before
