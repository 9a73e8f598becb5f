"""Text repair: mojibake, cp1252 control characters, mixed-encoding CSV bytes; real MELD/RESD texts when present."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bber_utils.corpora.text_clean import TableError, decode_mixed, fix_mojibake, read_csv_robust, repair_text

from tests.conftest import SHARED
LLM_LABELS = SHARED / "data" / "reference_llm_labels"


@pytest.mark.parametrize("raw, clean", [
    ("I donâ€™t know", "I don't know"),             # UTF-8 ’ read as cp1252
    ("wellâ€”no", "well—no"),                       # em dash
    ("â€œHiâ€\x9d", '"Hi"'),                        # quotes; the closing one ends in an undefined cp1252 byte
    ("cafÃ©", "café"),
    ("Oh my GodÂ  really", "Oh my God really"),      # a no-break space's leftover Â
    ("aÂ\xa0b", "a b"),                              # the intact no-break space, as mojibake
    ("company\x92s", "company's"),                   # cp1252 control character U+0092 as apostrophe
    ("So\x85 so", "So... so"),
    ("to\x97you", "to—you"),
    ("\x91Kay", "'Kay"),
    ("  two   spaces\t", "two spaces"),
    (None, ""),
    (float("nan"), ""),
])
def test_repair_text(raw, clean):
    assert repair_text(raw) == clean


@pytest.mark.parametrize("text", ["naïve café", "Привет, как дела? Всё хорошо.", "plain ASCII, y'know", "Ärger über",
                                  "50°C — ½ price"])
def test_correct_text_is_left_alone_and_repair_is_idempotent(text):
    assert fix_mojibake(text) == text
    assert repair_text(repair_text(text)) == repair_text(text)


def test_decode_mixed_reads_cp1252_lines_inside_utf8():
    data = "a,b\n1,“ok”\n".encode("utf-8") + "2,it’s café\n".encode("cp1252") + b"3,\xef\xbb\xbfx"
    text, bad = decode_mixed(b"\xef\xbb\xbf" + data)
    assert bad == [3]
    assert text.splitlines()[1:3] == ["1,“ok”", "2,it’s café"]


def test_read_csv_robust_errors_name_the_file(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"   \n")
    with pytest.raises(TableError, match=r"t\.csv: the file is empty"):
        read_csv_robust(p)
    p.write_text("\ufeff x ,y\n1,2\n", encoding="utf-8")
    assert list(read_csv_robust(p, required=["x"]).columns) == ["x", "y"]
    with pytest.raises(TableError, match=r"t\.csv: missing column\(s\) \['z'\]"):
        read_csv_robust(p, required=["z"])
    with pytest.raises(TableError, match="file not found"):
        read_csv_robust(tmp_path / "nope.csv")


@pytest.mark.parametrize("name", ["Qwen3-4B_emotions_meld_sample600.csv", "Qwen3-4B_emotions_resd.csv"])
def test_real_corpus_texts_are_cleaned(name):
    path = LLM_LABELS / name
    if not path.exists():
        pytest.skip(f"reference label file not available: {path}")
    df = read_csv_robust(path, required=["video_name", "text"])
    raw = df["text"].tolist()
    clean = [repair_text(t) for t in raw]
    for t in clean:
        assert not any("\x80" <= ch <= "\x9f" for ch in t), t
        assert "â€" not in t and "Â" not in t and "Ã" not in t
        assert t == t.strip() and "  " not in t
    if "meld" in name:
        had_c1 = [i for i, t in enumerate(raw) if "\x92" in t]
        assert had_c1, "the MELD sample is expected to contain U+0092 apostrophes"
        assert all("'" in clean[i] for i in had_c1)
    else:
        cyrillic = sum(any("а" <= ch.lower() <= "я" for ch in t) for t in clean)
        assert cyrillic > 0.9 * len(clean)
        # Russian text needs no repair beyond whitespace
        assert sum(c != " ".join(str(r).split()) for c, r in zip(clean, raw)) <= 0.01 * len(clean)


def test_clean_matches_for_whole_table(tmp_path):
    """A table written as it is published (UTF-8 with mojibake) comes back repaired row by row."""
    rows = pd.DataFrame({"Utterance": ["Itâ€™s", "Fine\x92s"], "Emotion": ["joy", "neutral"]})
    p = tmp_path / "x.csv"
    rows.to_csv(p, index=False)
    got = read_csv_robust(p, required=["Utterance"])["Utterance"].map(repair_text).tolist()
    assert got == ["It's", "Fine's"]
