"""SDS (stacked data sampling): selection, merging, caching, edge cases, the CLI."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bber_utils.core.audio import write_wav
from bber_utils.augment.sds import apply_sds, plan_sds, sds_report, sds_utt_id
from bber_utils.augment.cli import register_sds_cli as register_cli
from bber_utils.corpora.manifest import save_manifest, validate_manifest


def tone(seconds: float, sr: int = 16000, freq: float = 200.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def manifest(tmp_path, items, corpus="c", write=True, sr=16000):
    """items: (label, seconds[, sample rate]) -> a train manifest with real wavs."""
    rows = []
    for i, item in enumerate(items):
        label, secs = item[0], item[1]
        rate = item[2] if len(item) > 2 else sr
        path = tmp_path / "audio" / f"{corpus}_{i}.wav"
        if write:
            write_wav(path, tone(secs, rate, 150 + 10 * i), sr=rate)
        rows.append({"utt_id": f"{corpus}-train-u{i}", "corpus": corpus, "language": "en", "split": "train",
                     "audio_path": str(path), "start_s": 0.0, "end_s": np.nan, "duration_s": float(secs),
                     "text": f"text {i}", "label": label, "source": "original"})
    return validate_manifest(pd.DataFrame(rows))


def test_short_utterances_are_extended_with_same_label_partners(tmp_path):
    df = manifest(tmp_path, [("happy", 1.0), ("happy", 3.5), ("sad", 1.0), ("sad", 2.0), ("happy", 5.0),
                             ("sad", 1.5)])
    out = apply_sds(df, ratio=1.0, seed=0, out_dir=tmp_path / "sds", progress=False)
    validate_manifest(out)
    new = out[out["source"] == "sds"]
    assert len(out) == len(df) + len(new) and out["utt_id"].is_unique
    assert out.attrs["sds"]["eligible"] == 5 and out.attrs["sds"]["merged"] == len(new) == 5
    # none long enough: the sad ones chain the longest partners until 4 s is passed
    assert sorted(new.loc[new["label"] == "sad", "duration_s"].round(3)) == [4.5, 4.5, 4.5]
    by_id = df.set_index("utt_id")
    for _, row in new.iterrows():
        comps = row["components"].split(";")
        assert len(comps) >= 2 and len(set(comps)) == len(comps)
        assert {by_id.loc[c, "label"] for c in comps} == {row["label"]}
        assert row["text"] == " ".join(by_id.loc[c, "text"] for c in comps)
        assert row["duration_s"] >= 4.0 - 1e-3 and row["duration_s"] <= 8.0 + 1e-3
        info = sf.info(row["audio_path"])
        assert (info.samplerate, info.channels) == (16000, 1)
        assert info.duration == pytest.approx(row["duration_s"], abs=1e-3)
        assert row["utt_id"] == sds_utt_id("c", comps, 8.0, 0.0)
    # the merged audio is the components end to end
    row = new.iloc[0]
    comps = row["components"].split(";")
    got, _ = sf.read(row["audio_path"], dtype="float32")
    first, _ = sf.read(by_id.loc[comps[0], "audio_path"], dtype="float32")
    np.testing.assert_allclose(got[:len(first)], first, atol=1e-4)


def test_seeded_and_deterministic(tmp_path):
    items = [("happy", 0.5 + 0.1 * i) for i in range(30)] + [("sad", 0.3 + 0.1 * i) for i in range(30)]
    df = manifest(tmp_path, items, write=False)
    a, b = plan_sds(df, 0.5, seed=7), plan_sds(df, 0.5, seed=7)
    c = plan_sds(df, 0.5, seed=8)
    assert a.merges == b.merges and a.merges != c.merges
    assert a.selected == 30 and a.eligible == 60


def test_ratio_zero_and_one(tmp_path):
    df = manifest(tmp_path, [("happy", 1.0)] * 4 + [("happy", 6.0)], write=False)
    assert plan_sds(df, 0.0, 0).merges == []
    out = apply_sds(df, 0.0, 0, tmp_path / "sds", progress=False)
    pd.testing.assert_frame_equal(out.drop(columns="components"), df)
    assert plan_sds(df, 1.0, 0).selected == 4
    assert plan_sds(df, 0.5, 0).selected == 2


def test_replace_mode_keeps_size_and_swaps_originals(tmp_path):
    df = manifest(tmp_path, [("happy", 1.0), ("happy", 3.5), ("sad", 6.0)])
    out = apply_sds(df, 1.0, 0, tmp_path / "sds", mode="replace", progress=False)
    assert len(out) == 3 and out["source"].tolist().count("sds") == 2
    assert out.loc[2, "utt_id"] == "c-train-u2"  # long utterance untouched
    assert out.loc[0, "components"].startswith("c-train-u0;")


def test_single_member_class_and_every_utterance_long(tmp_path):
    df = manifest(tmp_path, [("fear", 1.0), ("happy", 5.0), ("happy", 6.0)], write=False)
    out = apply_sds(df, 1.0, 0, tmp_path / "sds", progress=False)
    assert len(out) == 3 and out.attrs["sds"]["merged"] == 0
    assert "no partner with label 'fear'" in sds_report(out)["reason"].iloc[0]
    long = manifest(tmp_path, [("happy", 4.0), ("happy", 9.0)], write=False)
    assert plan_sds(long, 1.0, 0).eligible == 0


def test_zero_length_audio_is_never_merged_nor_a_partner(tmp_path):
    df = manifest(tmp_path, [("sad", 0.0), ("sad", 1.0), ("sad", 4.5)], write=False)
    plan = plan_sds(df, 1.0, 0)
    assert plan.eligible == 1 and all(0 not in m for m in plan.merges)
    assert any("zero-length" in s["reason"] and s["utt_id"] == "c-train-u0" for s in plan.skips)


def test_partners_at_other_sample_rates_are_resampled(tmp_path):
    df = manifest(tmp_path, [("anger", 1.0, 8000), ("anger", 3.5, 44100)])
    out = apply_sds(df, 1.0, 0, tmp_path / "sds", progress=False)
    row = out[out["source"] == "sds"].iloc[0]
    info = sf.info(row["audio_path"])
    assert info.samplerate == 16000 and info.duration == pytest.approx(4.5, abs=1e-3)


def test_missing_partner_file_drops_the_merge_and_reports_it(tmp_path):
    df = manifest(tmp_path, [("happy", 1.0), ("happy", 4.5)])
    (tmp_path / "audio" / "c_1.wav").unlink()
    out = apply_sds(df, 1.0, 0, tmp_path / "sds", progress=False)
    assert len(out) == 2 and out.attrs["sds"]["merged"] == 0 and out.attrs["sds"]["skipped"] == 1
    reason = sds_report(out)["reason"].iloc[0]
    assert "c-train-u1" in reason and "file not found" in reason and "c_1.wav" in reason


def test_crop_to_max_seconds_and_gap(tmp_path):
    df = manifest(tmp_path, [("sad", 1.0), ("sad", 9.0)])
    out = apply_sds(df, 1.0, 0, tmp_path / "sds", max_seconds=5.0, gap_seconds=0.5, progress=False)
    row = out[out["source"] == "sds"].iloc[0]
    assert row["duration_s"] == pytest.approx(5.0, abs=1e-3) and out.attrs["sds"]["cropped"] == 1
    got, _ = sf.read(row["audio_path"], dtype="float32")
    assert np.abs(got[16000:24000]).max() < 1e-4  # the 0.5 s gap is silence


def test_merged_audio_is_written_once_and_reused(tmp_path):
    df = manifest(tmp_path, [("happy", 1.0), ("happy", 3.5)])
    out = apply_sds(df, 1.0, 0, tmp_path / "sds", progress=False)
    path = out[out["source"] == "sds"]["audio_path"].iloc[0]
    stamp = __import__("os").stat(path).st_mtime_ns
    again = apply_sds(df, 1.0, 0, tmp_path / "sds", progress=False)
    assert __import__("os").stat(path).st_mtime_ns == stamp
    pd.testing.assert_frame_equal(out, again)


def test_partners_stay_within_corpus(tmp_path):
    a = manifest(tmp_path, [("happy", 1.0), ("happy", 3.5)], corpus="a", write=False)
    b = manifest(tmp_path, [("happy", 1.0), ("happy", 3.5)], corpus="b", write=False)
    df = pd.concat([a, b], ignore_index=True)
    plan = plan_sds(df, 1.0, 0)
    for m in plan.merges:
        assert len({df.loc[i, "corpus"] for i in m}) == 1


def test_bad_arguments(tmp_path):
    df = manifest(tmp_path, [("happy", 1.0)], write=False)
    with pytest.raises(ValueError, match="ratio"):
        plan_sds(df, 1.5, 0)
    with pytest.raises(ValueError, match="train split only"):
        plan_sds(df.assign(split="dev"), 0.5, 0)
    with pytest.raises(ValueError, match="max_seconds"):
        plan_sds(df, 0.5, 0, target_seconds=4.0, max_seconds=3.0)


def test_cli_writes_sds_manifest_per_corpus(tmp_path, capsys):
    from bber_utils.core.paths import run_dirs

    work = run_dirs(tmp_path / "w")
    df = manifest(tmp_path, [("happy", 1.0), ("happy", 3.5), ("sad", 2.0)], corpus="meld")
    save_manifest(df, work.manifest("meld", "train"))
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(["sds", "--workdir", str(work.root), "--ratio", "1"])
    assert args.func(args) == 0
    out = pd.read_parquet(work.sds / "meld_train_sds.parquet")
    assert (out["source"] == "sds").sum() == 2
    assert "meld: 3 eligible, 3 selected, 2 merged" in capsys.readouterr().out
    assert (work.sds / "meld_train_sds_skips.csv").exists()


def test_applying_twice_adds_no_duplicates(tmp_path):
    df = manifest(tmp_path, [("happy", 1.0), ("happy", 3.5), ("happy", 6.0)])
    once = apply_sds(df, 1.0, 0, tmp_path / "sds", progress=False)
    twice = apply_sds(once, 1.0, 0, tmp_path / "sds", progress=False)
    validate_manifest(twice)
    assert twice["utt_id"].is_unique and set(once["utt_id"]) <= set(twice["utt_id"])
    assert twice.attrs["sds"]["eligible"] == 2  # the merged rows are not merged again


def test_sds_in_a_read_only_workdir_says_so_in_one_line(tmp_path, capsys, read_only):
    """A read-only work folder ended in an OSError traceback."""
    from bber_utils import cli
    from bber_utils.core.paths import run_dirs

    work = run_dirs(tmp_path / "w")
    save_manifest(manifest(tmp_path, [("happy", 1.0), ("happy", 3.5)], corpus="meld"), work.manifest("meld", "train"))
    before = read_only.snapshot(work.root)
    read_only(work.root)
    rc = cli.main(["sds", "--workdir", str(work.root), "--ratio", "1"])
    out = "".join(capsys.readouterr())
    assert rc == 2 and out.count("\n") == 1 and "Traceback" not in out, out
    assert f"cannot write to {work.root / 'sds'}: read-only (Permission denied)" in out
    assert read_only.snapshot(work.root) == before
