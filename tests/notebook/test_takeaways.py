"""The notebooks' takeaways are computed from what the cell above shows: each sentence follows its numbers, and
the ones found false in the course's second reading (SDS "removes the short end", errors "mostly anger/happy",
"when both are unsure, so is the fusion") cannot come back."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bber_utils.core.labels import CLASSES
from bber_utils.notebook import takeaways as T


def _counts(per_class):
    rows = []
    for corpus, split, n in per_class:
        rows.append({"corpus": corpus, "language": "en", "split": split,
                     **({c: n for c in CLASSES} if isinstance(n, int) else dict(zip(CLASSES, n)))})
    return pd.DataFrame(rows)


def test_class_balance_says_balanced_only_when_it_is():
    balanced = T.class_balance(_counts([("a", "train", 40), ("a", "test", 16)]))
    assert "same number" in balanced and "train 40, test 16" in balanced and "UAR equals WAR" in balanced
    skewed = T.class_balance(_counts([("a", "train", [100, 5, 5, 5, 5, 5, 5]), ("a", "test", 16)]))
    assert "not balanced" in skewed and "100 (neutral)" in skewed and "5 (happy)" in skewed
    assert "same number" not in skewed


def test_short_utterances_counts_the_train_rows_under_the_target():
    rows = pd.DataFrame({"corpus": ["a"] * 4 + ["b"] * 2, "split": ["train"] * 3 + ["test"] + ["train"] * 2,
                         "duration_s": [1.0, 3.9, 4.0, 1.0, 5.0, 6.0]})
    text = T.short_utterances(rows, 4.0)
    assert "a: 67 % (2 of 3)" in text and "b: 0 % (0 of 2)" in text


def test_sequence_lengths_gives_the_medians():
    text = T.sequence_lengths(pd.DataFrame({"audio frames": [100, 200, 300], "text steps": [5, 10, 20]}))
    assert "200 audio frames (4.0 s)" in text and "10 text steps, 20 times fewer" in text


def test_pca_structure_measures_what_the_map_shows():
    labels = np.repeat(CLASSES, 10)
    separated = pd.DataFrame({"modality": "audio", "label": labels, "language": ["en", "ru"] * 35,
                              "pc1": np.repeat(np.arange(7.0), 10), "pc2": 0.0})
    assert "audio: emotion 100 % of the map's spread, language 0 % of PC1" in T.pca_structure(separated)
    rng = np.random.default_rng(0)
    mixed = separated.assign(pc1=rng.standard_normal(70), pc2=rng.standard_normal(70))
    mixed.loc[mixed["language"] == "ru", "pc1"] += 20
    text = T.pca_structure(mixed)
    share = int(text.split("emotion ")[1].split(" %")[0])
    assert share < 30 and "language 9" in text  # language is nearly all of PC1


def _sds(mode="add"):
    original = pd.DataFrame({"source": "original", "duration_s": [1.0, 2.0, 3.0, 5.0], "label": "sad"})
    merged = pd.DataFrame({"source": "sds", "duration_s": [5.5, 7.0], "label": ["sad", "anger"]})
    df = pd.concat([original, merged], ignore_index=True)
    df.attrs["sds"] = {"mode": mode}
    return {"demo_en": df}


def test_sds_effect_says_the_originals_stay_in_add_mode():
    text = T.sds_effect(_sds(), 4.0)
    assert "2 merged rows of 5.5–7.0 s (median 6.2 s) added to 4 originals" in text
    assert "75 % before, 50 % after" in text and "short end is still there" in text
    assert "removes" not in text
    assert "replace" in T.sds_effect(_sds("replace"), 4.0)


def test_sds_class_shares_name_the_most_and_least_merged_classes():
    text = T.sds_class_shares(_sds())
    assert "most often sad (50 %)" in text and "least often neutral (0 %)" in text


def test_tug_lengths_describe_the_lengths_the_figure_shows_and_claim_no_prosody():
    synthetic = pd.DataFrame({"language": "en", "label": ["sad", "sad", "anger"], "duration_s": [6.0, 8.0, 3.0],
                              "text": ["a b c d e", "a b c d e f g", "a b c d e f"]})
    text = T.tug_lengths(synthetic)
    assert "from 3.0 s (anger) to 7.0 s (sad), 5–7 words" in text and "prosody" not in text


def test_soft_label_takeaways_follow_the_table():
    values = np.full((7, 7), 0.05)
    np.fill_diagonal(values, 0.7)
    mean = pd.DataFrame(values, index=CLASSES, columns=CLASSES)
    mean.loc["sad", "fear"], mean.loc["sad", "sad"] = 0.2, 0.4
    text = T.soft_label_diagonal(mean)
    assert "between 0.40 and 0.70" in text and "0.40 for sad" in text and "sad → fear (0.20)" in text
    assert "most of its" in T.soft_label_diagonal(mean.assign(sad=0.9))  # every diagonal above 0.5
    entropy = pd.Series([0.5, 1.5])
    assert "mean entropy is 1.00 nats (range 0.50–1.50)" in T.soft_label_entropy(entropy)
    table = pd.DataFrame([{**{c: 0.1 for c in CLASSES}, "label": "sad", "status": "ok", "sad": 0.4},
                          {**{c: 0.1 for c in CLASSES}, "label": "sad", "status": "ok", "fear": 0.4},
                          {**{c: 0.1 for c in CLASSES}, "label": "sad", "status": "rejected", "fear": 0.4}])
    assert "in 1 of the 2 usable" in T.true_class_highest(table, ("ok", "repaired"))
    assert "in every one of the 1" in T.true_class_highest(table.iloc[:1], ("ok",))


def test_audio_pooling_names_frames_and_steps():
    rows = pd.DataFrame({"utt_id": ["u"], "audio frames": [204], "audio steps": [51]})
    text = T.audio_pooling(rows, 4)
    assert "u: 204 frames (4.1 s) → 51 steps" in text and "12.5 steps per second" in text


def test_attention_and_gate_takeaways_read_their_arrays():
    weights = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    text = T.attention_focus(weights, ["(sentence)", "oh", "no"])
    assert "over the 3 text steps" in text and "0.33 each" in text and "'(sentence)' (0.60), 'oh' (0.25)" in text
    gate = T.gate_split([0.9, 0.8, 0.2, 0.3], trained=False)
    assert "55 % of each feature from audio" in gate and "2 of 4 features lean to audio" in gate
    assert "at initialisation" in gate and "learned" in T.gate_split([0.9], trained=True)


def test_learning_curve_names_the_overfitting_after_the_best_epoch():
    """The run the issue describes: best at epoch 5, then train loss down to 0.09 while dev falls 0.73 -> 0.68."""
    hist = pd.DataFrame({"epoch": range(10), "train_loss": [1.5, 1.2, .9, .7, .5, .4, .3, .2, .12, .09],
                         "dev_mean": [.4, .55, .62, .68, .71, .73, .72, .70, .69, .68]})
    text = T.learning_curve(hist, 5, cap=30, name="biformer")
    assert "best dev mean 0.730 at epoch 5" in text and "from 0.40 to 0.09" in text and "0.680" in text
    assert "overfitting" in text and "after 10 of 30 epochs" in text
    rising = T.learning_curve(hist.assign(dev_mean=np.linspace(.1, .9, 10)), 9, cap=10)
    assert "overfitting" not in rising and "still rising" in rising and "all 10 epochs" in rising


def test_fusion_gain_compares_best_dev_means():
    h = lambda v: pd.DataFrame({"dev_mean": v})
    ahead = T.fusion_gain({"biformer": h([.5, .8]), "audio_only": h([.6]), "text_only": h([.7])}, "biformer")
    assert "biformer 0.800 against audio_only 0.600, text_only 0.700" in ahead and "is ahead of" in ahead
    assert "not ahead" in T.fusion_gain({"biformer": h([.5]), "audio_only": h([.6])}, "biformer")


def test_largest_confusions_are_read_from_the_matrix():
    """The English matrix of the issue: happy -> surprise 0.31 and surprise -> anger 0.25 lead; anger -> happy is
    only 0.06, so the takeaway must not call the errors "mostly anger/happy"."""
    cm = np.diag([16.0] * 7)
    h, s, a = CLASSES.index("happy"), CLASSES.index("surprise"), CLASSES.index("anger")
    cm[h, h], cm[h, s] = 11, 5       # 5/16 = 0.31
    cm[s, s], cm[s, a] = 12, 4       # 4/16 = 0.25
    cm[a, a], cm[a, h] = 15, 1       # 1/16 = 0.06
    text = T.largest_confusions({"demo_en": cm.tolist()}, top=2)
    assert "demo_en: happy → surprise 0.31, surprise → anger 0.25" in text
    assert "none of them is a pair the demo voices alike" in text
    text3 = T.largest_confusions({"demo_en": cm.tolist()}, top=3)
    assert "anger → happy 0.06" in text3 and "1 of them is a pair" in text3


def test_paper_comparison_replaces_a_table_without_our_numbers():
    paper = pd.DataFrame({"setting": ["bimodal", "bimodal"], "corpus": ["meld", "resd"], "metric": ["uar", "uar"],
                          "paper (reported)": [38.54, 67.89], "ours (test, %)": [None, None]})
    text = T.paper_comparison(paper)
    assert "trained on MELD or RESD" in text and "bimodal: MELD UAR 38.54; bimodal: RESD UAR 67.89" in text
    assert T.paper_comparison(paper.assign(**{"ours (test, %)": [40.0, None]})) is None


def test_real_text_reads_the_best_row_and_the_majority_baseline():
    md = ("| step | encoder | variant | WF1 | UAR | WAR |\n|---|---|---|---|---|---|\n"
          "| majority | - | - | 30.5 | 14.3 | 47.4 |\n| mamba | e5 | x | 58.4 ± 0.8 | 37.0 ± 0.9 | 59.7 |\n"
          "| lr | e5 | - | 51.1 | 43.2 | 47.1 |\n")
    text = T.real_text(md)
    assert "best WF1 is 58.4 (mamba e5 x), 27.9 points above" in text and "its UAR is 37.0" in text
    assert "best UAR of any row 43.2" in text and "47.4 % of the dev clips" in text


def _prediction(label, audio, text, fused, truth=None):
    row = {"path": "x.wav", "label": label, "true label": truth, "error": None}
    for source, probs in (("audio", audio), ("text", text), ("fused", fused)):
        row.update({f"{source}_{c}": p for c, p in zip(CLASSES, probs)})
    return row


def _probs(top_class, p):
    rest = (1 - p) / 6
    return [p if c == top_class else rest for c in CLASSES]


def test_fusion_behaviour_reports_a_confident_fusion_over_two_unsure_modalities():
    """Clip 3 of the issue: audio and text top out near 0.47 and the fusion says neutral at about 0.75."""
    table = pd.DataFrame([_prediction("sad", _probs("sad", .9), _probs("anger", .6), _probs("sad", .9)),
                          _prediction("anger", _probs("sad", .4), _probs("anger", .8), _probs("anger", .7)),
                          _prediction("neutral", _probs("sad", .47), _probs("fear", .46), _probs("neutral", .75))])
    text = T.fusion_behaviour(table)
    assert "on 2 of 3 clips" in text and "clip 3: audio 0.47, text 0.46, fused neutral 0.75" in text
    assert "on 1 clip(s)" in text and "confident anyway on 1 of them: it reads" in text
    assert "so is the fusion" not in text
    unsure = T.fusion_behaviour(table.iloc[2:].assign(fused_neutral=0.3))
    assert "confident anyway on 0 of them." in unsure and "it reads" not in unsure


def test_right_and_wrong_describes_the_wrong_clip():
    table = pd.DataFrame([_prediction("sad", _probs("sad", .9), _probs("sad", .6), _probs("sad", .9), "sad"),
                          _prediction("anger", _probs("happy", .5), _probs("anger", .8), _probs("anger", .7),
                                      "happy")])
    text = T.right_and_wrong(table)
    assert "1 of 2 clips right" in text and "a happy clip called anger: audio said happy (0.50), text anger (0.80)" \
        in text
    assert math.isnan(T._top({"audio_sad": None}, "audio")[1])
    other = table.assign(label=["sad", "sad"], **{"true label": ["sad", "anger"]})
    assert "is an anger clip called sad" in T.right_and_wrong(other)


@pytest.mark.parametrize("fn", [T.class_balance, T.sequence_lengths])
def test_every_takeaway_has_the_one_format(fn):
    arg = _counts([("a", "train", 4)]) if fn is T.class_balance else pd.DataFrame(
        {"audio frames": [10], "text steps": [2]})
    text = fn(arg)
    assert text.startswith("*Takeaway: ") and text.endswith("*")
