"""bber_utils.augment.tug.mix_synthetic: how many synthetic rows each class gets (per_class, top_up), language
routing, seeding, and that synthetic rows never reach dev or test."""

from __future__ import annotations

import pandas as pd
import pytest

from bber_utils.augment.tug import mix_plan, mix_synthetic, synthetic_utt_id
from bber_utils.core.labels import CLASSES


def _rows(corpus, language, counts, split="train", source="original", prefix=None):
    rows = []
    for label, n in counts.items():
        for i in range(n):
            uid = synthetic_utt_id(language, label, i) if source == "tug" else f"{prefix or corpus}-{split}-{label}{i}"
            rows.append(dict(utt_id=uid, corpus=corpus, language=language, split=split, audio_path=f"/a/{uid}.wav",
                             start_s=0.0, end_s=float("nan"), duration_s=1.0, text=f"t {uid}", label=label,
                             source=source))
    return pd.DataFrame(rows)


EN_TRAIN = {"neutral": 20, "happy": 10, "sad": 6, "anger": 4, "surprise": 2, "disgust": 1, "fear": 0}


@pytest.fixture
def synthetic():
    return pd.concat([_rows("tug_en", "en", {c: 30 for c in CLASSES}, source="tug"),
                      _rows("tug_ru", "ru", {c: 30 for c in CLASSES}, source="tug")], ignore_index=True)


def _added(mixed, corpus):
    tug = mixed[(mixed["source"] == "tug") & (mixed["corpus"] == corpus)]
    return tug["label"].value_counts().reindex(list(CLASSES), fill_value=0).to_dict()


def test_per_class_adds_ratio_times_class_count(synthetic):
    train = _rows("demo_en", "en", EN_TRAIN)
    mixed = mix_synthetic(train, synthetic, ratio=0.5, mode="per_class", seed=0)
    assert _added(mixed, "demo_en") == {c: int(round(0.5 * n)) for c, n in EN_TRAIN.items()}
    assert len(mixed) == len(train) + sum(int(round(0.5 * n)) for n in EN_TRAIN.values())


def test_top_up_moves_classes_towards_the_largest(synthetic):
    train = _rows("demo_en", "en", EN_TRAIN)
    full = mix_synthetic(train, synthetic, ratio=1.0, mode="top_up", seed=0)
    counts = full["label"].value_counts().to_dict()
    assert all(counts[c] == 20 for c in CLASSES)  # every class reaches the neutral count
    half = mix_synthetic(train, synthetic, ratio=0.5, mode="top_up", seed=0)
    assert _added(half, "demo_en") == {c: int(round(0.5 * (20 - n))) for c, n in EN_TRAIN.items()}
    assert _added(half, "demo_en")["neutral"] == 0


def test_languages_route_to_their_corpora_and_take_the_corpus_name(synthetic):
    train = pd.concat([_rows("demo_en", "en", EN_TRAIN), _rows("demo_ru", "ru", {c: 4 for c in CLASSES})],
                      ignore_index=True)
    mixed = mix_synthetic(train, synthetic, ratio=1.0, seed=3)
    tug = mixed[mixed["source"] == "tug"]
    assert set(tug.loc[tug["corpus"] == "demo_en", "utt_id"].str[:7]) == {"tug_en-"}
    assert set(tug.loc[tug["corpus"] == "demo_ru", "utt_id"].str[:7]) == {"tug_ru-"}
    assert (tug.loc[tug["corpus"] == "demo_ru", "language"] == "ru").all()
    assert set(tug["split"]) == {"train"} and set(tug["corpus"]) == {"demo_en", "demo_ru"}
    assert _added(mixed, "demo_ru") == {c: 4 for c in CLASSES}
    # The original rows are untouched.
    pd.testing.assert_frame_equal(mixed[mixed["source"] == "original"].reset_index(drop=True),
                                  train.reset_index(drop=True), check_dtype=False)


def test_two_corpora_of_one_language_draw_disjoint_rows(synthetic):
    train = pd.concat([_rows("meld", "en", {c: 20 for c in CLASSES}),
                       _rows("demo_en", "en", {c: 20 for c in CLASSES})], ignore_index=True)
    with pytest.warns(UserWarning, match="fewer synthetic rows"):
        mixed = mix_synthetic(train, synthetic, ratio=1.0, seed=0)
    tug = mixed[mixed["source"] == "tug"]
    assert not tug["utt_id"].duplicated().any()
    assert len(tug) == 7 * 30  # the pool of 30 per class ran out: 20 to the first corpus, 10 to the second
    plan = mix_plan(train, synthetic, 1.0)
    assert list(plan.loc[plan["label"] == "happy", "added"]) == [20, 10]


def test_seeded_and_independent_of_row_order(synthetic):
    train = _rows("demo_en", "en", EN_TRAIN)
    a = mix_synthetic(train, synthetic, ratio=0.5, seed=7)
    b = mix_synthetic(train, synthetic.sample(frac=1.0, random_state=1), ratio=0.5, seed=7)
    c = mix_synthetic(train, synthetic, ratio=0.5, seed=8)
    ids = lambda df: sorted(df.loc[df["source"] == "tug", "utt_id"])  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)


def test_shortfall_takes_all_and_warns(synthetic):
    train = _rows("demo_en", "en", {"neutral": 100, "happy": 1})
    with pytest.warns(UserWarning, match=r"demo_en/neutral \(30 of 50\)"):
        mixed = mix_synthetic(train, synthetic, ratio=0.5, seed=0)
    assert _added(mixed, "demo_en")["neutral"] == 30


def test_synthetic_never_enters_dev_or_test(synthetic):
    train = _rows("demo_en", "en", EN_TRAIN)
    dev = _rows("demo_en", "en", {"happy": 2}, split="dev")
    with pytest.raises(ValueError, match="train splits only.*'dev'"):
        mix_synthetic(pd.concat([train, dev], ignore_index=True), synthetic, ratio=1.0)
    off_split = synthetic.assign(split="test")
    mixed = mix_synthetic(train, off_split, ratio=1.0, seed=0)  # a synthetic row's own split never leaks through
    assert set(mixed.loc[mixed["source"] == "tug", "split"]) == {"train"}


def test_bad_arguments(synthetic):
    train = _rows("demo_en", "en", EN_TRAIN)
    with pytest.raises(ValueError, match="mix mode"):
        mix_synthetic(train, synthetic, ratio=1.0, mode="balanced")
    with pytest.raises(ValueError, match="ratio"):
        mix_synthetic(train, synthetic, ratio=-1)
    with pytest.raises(ValueError, match="source='tug'"):
        mix_synthetic(train, train, ratio=1.0)
    assert len(mix_synthetic(train, synthetic, ratio=0.0)) == len(train)
    with pytest.warns(UserWarning, match="0 of 20"):
        assert len(mix_synthetic(train, synthetic.iloc[:0], ratio=1.0)) == len(train)
