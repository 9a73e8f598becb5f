"""bber_utils.synthesis.llm: the OpenAI-compatible client against a loopback stub, and the transformers backend on a tiny
random causal LM saved to a folder and loaded by path (the real code path)."""

from __future__ import annotations

import json

import pytest

from bber_utils.synthesis.llm import LLMError, LLMRefusal, LLMUnavailable, OpenAIChatLLM, TransformersChatLLM, build_llm
from tests.openai_stub import StubReply

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest



USER = [{"role": "user", "content": "Say something."}]


# ---------------------------------------------------------------------------------------------- openai backend


def test_openai_normal_json_reply_and_request_contents(openai_stub):
    openai_stub.script(StubReply.json({"neutral": 0.9, "happy": 0.1}))
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k")
    assert (llm.backend, llm.model_name) == ("openai", "stub-model")
    schema = {"title": "dist", "type": "object", "properties": {"neutral": {"type": "number"}}}
    out = llm.chat(USER, json_schema=schema, max_new_tokens=17, temperature=0.0, seed=3)
    assert json.loads(out) == {"neutral": 0.9, "happy": 0.1}
    req = openai_stub.requests[-1]
    assert req["model"] == "stub-model" and req["max_tokens"] == 17 and req["seed"] == 3
    assert req["response_format"]["type"] == "json_schema"
    assert req["response_format"]["json_schema"]["schema"] == schema
    assert req["response_format"]["json_schema"]["name"] == "dist"
    llm.chat(USER, json_schema={"title": "Emotion distribution (v1)", "type": "object"})
    assert openai_stub.requests[-1]["response_format"]["json_schema"]["name"] == "Emotion_distribution__v1_"
    assert req["messages"] == USER  # the server enforces the schema: the prompt is not changed


def test_openai_falls_back_to_json_object_then_text(openai_stub):
    openai_stub.reject_formats = {"json_schema", "json_object"}
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k", max_retries=0)
    openai_stub.script(StubReply.text('{"x": 1}'))
    out = llm.chat(USER, json_schema={"type": "object"})
    assert out == '{"x": 1}'
    kinds = [(r.get("response_format") or {}).get("type") for r in openai_stub.requests]
    assert kinds == ["json_schema", "json_object", None]
    # in plain-text mode the schema is written into the prompt instead
    assert "JSON schema" in openai_stub.requests[-1]["messages"][-1]["content"]
    # the accepted level is remembered: the next call goes straight to plain text
    openai_stub.script(StubReply.text("{}"))
    llm.chat(USER, json_schema={"type": "object"})
    assert "response_format" not in openai_stub.requests[-1]


def test_openai_json_object_fallback_keeps_structured_mode(openai_stub):
    openai_stub.reject_formats = {"json_schema"}
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k", max_retries=0)
    openai_stub.script(StubReply.text("{}"))
    llm.chat(USER, json_schema={"type": "object"})
    assert openai_stub.requests[-1]["response_format"] == {"type": "json_object"}


def test_openai_switches_to_max_completion_tokens_when_asked(openai_stub):
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k", max_retries=0)
    openai_stub.script(StubReply(status=400, raw_body=json.dumps({"error": {
        "message": "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead."}}).encode()),
        StubReply.text("ok"), StubReply.text("ok again"))
    assert llm.chat(USER, max_new_tokens=9) == "ok"
    first, second = openai_stub.requests
    assert first["max_tokens"] == 9 and second["max_completion_tokens"] == 9 and "max_tokens" not in second
    llm.chat(USER)
    assert "max_completion_tokens" in openai_stub.requests[-1]


def test_openai_other_bad_request_is_an_error_and_not_remembered(openai_stub):
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k", max_retries=0)
    too_long = StubReply(status=400, raw_body=b'{"error": {"message": "context length exceeded"}}')
    openai_stub.script(too_long, too_long, too_long)
    with pytest.raises(LLMError, match="rejected the request"):
        llm.chat(USER, json_schema={"type": "object"})
    openai_stub.script(StubReply.text("{}"))
    llm.chat(USER, json_schema={"type": "object"})  # structured output is still tried first
    assert openai_stub.requests[-1]["response_format"]["type"] == "json_schema"


