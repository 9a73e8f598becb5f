"""bber_utils.augment.tug_llm: LLM-written TUG templates through the loopback OpenAI stub — validation with
feedback, malformed replies, refusals, timeouts, missing keys, the per-emotion cache and the built-in fallback."""

from __future__ import annotations

import json
import socket

import pandas as pd
import pytest

from bber_utils.augment import tug_llm
from bber_utils.synthesis.templates import DIA_TAGS
from bber_utils.augment.tug_llm import (PROMPT_VERSION, build_template_prompt, corpus_examples, generate_templates,
                                        parse_template_reply, resolve_templates, template_cache_path,
                                        templates_table)
from bber_utils.corpora.manifest import save_manifest
from bber_utils.synthesis.llm import build_llm
from tests.openai_stub import StubReply
from tests.augment.common import BAD_TAG, VALID


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_prompt_names_emotion_examples_tags_and_placeholders():
    msgs = build_template_prompt("sad", "en", ["I miss her every day.", "It was my last chance."])
    user = msgs[-1]["content"]
    assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user"
    assert "Emotion: sad" in user and "English" in user
    assert "- I miss her every day." in user and "- It was my last chance." in user
    assert all(f"({t})" in user for t in DIA_TAGS)
    assert all(p in user for p in ("{s}", "{v}", "{i}", "{c}"))
    assert "agrees" not in user  # the agreement rule is for Russian only
    ru = build_template_prompt("fear", "ru", [])[-1]["content"]
    assert "Russian" in ru and "agrees" in ru and "Real Russian" not in ru  # no examples -> no example block
    with pytest.raises(ValueError, match="unknown emotion"):
        build_template_prompt("joy", "en", [])
    with pytest.raises(ValueError, match="TUG has no LLM template prompt for language"):
        build_template_prompt("sad", "de", [])


def test_parse_reply_tolerates_fences_and_rejects_non_json():
    assert parse_template_reply("```json\n" + json.dumps(VALID) + "\n```") == VALID
    assert parse_template_reply("Here you are: " + json.dumps(VALID) + " Enjoy!") == VALID
    with pytest.raises(ValueError, match="no JSON object"):
        parse_template_reply("I'm sorry, I can't help with that.")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_template_reply('{"subjects": ["a",]}')
    with pytest.raises(ValueError, match="incomplete"):
        parse_template_reply('{"subjects": ["a", "b"')


def test_invalid_reply_is_retried_with_the_errors_fed_back(openai_stub):
    openai_stub.script(StubReply.json(BAD_TAG), StubReply.json(VALID))
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url)
    result = generate_templates(llm, "happy", "en", ["A made-up example."], backoff_s=0)
    assert result.attempts == 2 and result.templates == VALID and result.report.ok
    assert any("(cries)" in e for e in result.errors[0])
    first, second = openai_stub.requests
    assert first["response_format"]["type"] == "json_schema"
    assert set(first["response_format"]["json_schema"]["schema"]["required"]) == set(VALID)
    # The retry continues the conversation: the bad answer, then the list of problems.
    assert second["messages"][-2]["role"] == "assistant" and "(cries)" in second["messages"][-2]["content"]
    assert "cannot be used" in second["messages"][-1]["content"] and "(cries)" in second["messages"][-1]["content"]


def test_malformed_reply_then_valid(openai_stub):
    openai_stub.script(StubReply.malformed(), StubReply.text("not json at all"), StubReply.json(VALID))
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, max_retries=0)
    result = generate_templates(llm, "happy", "en", [], backoff_s=0)
    assert result.attempts == 3 and result.templates == VALID
    assert "malformed" in result.errors[0][0] and "no JSON object" in result.errors[1][0]


def test_refusals_exhaust_the_attempts(openai_stub):
    openai_stub.script(*[StubReply.refused("I won't write that.")] * 2)
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url)
    result = generate_templates(llm, "anger", "en", [], max_attempts=2, backoff_s=0)
    assert result.templates is None and result.attempts == 2
    assert all("refused" in errs[0] for errs in result.errors)


