"""LS-LLM (bber_utils.augment.ls_llm): reply parsing, validation, the backends (lexicon, a tiny random
transformers LM in both modes, an OpenAI-compatible stub, the reference files), the resumable cache, the
output table and the ``bber label`` command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bber_utils.augment import ls_llm
from bber_utils.augment.ls_llm.lexicon import cue_counts, lexicon_distribution
from bber_utils.augment.ls_llm import (CLASSES, LabelOutcome, Labeller, build_labeller, label_utterances,
                                       label_workdir, load_soft_labels, parse_reply, validate_distribution)
from tests.conftest import SHARED
from tests.openai_stub import StubReply

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest

REFERENCE_DIR = SHARED / "data" / "reference_llm_labels"


# ================================================================================================= parse_reply

PROBS = [0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03]


@pytest.mark.parametrize("reply", [
    "<think>\n\n</think>\n\n0.70000,0.10000,0.05000,0.05000,0.04000,0.03000,0.03000",
    "<think>\nThe speaker sounds calm, maybe 2 or 3 hints of joy.\n</think>\n0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03",
    "Here is the distribution (neutral, happy, sad, anger, surprise, disgust, fear):\n"
    "0.70000, 0.10000, 0.05000, 0.05000, 0.04000, 0.03000, 0.03000\nThe speaker is mostly calm.",
    "Fear: 0.03\nDisgust: 0.03\nSurprise: 0.04\nAnger: 0.05\nSad: 0.05\nHappy: 0.1\nNeutral: 0.7",
    "- **Neutral**: 0.70\n- **Happiness**: 0.10\n- **Sadness**: 0.05\n- **Anger**: 0.05\n- **Surprise**: 0.04\n"
    "- **Disgust**: 0.03\n- **Fear**: 0.03\n\nThese sum to 1.",
    "Нейтральность: 0.70, Радость: 0.10, Грусть: 0.05, Злость: 0.05, Удивление: 0.04, Отвращение: 0.03, Страх: 0.03",
    "neutral = 70%, happy = 10%, sad = 5%, anger = 5%, surprise = 4%, disgust = 3%, fear = 3%",
    "70, 10, 5, 5, 4, 3, 3",
    "[0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03]",
    '{"neutral": 0.7, "happy": 0.1, "sad": 0.05, "anger": 0.05, "surprise": 0.04, "disgust": 0.03, "fear": 0.03}',
    "0.70000, 0.10000, 0.05000, 0.05000, 0.04000, 0.03000, 0.03000\nSum: 1.00000 (7 values, as asked)",
    "1. 0.7\n2. 0.1\n3. 0.05\n4. 0.05\n5. 0.04\n6. 0.03\n7. 0.03",
    "Draft: neutral: 0.5, happy: 0.5\nFinal answer:\nneutral: 0.7, happy: 0.1, sad: 0.05, anger: 0.05, "
    "surprise: 0.04, disgust: 0.03, fear: 0.03",
    "assistant\nneutral (calm): 0.7\nhappy (joy): 0.1\nsad: 0.05\nanger: 0.05\nsurprise: 0.04\ndisgust: 0.03\n"
    "fear: 0.03",
])
def test_parse_reply_reads_real_reply_shapes(reply):
    assert parse_reply(reply) == pytest.approx(PROBS)


@pytest.mark.parametrize("reply", [
    "",
    "I cannot determine the emotion of this utterance.",
    "0.5, 0.2, 0.1, 0.1, 0.1, 0.0",  # six numbers
    "<think>\nneutral: 0.7, happy: 0.1, sad: 0.05, anger: 0.05, surprise: 0.04, disgust: 0.03, fear: 0.03",  # unfinished
    "neutral: 0.7, happy: 0.3",
])
def test_parse_reply_returns_none_without_an_answer(reply):
    assert parse_reply(reply) is None


def test_parse_reply_keeps_small_negatives_for_validation():
    assert parse_reply("0.9, 0.1, -0.00001, 0, 0, 0, 0") == pytest.approx([0.9, 0.1, -0.00001, 0, 0, 0, 0])


# ======================================================================================== validate_distribution


def test_validate_ok_distribution_is_unchanged():
    dist, status, reason = validate_distribution(PROBS, "neutral")
    assert status == "ok" and reason == "" and np.allclose(dist, PROBS)


def test_validate_clips_tiny_negatives_and_renormalises():
    dist, status, reason = validate_distribution([0.8, 0.1, -1e-5, 0.05, 0.05, 0.0, -2e-5], "neutral")
    assert status == "repaired" and "clipped 2 tiny negative values" in reason
    assert (dist >= 0).all() and dist.sum() == pytest.approx(1.0)


def test_validate_rejects_real_negatives_wrong_length_nan_zero_and_uniform():
    assert validate_distribution([0.9, 0.2, -0.1, 0, 0, 0, 0], "neutral")[1:] == (
        "rejected", "negative value -0.1 for sad")
    assert validate_distribution([0.5, 0.5], "neutral")[0] is None
    assert validate_distribution([np.nan, 0, 0, 0, 0, 0, 1], "fear")[1] == "rejected"
    assert validate_distribution([0] * 7, "fear")[2] == "all values are zero"
    assert validate_distribution([1 / 7] * 7, "fear")[2] == "all seven values are equal"
    assert validate_distribution(None, "fear")[2] == "no 7 numbers found in the reply"


def test_validate_renormalises_a_wrong_sum():
    dist, status, reason = validate_distribution([v * 0.8 for v in PROBS], "neutral")
    assert status == "repaired" and reason.startswith("renormalised (sum was 0.8")
    assert np.allclose(dist, PROBS)
    assert validate_distribution([v * 1.005 for v in PROBS], "neutral")[1] == "ok"  # rounding is not a repair


def test_validate_true_label_not_highest_swap_or_reject():
    values = [0.1, 0.6, 0.05, 0.05, 0.1, 0.05, 0.05]  # happy highest, true label surprise
    dist, status, reason = validate_distribution(values, "surprise", policy="swap")
    assert status == "repaired" and reason == "true label not highest: swapped surprise with happy"
    assert dist[CLASSES.index("surprise")] == pytest.approx(0.6) and dist[CLASSES.index("happy")] == pytest.approx(0.1)
    assert sorted(dist) == pytest.approx(sorted(values))  # same values, same entropy
    assert validate_distribution(values, "surprise", policy="reject")[1] == "rejected"


def test_validate_breaks_a_tie_at_the_top_for_the_true_label():
    dist, status, reason = validate_distribution([0.4, 0.4, 0.2, 0, 0, 0, 0], "happy")
    assert status == "repaired" and "tie" in reason
    assert dist.argmax() == CLASSES.index("happy") and dist[1] > dist[0] and dist.sum() == pytest.approx(1.0)


# ================================================================================================ reference files


def _reference_files():
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference label files not available: {REFERENCE_DIR} is absent")
    files = sorted(REFERENCE_DIR.glob("*.csv"))
    if not files:
        pytest.skip(f"no reference label files in {REFERENCE_DIR}")
    return files


def test_parser_recovers_the_published_probabilities_from_response_clean():
    """Parsing ``response_clean`` and renormalising gives the published columns (up to the reference's 5-decimal
    rounding and its tie-breaking noise of 1e-5)."""
    for f in _reference_files():
        df = pd.read_csv(f)
        published = df[list(CLASSES)].to_numpy(dtype=float)
        errors = []
        for reply, row in zip(df["response_clean"], published):
            v = parse_reply(reply)
            assert v is not None, f"{f.name}: could not parse {reply!r}"
            v = np.asarray(v) / np.sum(v)
            errors.append(np.abs(v - row).max())
        assert max(errors) < 2e-4, f.name
        assert np.mean(np.asarray(errors) < 1e-4) > 0.99, f.name


def test_reference_file_loads_as_is_keyed_by_utt_id_and_validates():
    for f in _reference_files():
        ref = ls_llm.load_reference_labels(f)  # corpus inferred per row
        raw = pd.read_csv(f)
        assert len(ref) == len(raw) and list(raw.columns) == [c for c in ref.columns if c in raw.columns]
        corpus = "meld" if "meld" in f.name else "resd"
        assert (ref["corpus"] == corpus).all()
        assert ref.index[0] == f"{corpus}-train-{raw['video_name'].iloc[0]}"
        soft = load_soft_labels(f, usable_only=False)
        assert list(soft.columns[:len(ls_llm.SOFT_LABEL_COLUMNS)]) == ls_llm.SOFT_LABEL_COLUMNS
        assert set(soft["status"]) <= {"ok", "repaired"}
        # the reference never enforced "true label highest": every such row is repaired by the swap, none lost
        disagree = (raw["llm_best_label"] != raw["ground_truth"]).to_numpy()
        swapped = soft["reason"].str.contains("swapped").to_numpy()
        tie = soft["reason"].str.contains("tie at the top").to_numpy()
        assert disagree.any() and not (disagree & ~(swapped | tie)).any()  # every disagreement is repaired
        assert not (swapped & ~disagree).any()  # and nothing else is swapped
        probs = soft[list(CLASSES)].to_numpy()
        assert (probs >= 0).all() and np.allclose(probs.sum(1), 1.0)
        assert (probs.argmax(1) == soft["label"].map(CLASSES.index).to_numpy()).all()


def test_reference_file_rejects_a_table_of_the_wrong_shape(tmp_path):
    bad = tmp_path / "x_emotions_meld.csv"
    pd.DataFrame({"video_name": ["dia0_utt0"], "text": ["hi"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"x_emotions_meld.csv: not a reference label file, missing columns"):
        ls_llm.load_reference_labels(bad)


# ========================================================================================================== lexicon


def test_lexicon_is_a_valid_distribution_with_the_true_label_highest():
    for text in ("I am so happy to see you!", "Мне страшно, помоги!", "", "What? Really? Фу, отвратительно."):
        for label in CLASSES:
            d = lexicon_distribution(text, label)
            assert d.shape == (7,) and d.min() > 0 and d.sum() == pytest.approx(1.0)
            assert d.argmax() == CLASSES.index(label)
            assert validate_distribution(d, label)[1] == "ok"


def test_lexicon_cues_move_mass_in_both_languages():
    assert cue_counts("Мне так страшно, я боюсь")[CLASSES.index("fear")] == 2
    assert cue_counts("I'm so happy, what a wonderful day")[CLASSES.index("happy")] == 2
    plain = lexicon_distribution("We meet at noon.", "happy")
    scared = lexicon_distribution("Мне страшно.", "happy")
    assert scared[CLASSES.index("fear")] > plain[CLASSES.index("fear")]
    assert scared[CLASSES.index("happy")] < plain[CLASSES.index("happy")]  # cues disagree: less sure


# =================================================================================================== cache, resume


def _table(n=6, corpus="demo_en"):
    texts = ["I am so glad!", "Фу, какая гадость.", "Мне страшно.", "What? Really?", "We meet at noon.",
             "Leave me alone, I hate this."]
    return pd.DataFrame({"utt_id": [f"{corpus}-train-{i}" for i in range(n)], "text": (texts * 3)[:n],
                         "label": [CLASSES[(i * 3) % 7] for i in range(n)], "corpus": corpus})


class CountingLabeller(Labeller):
    """Lexicon answers; counts what it is asked; raises after ``fail_after`` utterances."""

    backend, model, mode = "counting", "count-v1", "generate"

    def __init__(self, fail_after=None):
        self.asked: list[str] = []
        self.fail_after = fail_after

    def label(self, requests):
        out = []
        for r in requests:
            if self.fail_after is not None and len(self.asked) >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.asked.append(r.utt_id)
            d = lexicon_distribution(r.text, r.label)
            out.append(LabelOutcome("raw " + r.utt_id, list(d)))
        return out


def test_interrupted_run_resumes_and_computes_only_the_rest(tmp_path):
    df = _table(7)
    first = CountingLabeller(fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        label_utterances(df, first, tmp_path, batch_size=2, progress=False)
    assert first.asked == list(df["utt_id"][:4])  # two whole batches reached the cache
    second = CountingLabeller()
    table = label_utterances(df, second, tmp_path, batch_size=2, progress=False)
    assert second.asked == list(df["utt_id"][4:])
    assert table.attrs["computed"] == 3 and (table["status"] == "ok").all()
    # a third run asks nothing; a changed text is asked again (the key holds a hash of text and label)
    third = CountingLabeller()
    df2 = df.copy()
    df2.loc[0, "text"] = "A different sentence."
    label_utterances(df2, third, tmp_path, batch_size=2, progress=False)
    assert third.asked == [df["utt_id"][0]]


def test_cache_keeps_provenance_and_survives_a_cut_line(tmp_path):
    df = _table(3)
    table = label_utterances(df, CountingLabeller(), tmp_path, progress=False)
    cache = Path(table.attrs["cache"])
    entries = [json.loads(x) for x in cache.read_text(encoding="utf-8").splitlines()]
    assert {"key", "utt_id", "backend", "model", "prompt_version", "mode", "raw", "values", "status",
            "reason"} <= set(entries[0])
    assert entries[0]["backend"] == "counting" and entries[0]["raw"] == "raw demo_en-train-0"
    with open(cache, "a", encoding="utf-8") as f:
        f.write('{"key": "demo_en-train-9|abc", "ut')  # a line cut by a crash
    again = label_utterances(df, CountingLabeller(), tmp_path, progress=False)
    assert again.attrs["computed"] == 0 and again.attrs["cache_bad_lines"] == 1


def test_backend_errors_are_not_cached_and_are_retried(tmp_path):
    class Flaky(CountingLabeller):
        def label(self, requests):
            out = super().label(requests)
            out[0] = LabelOutcome("", None, error="HTTP 503")
            return out

    df = _table(3)
    table = label_utterances(df, Flaky(), tmp_path, batch_size=3, progress=False)
    assert list(table["status"]) == ["error", "ok", "ok"] and table["reason"][0] == "HTTP 503"
    retry = CountingLabeller()
    label_utterances(df, retry, tmp_path, batch_size=3, progress=False)
    assert retry.asked == [df["utt_id"][0]]


# ============================================================================================= output + workdir


def _workdir_with_manifests(root: Path) -> Path:
    from bber_utils.corpora.manifest import save_manifest
    from bber_utils.core.paths import run_dirs

    dirs = run_dirs(root)
    for corpus, lang in (("demo_en", "en"), ("demo_ru", "ru")):
        t = _table(5, corpus)
        m = pd.DataFrame({"utt_id": t["utt_id"], "corpus": corpus, "language": lang, "split": "train",
                          "audio_path": "/nonexistent.wav", "start_s": 0.0, "end_s": np.nan, "duration_s": 1.0,
                          "text": t["text"], "label": t["label"], "source": "original"})
        save_manifest(m, dirs.manifest(corpus, "train"))
        save_manifest(m.assign(split="test", utt_id=m["utt_id"].str.replace("train", "test")),
                      dirs.manifest(corpus, "test"))
    return dirs.root


def test_label_workdir_writes_the_contract_table_the_trainer_reads(tmp_path):
    from bber_utils.train.dataset import soft_label_table

    wd = _workdir_with_manifests(tmp_path / "wd")
    table = label_workdir(wd, backend="lexicon", progress=False)
    path = wd / "ls_llm" / "soft_labels.parquet"
    assert path.exists() and len(table) == 10  # train splits of both corpora, nothing else
    back = load_soft_labels(path)
    assert list(back.columns[:len(ls_llm.SOFT_LABEL_COLUMNS)]) == ls_llm.SOFT_LABEL_COLUMNS
    assert set(back["backend"]) == {"lexicon (not an LLM)"} and set(back["corpus"]) == {"demo_en", "demo_ru"}
    assert set(back["utt_id"]) == set(table["utt_id"])
    lookup = soft_label_table(back)  # the trainer's reader accepts it
    assert lookup["demo_en-train-0"].shape == (7,)


def test_load_soft_labels_drops_rejected_rows_unless_asked(tmp_path):
    df = _table(3)

    class Bad(CountingLabeller):
        def label(self, requests):
            out = super().label(requests)
            out[1] = LabelOutcome("no numbers here", None)
            return out

    table = label_utterances(df, Bad(), tmp_path, progress=False)
    p = ls_llm.save_soft_labels(table, tmp_path / "soft.parquet")
    assert len(load_soft_labels(p)) == 2
    everything = load_soft_labels(p, usable_only=False)
    assert len(everything) == 3 and everything["status"][1] == "rejected"
    summary = ls_llm.status_summary(everything)
    assert summary.loc[summary["status"] == "rejected", "reason"].item() == "no 7 numbers found in the reply"


def test_summaries_for_the_notebook(tmp_path):
    table = label_utterances(_table(6), ls_llm.LexiconLabeller(), tmp_path, progress=False)
    m = ls_llm.mean_by_true_class(table)
    assert m.shape == (7, 7) and list(m.columns) == list(CLASSES)
    h = ls_llm.entropy(table)
    assert len(h) == 6 and (h > 0).all() and (h < np.log(7)).all()


# ========================================================================================== LLM backends for real


def test_transformers_generate_mode_records_replies_and_rejects_gibberish(tiny_llm_dir, tmp_path):
    """A random tiny LM writes no numbers: every reply is kept raw in the cache and rejected with a reason."""
    lab = build_labeller("transformers", str(tiny_llm_dir), mode="generate", device="cpu", batch_size=4,
                         max_new_tokens=8)
    assert (lab.backend, lab.mode) == ("transformers", "generate")
    table = label_utterances(_table(4), lab, tmp_path, batch_size=4, progress=False)
    assert set(table["status"]) <= {"rejected", "ok", "repaired"}
    assert table["model"].iloc[0] == str(tiny_llm_dir) and table["prompt_version"].iloc[0] == ls_llm.PROMPT_VERSION
    entries = [json.loads(x) for x in Path(table.attrs["cache"]).read_text(encoding="utf-8").splitlines()]
    assert len(entries) == 4 and all(isinstance(e["raw"], str) for e in entries)


def test_transformers_logits_mode_is_valid_and_batch_invariant(tiny_llm_dir, tmp_path):
    lab = build_labeller("transformers", str(tiny_llm_dir), mode="logits", device="cpu", batch_size=4)
    assert lab.mode == "logits"
    table = label_utterances(_table(5), lab, tmp_path / "a", batch_size=5, progress=False)
    assert set(table["status"]) <= {"ok", "repaired"}
    probs = table[list(CLASSES)].to_numpy()
    assert np.allclose(probs.sum(1), 1) and (probs.argmax(1) == table["label"].map(CLASSES.index)).all()
    one_by_one = label_utterances(_table(5), lab, tmp_path / "b", batch_size=1, progress=False)
    assert np.allclose(one_by_one[list(CLASSES)].to_numpy(), probs, atol=1e-5)


def test_logits_full_word_scoring_agrees_with_first_token_for_one_token_words(tiny_llm_dir):
    import torch

    lab = build_labeller("transformers", str(tiny_llm_dir), mode="logits", device="cpu")
    prompts = [lab.llm.render(ls_llm.build_messages("I am so glad!", "happy", "logits"))]
    first = lab.class_logprobs(prompts)
    lab.scoring = "full-word"
    full = lab.class_logprobs(prompts)
    tok = lab.llm.tokenizer
    for k, c in enumerate(CLASSES):
        if all(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in lab.variants[c]):
            assert torch.allclose(first[0, k], full[0, k], atol=1e-4)
    assert torch.isfinite(full).all()


def test_logits_mode_needs_transformers():
    with pytest.raises(ValueError, match="logits mode"):
        build_labeller("openai", "m", mode="logits", base_url="http://127.0.0.1:9/v1")


def test_openai_backend_parses_validates_and_surfaces_refusals(openai_stub, tmp_path):
    openai_stub.script(
        StubReply.text("Fear: 0.03\nDisgust: 0.03\nSurprise: 0.04\nAnger: 0.05\nSad: 0.05\nHappy: 0.1\nNeutral: 0.7"),
        StubReply.refused("I can't label emotions."),
        StubReply.text("0.1, 0.6, 0.1, 0.1, 0.05, 0.03, 0.02"),  # true label (sad) not highest
    )
    lab = build_labeller("openai", "stub-model", base_url=openai_stub.url, api_key="k", concurrency=1)
    df = _table(3).assign(label=["neutral", "happy", "sad"])
    table = label_utterances(df, lab, tmp_path, batch_size=3, progress=False)
    assert list(table["status"]) == ["ok", "rejected", "repaired"]
    assert table["reason"][2] == "true label not highest: swapped sad with happy"
    assert table["llm_argmax"][2] == "happy"
    sent = openai_stub.requests[0]["messages"][0]["content"]
    assert '"neutral"' in sent and "I am so glad!" in sent and "neutral, happy, sad, anger" in sent
    entries = [json.loads(x) for x in Path(table.attrs["cache"]).read_text(encoding="utf-8").splitlines()]
    assert entries[1]["raw"] == "[refused] I can't label emotions." and entries[1]["status"] == "rejected"


# ================================================================================================================ CLI


def _parser():
    p = argparse.ArgumentParser(prog="bber")
    ls_llm.register_cli(p.add_subparsers(dest="command"))
    return p


def test_cli_label_lexicon(tmp_path, capsys):
    wd = _workdir_with_manifests(tmp_path / "wd")
    args = _parser().parse_args(["label", "--workdir", str(wd), "--backend", "lexicon"])
    assert args.func(args) == 0
    assert (wd / "ls_llm" / "soft_labels.parquet").exists()
    assert "10 utterances" in capsys.readouterr().out


def test_cli_label_reports_an_unavailable_llm(tmp_path, capsys):
    wd = _workdir_with_manifests(tmp_path / "wd")
    args = _parser().parse_args(["label", "--workdir", str(wd), "--backend", "transformers", "--model",
                                 str(tmp_path / "no_model")])
    assert args.func(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_openai_server_errors_become_error_rows_that_are_retried(openai_stub, tmp_path):
    openai_stub.script(StubReply.error(500), StubReply.text("0.1, 0.6, 0.1, 0.1, 0.05, 0.03, 0.02"))
    lab = build_labeller("openai", "stub-model", base_url=openai_stub.url, api_key="k", max_retries=0,
                         concurrency=1)
    df = _table(2).assign(label=["neutral", "happy"])
    table = label_utterances(df, lab, tmp_path, batch_size=2, progress=False)
    assert list(table["status"]) == ["error", "ok"] and "HTTP 500" in table["reason"][0]
    openai_stub.script(StubReply.text("0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03"))
    again = label_utterances(df, lab, tmp_path, batch_size=2, progress=False)
    assert again.attrs["computed"] == 1 and list(again["status"]) == ["ok", "ok"]
    assert len(openai_stub.requests) == 3


def test_decoding_settings_are_part_of_the_cache_identity(tmp_path):
    class EchoLLM:
        backend, model_name = "transformers", "fake"

        def chat_batch(self, convs, **kw):
            return ["0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03"] * len(convs)

    short = ls_llm.GenerateLabeller(EchoLLM(), max_new_tokens=8)
    long = ls_llm.GenerateLabeller(EchoLLM(), max_new_tokens=96)
    assert ls_llm.LabelCache(tmp_path, short).path != ls_llm.LabelCache(tmp_path, long).path
    assert label_utterances(_table(2), short, tmp_path, progress=False).attrs["computed"] == 2
    assert label_utterances(_table(2), long, tmp_path, progress=False).attrs["computed"] == 2
    assert label_utterances(_table(2), long, tmp_path, progress=False).attrs["computed"] == 0


def test_a_run_with_no_usable_label_keeps_the_previous_table(tmp_path):
    wd = _workdir_with_manifests(tmp_path / "wd")
    label_workdir(wd, backend="lexicon", progress=False)
    before = (wd / "ls_llm" / "soft_labels.parquet").read_bytes()

    class Nothing(CountingLabeller):
        def label(self, requests):
            return [LabelOutcome("", None, error="not in the reference file") for _ in requests]

    with pytest.raises(ValueError, match="no usable soft label .* left unchanged"):
        label_workdir(wd, labeller=Nothing(), progress=False)
    assert (wd / "ls_llm" / "soft_labels.parquet").read_bytes() == before


def test_reference_backend_labels_manifest_rows_by_utt_id(tmp_path):
    f = next((p for p in _reference_files() if "resd" in p.name), None)
    if f is None:
        pytest.skip("no RESD reference label file")
    raw = pd.read_csv(f).head(5)
    df = pd.DataFrame({"utt_id": ["resd-train-" + n for n in raw["video_name"]] + ["resd-train-not_there"],
                       "text": list(raw["text"]) + ["x"], "label": list(raw["ground_truth"]) + ["fear"]})
    lab = build_labeller("reference", reference_csv=str(f))
    assert (lab.backend, lab.model) == ("reference", "Qwen3-4B")
    table = label_utterances(df, lab, tmp_path, progress=False)
    assert list(table["status"][:5].isin(["ok", "repaired"])) == [True] * 5
    assert table["status"][5] == "error" and table["reason"][5] == "not in the reference file"
    ok = table["status"][:5] == "ok"
    assert np.allclose(table.loc[ok.to_numpy().nonzero()[0], list(CLASSES)].to_numpy(),
                       raw.loc[ok.to_numpy(), list(CLASSES)].to_numpy(), atol=2e-5)
    assert table["raw"][0] == raw["response_clean"][0]


def test_openai_concurrent_requests_keep_each_answer_with_its_utterance(openai_stub, tmp_path):
    """With several requests in flight, each reply still lands on the utterance it was asked for."""
    import re

    def answer(body):  # the stub puts all the mass on the label the prompt names, after a random short delay
        label = re.search(r'labelled this utterance as "(\w+)"', body["messages"][0]["content"])[1]
        values = [0.9 if c == label else 0.1 / 6 for c in CLASSES]
        return StubReply.text(", ".join(f"{v:.5f}" for v in values), delay_s=0.05 * (hash(label) % 3))

    openai_stub.responder = answer
    lab = build_labeller("openai", "stub-model", base_url=openai_stub.url, api_key="k", concurrency=4)
    df = _table(7).assign(label=list(CLASSES))
    table = label_utterances(df, lab, tmp_path, batch_size=7, progress=False)
    assert (table["status"] == "ok").all() and (table["llm_argmax"] == table["label"]).all()
    assert len(openai_stub.requests) == 7


# ================================================================================================== sharding


def test_two_shards_then_a_merge_equal_one_unsharded_run(tmp_path):
    wd_one, wd_two = _workdir_with_manifests(tmp_path / "one"), _workdir_with_manifests(tmp_path / "two")
    whole = label_workdir(wd_one, labeller=CountingLabeller(), progress=False)
    asked = []
    for i in range(2):
        labeller = CountingLabeller()
        part = label_workdir(wd_two, labeller=labeller, progress=False, shard=(i, 2))
        assert list(part["utt_id"]) == list(whole["utt_id"][i::2]) == labeller.asked
        asked += labeller.asked
    assert sorted(asked) == sorted(whole["utt_id"])  # every utterance asked once, by one shard
    assert not (wd_two / "ls_llm" / "soft_labels.parquet").exists()  # a shard writes no table
    cache_dir = wd_two / "ls_llm" / "cache"
    assert len(list(cache_dir.glob("*.part-*-of-002.jsonl"))) == 2
    merger = CountingLabeller()
    merged = label_workdir(wd_two, labeller=merger, progress=False)
    assert merger.asked == [] and merged.attrs["computed"] == 0
    assert not list(cache_dir.glob("*.part-*")) and len(list(cache_dir.glob("*.jsonl"))) == 1
    pd.testing.assert_frame_equal(load_soft_labels(wd_two / "ls_llm" / "soft_labels.parquet"),
                                  load_soft_labels(wd_one / "ls_llm" / "soft_labels.parquet"))


def test_an_interrupted_shard_resumes_and_the_merge_labels_the_rest(tmp_path):
    df = _table(7)
    first = CountingLabeller(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        label_utterances(df, first, tmp_path, batch_size=1, progress=False, shard=(1, 2))
    assert first.asked == ["demo_en-train-1", "demo_en-train-3"]
    again = CountingLabeller()
    label_utterances(df, again, tmp_path, batch_size=1, progress=False, shard="1/2")
    assert again.asked == ["demo_en-train-5"]
    rest = CountingLabeller()  # shard 0 never ran: the unsharded call merges shard 1 and asks shard 0's rows
    table = label_utterances(df, rest, tmp_path, batch_size=1, progress=False)
    assert rest.asked == list(df["utt_id"][0::2]) and (table["status"] == "ok").all()


def test_a_bad_label_shard_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="shard"):
        label_utterances(_table(3), CountingLabeller(), tmp_path, progress=False, shard=(3, 2))


def test_cli_label_shards_then_merges(tmp_path, capsys):
    wd = _workdir_with_manifests(tmp_path / "wd")
    for shard in ("0/2", "1/2"):
        args = _parser().parse_args(["label", "--workdir", str(wd), "--backend", "lexicon", "--shard", shard])
        assert args.func(args) == 0
        assert f"shard {shard}: 5 utterances, 5 asked now" in capsys.readouterr().out
    assert not (wd / "ls_llm" / "soft_labels.parquet").exists()
    args = _parser().parse_args(["label", "--workdir", str(wd), "--backend", "lexicon"])
    assert args.func(args) == 0
    assert "10 utterances, 0 asked now" in capsys.readouterr().out
    args = _parser().parse_args(["label", "--workdir", str(wd), "--backend", "lexicon", "--shard", "2/2"])
    assert args.func(args) == 2 and "shard" in capsys.readouterr().err


# ================================================================= issue 18/20: reasons and re-reading old caches


class _ScriptedLLM:
    """A transformers-like chat LLM that answers ``reply`` to everything."""

    backend, model_name = "transformers", "scripted"

    def __init__(self, reply):
        self.reply = reply

    def chat_batch(self, convs, **kw):
        return [self.reply] * len(convs)


def test_a_prose_reply_is_rejected_in_the_table_with_the_parsers_reason(tmp_path):
    lab = ls_llm.GenerateLabeller(_ScriptedLLM("I waited 2 hours, 3 times, for 5 people at gate 12 on 7 May 2021 "
                                               "at 9"))
    table = label_utterances(_table(2), lab, tmp_path, progress=False)
    assert (table["status"] == "rejected").all() and table[list(CLASSES)].isna().all().all()
    assert table["reason"].str.contains("prose").all()


def test_named_replies_land_on_their_classes_in_the_table(tmp_path):
    reply = "Fear (0.20), Neutral (0.60), Happy (0.05), Disgust (0.05), Sad (0.04), Anger (0.03), Surprise (0.03)"
    table = label_utterances(_table(1).assign(label="neutral"), ls_llm.GenerateLabeller(_ScriptedLLM(reply)),
                             tmp_path, progress=False)
    assert table["status"][0] == "ok"
    assert table.loc[0, list(CLASSES)].to_numpy(dtype=float) == pytest.approx([0.6, 0.05, 0.04, 0.03, 0.03, 0.05, 0.2])


def test_cached_replies_read_by_an_older_parser_are_read_again(tmp_path):
    """A cache written before the strict parser holds values the old parser misread: they are not trusted."""
    reply = "neutral 0.60, fear 0.20, happy 0.05, disgust 0.05, sad 0.04, anger 0.03, surprise 0.03"
    lab = ls_llm.GenerateLabeller(_ScriptedLLM(reply))
    df = _table(1).assign(label="neutral")
    cache = ls_llm.LabelCache(tmp_path, lab)
    key = ls_llm.request_key(ls_llm.LabelRequest(df["utt_id"][0], df["text"][0], "neutral"))
    cache.add([dict(key=key, utt_id=df["utt_id"][0], raw=reply, values=[0.6, 0.2, 0.05, 0.05, 0.04, 0.03, 0.03],
                    status="ok", reason="")])  # the old parser's reading: in the order written, no "parser"
    table = label_utterances(df, lab, tmp_path, progress=False)
    assert table.attrs["computed"] == 0  # nothing asked again: the raw reply is re-read
    assert table.loc[0, list(CLASSES)].to_numpy(dtype=float) == pytest.approx([0.6, 0.05, 0.04, 0.03, 0.03, 0.05, 0.2])


def test_label_in_a_read_only_workdir_says_so_in_one_line(tmp_path, capsys, read_only):
    """A read-only work folder ended in an OSError traceback (the cache could not be created)."""
    from bber_utils import cli

    wd = _workdir_with_manifests(tmp_path / "wd")
    before = read_only.snapshot(wd)
    read_only(wd)
    rc = cli.main(["label", "--workdir", str(wd), "--backend", "lexicon"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot write to {wd / 'ls_llm'}: read-only (Permission denied); labelling writes" in err
    assert read_only.snapshot(wd) == before


# ================================================================================================ concurrency


def test_two_runs_at_once_ask_each_utterance_once(tmp_path, capsys):
    """Two ``label_workdir`` at once (threads, each with its own labeller and cache object: what two processes
    have; the lock is ``flock`` on the cache's own lock file, which also excludes two descriptors of one
    process) used to ask every utterance twice. The labeller's first call waits up to 2 s for the other run's
    first call: without a lock both arrive and both ask everything."""
    import threading

    wd = _workdir_with_manifests(tmp_path / "wd")
    both_asking = threading.Barrier(2)

    class Meeting(CountingLabeller):
        def label(self, requests):
            if not self.asked:
                try:
                    both_asking.wait(timeout=2)
                except threading.BrokenBarrierError:
                    pass
            return super().label(requests)

    labellers, tables = [Meeting(), Meeting()], {}
    runs = [threading.Thread(target=lambda i=i: tables.update({i: label_workdir(
        wd, labeller=labellers[i], batch_size=2, progress=False)})) for i in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(60)
    asked = labellers[0].asked + labellers[1].asked
    assert sorted(asked) == sorted(set(asked)) and len(asked) == 10  # each of the 10 utterances once
    assert sorted(t.attrs["computed"] for t in tables.values()) == [0, 10]
    assert (tables[0]["status"] == "ok").all() and tables[0].equals(tables[1])
    assert "another run is labelling into" in capsys.readouterr().err


def test_two_label_processes_at_once_send_each_request_once(openai_stub, tmp_path):
    """Two real ``bber label`` processes against a counting OpenAI-compatible stub: 10 utterances, 10 requests
    (it was 20: paid API calls doubled). The stub holds its first reply until a second request comes (at most
    3 s), so without a lock both processes are asking at once."""
    import os
    import subprocess
    import sys
    import threading

    wd = _workdir_with_manifests(tmp_path / "wd")
    second = threading.Event()

    def answer(body):
        if len(openai_stub.requests) > 1:
            second.set()
        else:
            second.wait(3)
        return StubReply.text("0.7, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05")

    openai_stub.responder = answer
    argv = [sys.executable, "-m", "bber_utils.cli", "label", "--workdir", str(wd), "--backend", "openai",
            "--model", "stub-model", "--base-url", openai_stub.url, "--batch-size", "2", "--concurrency", "1",
            "--policy", "swap"]
    env = {**os.environ, "OPENAI_API_KEY": "k", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(openai_stub.requests) == 10  # the 10 train utterances of the two corpora, once each
    assert sorted("10 asked now" in out for out, _ in outs) == [False, True], outs


def test_the_lexicon_labeller_says_in_one_line_when_a_language_has_no_cue_words(tmp_path):
    import warnings

    from bber_utils.corpora.manifest import load_manifest, save_manifest
    from bber_utils.core.paths import run_dirs

    wd = _workdir_with_manifests(tmp_path / "wd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # en and ru: no warning
        label_workdir(wd, backend="lexicon", progress=False)
    path = run_dirs(wd).manifest("demo_ru", "train")
    save_manifest(load_manifest(path).assign(language="pl"), path)
    with pytest.warns(UserWarning, match=r"cue words for en, ru only; rows in pl .* use an LLM backend") as rec:
        label_workdir(wd, backend="lexicon", progress=False)
    assert all("\n" not in str(w.message) for w in rec)