def test_openai_retries_a_500_then_succeeds(openai_stub):
    openai_stub.script(StubReply.error(500), StubReply.error(503), StubReply.text("fine"))
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k", max_retries=3)
    assert llm.chat(USER) == "fine"
    assert len(openai_stub.requests) == 3


def test_openai_gives_up_after_retries_with_clear_error(openai_stub):
    openai_stub.script(*[StubReply.error(500)] * 5)
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k", max_retries=1)
    with pytest.raises(LLMError, match="HTTP 500"):
        llm.chat(USER)
    assert len(openai_stub.requests) == 2  # first try + 1 retry


def test_openai_malformed_reply_is_an_llm_error(openai_stub):
    openai_stub.script(StubReply.malformed())  # a completion with no choices
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k", max_retries=0)
    with pytest.raises(LLMError, match="malformed reply from http://127.0.0.1"):
        llm.chat(USER)


def test_openai_non_json_body_is_an_llm_error(openai_stub):
    openai_stub.script(StubReply.malformed(b"<html>gateway says hi</html>"))
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k", max_retries=0)
    with pytest.raises(LLMError, match="malformed"):
        llm.chat(USER)


def test_openai_refusal_is_surfaced(openai_stub):
    openai_stub.script(StubReply.refused("I won't rate emotions."))
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k")
    with pytest.raises(LLMRefusal) as info:
        llm.chat(USER)
    assert info.value.refusal == "I won't rate emotions."


def test_openai_timeout_raises_unavailable_naming_the_url(openai_stub):
    openai_stub.script(StubReply.text("late", delay_s=2.0))
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k", timeout=0.3, max_retries=0)
    with pytest.raises(LLMUnavailable, match=r"127\.0\.0\.1.*did not answer within 0\.3 s"):
        llm.chat(USER)


def test_openai_unreachable_server_is_unavailable():
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LLMUnavailable, match=f"cannot reach the LLM server at {url}"):
        build_llm("openai", "m", base_url=url, api_key="k", timeout=2, max_retries=0)


def test_openai_missing_key_is_unavailable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMUnavailable, match="OPENAI_API_KEY"):
        build_llm("openai", "gpt-4o-mini")


def test_openai_key_from_environment(openai_stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url)
    assert isinstance(llm, OpenAIChatLLM) and llm.client.api_key == "from-env"


def test_openai_chat_batch_keeps_order(openai_stub):
    llm = build_llm("openai", "stub-model", base_url=openai_stub.url, api_key="k")
    convs = [[{"role": "user", "content": f"n{i}"}] for i in range(3)]
    assert llm.chat_batch(convs) == ["echo: n0", "echo: n1", "echo: n2"]


def test_build_llm_rejects_unknown_backend():
    with pytest.raises(ValueError, match="unknown LLM backend"):
        build_llm("ollama-magic", "m")


# ----------------------------------------------------------------------------------------- transformers backend


def test_transformers_missing_folder_is_unavailable(tmp_path):
    with pytest.raises(LLMUnavailable, match="does not exist"):
        build_llm("transformers", str(tmp_path / "no_such_model"))


def test_transformers_unloadable_folder_is_unavailable(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMUnavailable, match="cannot load"):
        build_llm("transformers", str(tmp_path / "empty"))