def test_resolve_caches_each_emotion_and_reruns_for_free(openai_stub, tmp_path):
    openai_stub.script(StubReply.json(BAD_TAG), StubReply.json(VALID), StubReply.json(VALID))
    sets = resolve_templates(tmp_path, ["en"], "openai", llm_model="stub-model", base_url=openai_stub.url,
                             emotions=("happy", "surprise"), backoff_s=0)
    assert [sets[("en", e)].source for e in ("happy", "surprise")] == ["openai:stub-model"] * 2
    assert sets[("en", "happy")].attempts == 2 and sets[("en", "happy")].templates == VALID
    cache = template_cache_path(tmp_path, "stub-model", "happy", "en")
    assert cache.exists() and PROMPT_VERSION in cache.name and cache.parent.name == "en"
    assert json.loads(cache.read_text())["provenance"]["prompt_version"] == PROMPT_VERSION
    n_requests = len(openai_stub.requests)
    # A rerun against a dead server reads the cache and never calls it.
    again = resolve_templates(tmp_path, ["en"], "openai", llm_model="stub-model", base_url=_dead_url(),
                              emotions=("happy", "surprise"))
    assert all(ts.source == "openai:stub-model (cached)" for ts in again.values())
    assert again[("en", "happy")].templates == VALID and len(openai_stub.requests) == n_requests
    table = templates_table(again)
    assert list(table["emotion"]) == ["happy", "surprise"] and table["valid"].all()
    assert list(table["subjects"]) == [3, 3] and list(table["templates"]) == [2, 2]


def test_invalid_cache_is_regenerated(openai_stub, tmp_path):
    cache = template_cache_path(tmp_path, "stub-model", "sad", "en")
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"templates": BAD_TAG}))
    openai_stub.script(StubReply.json(VALID))
    sets = resolve_templates(tmp_path, ["en"], "openai", llm_model="stub-model", base_url=openai_stub.url,
                             emotions=("sad",), backoff_s=0)
    assert sets[("en", "sad")].source == "openai:stub-model" and len(openai_stub.requests) == 1


def test_never_valid_falls_back_to_builtin_with_the_reason(openai_stub, tmp_path):
    openai_stub.script(*[StubReply.json(BAD_TAG)] * 2)
    with pytest.warns(UserWarning, match="using the built-in"):
        sets = resolve_templates(tmp_path, ["en"], "openai", llm_model="stub-model", base_url=openai_stub.url,
                                 emotions=("fear",), max_attempts=2, backoff_s=0)
    ts = sets[("en", "fear")]
    assert ts.source == "builtin" and ts.report.ok and ts.attempts == 2
    assert "no valid templates after 2 attempts" in ts.note and "(cries)" in ts.note
    assert not template_cache_path(tmp_path, "stub-model", "fear", "en").exists()


def test_timeout_stops_asking_and_falls_back_for_every_emotion(openai_stub, tmp_path):
    openai_stub.script(StubReply.json(VALID, delay_s=3.0))
    with pytest.warns(UserWarning, match="LLM unavailable") as record:
        sets = resolve_templates(tmp_path, ["en", "ru"], "openai", llm_model="stub-model", base_url=openai_stub.url,
                                 emotions=("happy", "sad"), timeout=1.0, max_retries=0, backoff_s=0)
    assert len(openai_stub.requests) == 1  # one timed-out call; no emotion waits for it again
    assert len([w for w in record if "LLM unavailable" in str(w.message)]) == 1
    assert all(ts.source == "builtin" and "did not answer within" in ts.note for ts in sets.values())
    assert set(sets) == {("en", "happy"), ("en", "sad"), ("ru", "happy"), ("ru", "sad")}