def test_transformers_render_uses_template_with_thinking_off(tiny_llm_dir):
    llm = build_llm("transformers", str(tiny_llm_dir), device="cpu")
    assert isinstance(llm, TransformersChatLLM) and llm.template_has_thinking
    prompt = llm.render(USER)
    assert prompt.startswith("<|im_start|>user\nSay something.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert llm.tokenizer.padding_side == "left"


def test_transformers_batched_generation_equals_one_by_one(tiny_llm_dir):
    """Left padding: a short prompt gives the same greedy reply alone and batched with a long one; replies hold
    only new tokens, at most max_new_tokens each (not x batch)."""
    llm = build_llm("transformers", str(tiny_llm_dir), device="cpu", batch_size=4)
    convs = [[{"role": "user", "content": "Я рад."}],
             [{"role": "user", "content": "Why would you do that? I can't believe it, what a day it was."}]]
    batched = llm.chat_batch(convs, max_new_tokens=6)
    alone = [llm.chat(c, max_new_tokens=6) for c in convs]
    assert batched == alone
    for reply in batched:
        assert "<|im_start|>" not in reply and "Я рад" not in reply
        n = len(llm.tokenizer(reply, add_special_tokens=False)["input_ids"])
        assert 1 <= n <= 6 + 2  # re-tokenising decoded bytes may merge/split a little, never x batch


def test_transformers_greedy_is_deterministic_and_sampling_is_seeded(tiny_llm_dir):
    llm = build_llm("transformers", str(tiny_llm_dir), device="cpu")
    assert llm.chat(USER, max_new_tokens=8) == llm.chat(USER, max_new_tokens=8)
    a = llm.chat(USER, max_new_tokens=12, temperature=1.5, seed=1)
    b = llm.chat(USER, max_new_tokens=12, temperature=1.5, seed=1)
    assert a == b
    others = {llm.chat(USER, max_new_tokens=12, temperature=1.5, seed=s) for s in range(2, 5)}
    assert len(others | {a}) > 1  # a random 600-token model does not repeat itself across 4 seeds


def test_transformers_scoring_matches_generation_step(tiny_llm_dir):
    """next_token_logprobs and continuation_logprobs agree with each other (and are log-probabilities)."""
    import torch

    llm = build_llm("transformers", str(tiny_llm_dir), device="cpu", batch_size=3)
    prompts = [llm.render([{"role": "user", "content": t}]) for t in ("Я рад.", "What a wonderful day it was!")]
    nxt = llm.next_token_logprobs(prompts)
    assert nxt.shape == (2, llm.model.config.vocab_size)
    assert torch.allclose(nxt.exp().sum(-1), torch.ones(2), atol=1e-4)
    words = ["happy", " sad", "fear"]
    cont = llm.continuation_logprobs(prompts, words)
    assert cont.shape == (2, 3) and bool((cont <= 0).all())
    for k, w in enumerate(words):
        ids = llm.tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:  # a one-token word: its continuation score is its next-token log-prob
            assert torch.allclose(cont[:, k], nxt[:, ids[0]], atol=1e-4)


def test_transformers_multi_token_continuation_matches_a_plain_forward(tiny_llm_dir):
    """The KV-cache path of continuation_logprobs equals scoring prompt+word in one plain forward pass."""
    import torch

    llm = build_llm("transformers", str(tiny_llm_dir), device="cpu", batch_size=2)
    prompts = [llm.render([{"role": "user", "content": t}]) for t in ("Я рад.", "What a wonderful day it was!")]
    word = "отвращение"  # byte-level pieces: several tokens
    ids = llm.tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    got = llm.continuation_logprobs(prompts, [word, word], first_token_only=[False, True])
    for i, p in enumerate(prompts):
        p_ids = llm.tokenizer(p, add_special_tokens=False)["input_ids"]
        full = torch.tensor([p_ids + ids])
        with torch.inference_mode():
            logp = torch.log_softmax(llm.model(input_ids=full).logits[0].float(), -1)
        want = sum(logp[len(p_ids) - 1 + j, t] for j, t in enumerate(ids))
        assert got[i, 0] == pytest.approx(float(want), abs=1e-3)
        assert got[i, 1] == pytest.approx(float(logp[len(p_ids) - 1, ids[0]]), abs=1e-3)