def test_missing_key_and_unreachable_server_fall_back(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.warns(UserWarning, match="no API key"):
        sets = resolve_templates(tmp_path, ["en"], "openai", llm_model="gpt-4o", emotions=("neutral",))
    assert sets[("en", "neutral")].source == "builtin" and "OPENAI_API_KEY" in sets[("en", "neutral")].note
    with pytest.warns(UserWarning, match="cannot reach"):
        sets = resolve_templates(tmp_path, ["ru"], "openai", llm_model="m", base_url=_dead_url(), emotions=("sad",))
    assert "cannot reach" in sets[("ru", "sad")].note
    with pytest.raises(ValueError, match="needs llm_model"):
        resolve_templates(tmp_path, ["en"], "openai")
    with pytest.raises(ValueError, match="template source"):
        resolve_templates(tmp_path, ["en"], "chatgpt", llm_model="m")


def test_builtin_source_needs_no_llm(tmp_path):
    sets = resolve_templates(tmp_path, ["en", "ru"], "builtin")
    assert len(sets) == 14 and all(ts.source == "builtin" and ts.report.ok and not ts.note for ts in sets.values())
    assert not (tmp_path / "tug" / "templates").exists()


def _manifest(rows):
    return pd.DataFrame([dict(utt_id=u, corpus=c, language=lang, split="train", audio_path=f"/x/{u}.wav",
                              start_s=0.0, end_s=float("nan"), duration_s=1.0, text=t, label=lab, source=src)
                         for u, c, lang, t, lab, src in rows])


def test_corpus_examples_come_from_train_manifests_of_the_language(tmp_path):
    assert corpus_examples(tmp_path, "en", "happy") == []  # no manifests yet
    en = _manifest([(f"demo_en-train-{i}", "demo_en", "en", f"happy text {i}", "happy", "original")
                    for i in range(8)]
                   + [("demo_en-train-s", "demo_en", "en", "sad text", "sad", "original"),
                      ("demo_en-train-e", "demo_en", "en", "  ", "happy", "original"),
                      ("tug_en-train-happy_00000", "demo_en", "en", "synthetic text", "happy", "tug")])
    ru = _manifest([("demo_ru-train-0", "demo_ru", "ru", "русский текст", "happy", "original")])
    save_manifest(en, tmp_path / "manifests" / "demo_en_train.parquet")
    save_manifest(ru, tmp_path / "manifests" / "demo_ru_train.parquet")
    save_manifest(_manifest([("demo_en-dev-0", "demo_en", "en", "dev text", "happy", "original")]).assign(
        split="dev"), tmp_path / "manifests" / "demo_en_dev.parquet")
    picked = corpus_examples(tmp_path, "en", "happy", k=5, seed=1)
    assert len(picked) == 5 and len(set(picked)) == 5 and all(t.startswith("happy text") for t in picked)
    assert picked == corpus_examples(tmp_path, "en", "happy", k=5, seed=1)
    assert corpus_examples(tmp_path, "ru", "happy") == ["русский текст"]
    assert corpus_examples(tmp_path, "en", "sad") == ["sad text"]
    assert corpus_examples(tmp_path, "en", "fear") == []


def test_prompt_version_is_part_of_the_cache_key(tmp_path, monkeypatch):
    a = template_cache_path(tmp_path, "org/model:latest", "happy", "en")
    monkeypatch.setattr(tug_llm, "PROMPT_VERSION", "tug-prompt-v999")
    b = template_cache_path(tmp_path, "org/model:latest", "happy", "en")
    assert a != b and "/" not in a.name and a.name.startswith("happy__")
    assert template_cache_path(tmp_path, "org/model-a", "happy", "en") != template_cache_path(
        tmp_path, "org/model_a", "happy", "en")


@pytest.mark.slow
def test_transformers_source_loads_a_local_model_by_path(tmp_path):
    from tests.tiny_models import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path / "tiny_lm")
    # A random model writes no valid JSON: both attempts fail and the built-in templates are used.
    with pytest.warns(UserWarning, match="no valid templates after 2 attempts"):
        sets = resolve_templates(tmp_path, ["ru"], "transformers", llm_model=str(folder), emotions=("sad",),
                                 max_attempts=2, backoff_s=0, max_new_tokens=8, device="cpu")
    ts = sets[("ru", "sad")]
    assert ts.source == "builtin" and ts.attempts == 2 and ts.templates["templates"]
    with pytest.warns(UserWarning, match="does not exist"):
        sets = resolve_templates(tmp_path, ["en"], "transformers", llm_model=str(tmp_path / "no_such_model"),
                                 emotions=("sad",))
    assert sets[("en", "sad")].note.startswith("LLM unavailable")


def test_two_runs_at_once_ask_the_llm_once_per_emotion(openai_stub, tmp_path):
    """Two ``resolve_templates`` at once (threads, each with its own client) asked the LLM twice per emotion.
    The stub holds its first reply until a second request comes (at most 2 s): without a lock both ask."""
    import threading

    second = threading.Event()

    def answer(body):
        if len(openai_stub.requests) > 1:
            second.set()
        else:
            second.wait(2)
        return StubReply.json(VALID)

    openai_stub.responder = answer
    results = {}
    runs = [threading.Thread(target=lambda i=i: results.update({i: resolve_templates(
        tmp_path, ["en"], "openai", llm_model="stub-model", base_url=openai_stub.url, emotions=("happy", "sad"),
        backoff_s=0)})) for i in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(60)
    assert len(openai_stub.requests) == 2  # one per emotion
    sources = sorted(ts.source for r in results.values() for ts in r.values())
    assert sources == ["openai:stub-model"] * 2 + ["openai:stub-model (cached)"] * 2
