"""Chat LLM backends shared by TUG (template writing) and LS-LLM (soft labels).

Two backends behind one small interface, :class:`ChatLLM`:

- ``"transformers"``: a local causal LM (hub id or folder), batched generation with LEFT padding, the
  tokenizer's chat template (``enable_thinking=False`` when the template knows that switch, as the paper ran
  Qwen3), greedy decoding at ``temperature=0`` or seeded sampling, ``max_new_tokens`` per item, only the new
  tokens decoded.
- ``"openai"``: the ``openai`` client against OpenAI or any OpenAI-compatible server (vLLM, llama.cpp,
  Ollama, ...). Structured output with ``response_format={"type": "json_schema"}``, falling back to
  ``{"type": "json_object"}`` and then plain text when the server rejects it; retries with exponential
  backoff on connection errors, timeouts and 5xx (the client's own retry loop); refusals raised as
  :class:`LLMRefusal`.

Usage::

    llm = build_llm("transformers", "Qwen/Qwen3-4B")            # or a local folder
    llm = build_llm("openai", "gpt-4o-mini")                    # key from OPENAI_API_KEY
    llm = build_llm("openai", "qwen3", base_url="http://localhost:8000/v1")
    text = llm.chat([{"role": "user", "content": "Hi"}], max_new_tokens=32)

:class:`LLMUnavailable` is raised when the backend cannot be used at all (missing key, unreachable server,
model folder that does not exist, model that cannot be loaded), so callers can fall back to an offline path.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

from bber_utils.core.device import resolve_device

# Heavy libraries (openai, torch, transformers) are imported inside the functions that use them, so that importing
# this module, and `bber --help`, stays fast.

Messages = list[dict[str, str]]
BACKENDS = ("openai", "transformers")


class LLMError(RuntimeError):
    """A call that failed in a way worth reporting (malformed server reply, rejected request)."""


class LLMUnavailable(LLMError):
    """The backend cannot be used: missing API key, unreachable server, or a model that cannot be loaded."""


class LLMRefusal(LLMError):
    """The model refused to answer; ``.refusal`` holds its refusal text."""

    def __init__(self, refusal: str):
        super().__init__(f"the model refused: {refusal}")
        self.refusal = refusal


def schema_instruction(json_schema: dict) -> str:
    """The line appended to the prompt when a backend cannot enforce ``json_schema`` itself."""
    return "Reply with a single JSON object that follows this JSON schema, and nothing else:\n" + json.dumps(
        json_schema, ensure_ascii=False
    )


def _with_schema_instruction(messages: Messages, json_schema: dict | None) -> Messages:
    """A copy of ``messages`` whose last user turn asks for JSON following ``json_schema``."""
    if json_schema is None:
        return list(messages)
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = f"{m['content']}\n\n{schema_instruction(json_schema)}"
            return out
    return out + [{"role": "user", "content": schema_instruction(json_schema)}]


def _check_messages(messages: Messages) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")


class ChatLLM:
    """One chat model. ``backend`` and ``model`` name it (they go into caches as provenance)."""

    backend: str = ""
    model_name: str = ""

    def chat(
        self,
        messages: Messages,
        *,
        json_schema: dict | None = None,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> str:
        """The assistant's reply (text only) to ``messages``."""
        return self.chat_batch(
            [messages], json_schema=json_schema, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
        )[0]

    def chat_batch(
        self,
        list_of_messages: list[Messages],
        *,
        json_schema: dict | None = None,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[str]:
        """One reply per conversation, in order."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, model={self.model_name!r})"


# --------------------------------------------------------------------------------------------------------------
# OpenAI-compatible server
# --------------------------------------------------------------------------------------------------------------

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
# Structured-output modes tried in this order; the first one the server accepts is remembered.
RESPONSE_FORMATS = ("json_schema", "json_object", "text")


class OpenAIChatLLM(ChatLLM):
    """Chat completions through the ``openai`` client (OpenAI or any OpenAI-compatible server)."""

    backend = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, timeout: float = 60,
                 max_retries: int = 3, check: bool = True, **gen_kwargs: Any):
        import openai

        self.model_name = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_URL).rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url == DEFAULT_OPENAI_URL:
                raise LLMUnavailable(
                    f"no API key for {self.base_url}: pass api_key=... or set OPENAI_API_KEY "
                    "(or give base_url of a local OpenAI-compatible server)"
                )
            key = "EMPTY"  # local servers (vLLM, llama.cpp, Ollama) accept any key
        self.timeout = float(timeout)
        self.gen_kwargs = gen_kwargs
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout,
                                    max_retries=int(max_retries))
        self._format_level = 0  # index into RESPONSE_FORMATS of the mode the server accepted last
        self._token_param = "max_tokens"
        if check:
            self.check()

    def check(self) -> None:
        """Raise :class:`LLMUnavailable` when the server cannot be reached (one quick ``GET /models``)."""
        import openai

        try:
            self.client.with_options(max_retries=0, timeout=min(self.timeout, 10.0)).models.list()
        except openai.AuthenticationError as e:
            raise LLMUnavailable(f"{self.base_url} rejected the API key: {e}") from e
        except openai.APIConnectionError as e:  # includes timeouts
            raise LLMUnavailable(f"cannot reach the LLM server at {self.base_url}: {e}") from e
        except openai.APIStatusError:
            pass  # reachable; some servers do not implement /models

    def _response_format(self, level: int, json_schema: dict) -> dict | None:
        kind = RESPONSE_FORMATS[level]
        if kind == "json_schema":
            name = re.sub(r"[^A-Za-z0-9_-]", "_", str(json_schema.get("title") or "reply"))[:64]  # OpenAI's rule
            return {"type": "json_schema", "json_schema": {"name": name, "schema": json_schema}}
        if kind == "json_object":
            return {"type": "json_object"}
        return None

    def _one(self, messages: Messages, json_schema: dict | None, max_new_tokens: int, temperature: float,
             seed: int | None) -> str:
        import openai

        _check_messages(messages)
        level = self._format_level if json_schema is not None else len(RESPONSE_FORMATS) - 1
        while True:
            kwargs: dict[str, Any] = dict(self.gen_kwargs)
            kwargs.update({"model": self.model_name, self._token_param: int(max_new_tokens),
                           "temperature": float(temperature)})
            if seed is not None:
                kwargs["seed"] = int(seed)
            msgs = list(messages)
            if json_schema is not None:
                fmt = self._response_format(level, json_schema)
                if fmt is not None:
                    kwargs["response_format"] = fmt
                if RESPONSE_FORMATS[level] != "json_schema":  # the server does not see the schema: say it
                    msgs = _with_schema_instruction(messages, json_schema)
            try:
                resp = self.client.chat.completions.create(messages=msgs, **kwargs)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                if self._token_param == "max_tokens" and "max_completion_tokens" in str(e):
                    self._token_param = "max_completion_tokens"  # OpenAI's newer models refuse max_tokens
                    continue
                if json_schema is not None and level < len(RESPONSE_FORMATS) - 1:
                    level += 1  # the server rejected this response_format: try the next, simpler one
                    continue
                raise LLMError(f"{self.base_url} rejected the request: {e}") from e
            except openai.AuthenticationError as e:
                raise LLMUnavailable(f"{self.base_url} rejected the API key: {e}") from e
            except openai.NotFoundError as e:
                raise LLMUnavailable(f"{self.base_url} does not serve model {self.model_name!r}: {e}") from e
            except openai.APITimeoutError as e:
                raise LLMUnavailable(
                    f"the LLM server at {self.base_url} did not answer within {self.timeout:g} s "
                    f"(after {self.client.max_retries} retries)"
                ) from e
            except openai.APIConnectionError as e:
                raise LLMUnavailable(f"cannot reach the LLM server at {self.base_url}: {e}") from e
            except openai.APIStatusError as e:
                raise LLMError(f"{self.base_url} answered HTTP {e.status_code}: {e}") from e
            except (openai.APIResponseValidationError, ValueError) as e:  # ValueError: a body that is not JSON
                raise LLMError(f"malformed reply from {self.base_url}: {e}") from e
            if json_schema is not None:
                self._format_level = level  # remember the structured-output mode this server accepted
            return self._content(resp)

    def _content(self, resp: Any) -> str:
        try:
            message = resp.choices[0].message
        except (AttributeError, IndexError, TypeError) as e:
            raise LLMError(f"malformed reply from {self.base_url}: no choices[0].message in {str(resp)[:200]!r}") from e
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise LLMRefusal(refusal)
        content = getattr(message, "content", None)
        if content is None:
            raise LLMError(f"malformed reply from {self.base_url}: the message has no content")
        return str(content)

    def chat_batch(self, list_of_messages: list[Messages], *, json_schema: dict | None = None,
                   max_new_tokens: int = 512, temperature: float = 0.0, seed: int | None = None) -> list[str]:
        return [self._one(m, json_schema, max_new_tokens, temperature, seed) for m in list_of_messages]


# --------------------------------------------------------------------------------------------------------------
# Local transformers causal LM
# --------------------------------------------------------------------------------------------------------------


def _is_missing_folder(model: str) -> bool:
    """True when ``model`` is meant as a local folder (absolute, ``./``, ``~``, or deeper than ``org/name``)
    but does not exist; a plain ``org/name`` is taken as a hub id."""
    path = Path(model).expanduser()
    if path.exists():
        return False
    return model.startswith((".", "/", "~")) or len(Path(model).parts) > 2


class TransformersChatLLM(ChatLLM):
    """A local causal LM with its tokenizer's chat template; batched, left-padded generation."""

    backend = "transformers"

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 trust_remote_code: bool = False, **gen_kwargs: Any):
        self.model_name = str(model)
        path = Path(model).expanduser()
        if _is_missing_folder(str(model)):
            raise LLMUnavailable(f"model folder {path} does not exist")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = str(resolve_device(device))
        if dtype == "auto":
            # bf16/fp16 checkpoints are slow (or unsupported) on CPU: compute in float32 there.
            torch_dtype: Any = "auto" if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        src = str(path) if path.exists() else model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype,
                                                              trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            where = f"folder {path}" if path.exists() else f"hub id {model!r} (is the hub reachable?)"
            raise LLMUnavailable(f"cannot load a causal LM from {where}: {e}") from e
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = int(batch_size)
        self.gen_kwargs = gen_kwargs
        template = self.tokenizer.chat_template or ""
        self.has_chat_template = bool(template)
        self.template_has_thinking = "enable_thinking" in template

    def render(self, messages: Messages, json_schema: dict | None = None) -> str:
        """The prompt string the model sees: chat template + generation prompt (thinking off when supported)."""
        _check_messages(messages)
        messages = _with_schema_instruction(messages, json_schema)
        if not self.has_chat_template:  # a base model: a plain transcript ending with the assistant's turn
            lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
            return "\n".join(lines) + "\nAssistant:"
        extra = {"enable_thinking": False} if self.template_has_thinking else {}
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)

    def encode(self, prompts: list[str]):
        """Left-padded batch on the model's device: ``input_ids (B, T)``, ``attention_mask (B, T)``."""
        # The chat template already holds the special tokens (BOS etc.): do not add them twice.
        add_special = not self.has_chat_template
        return self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(
            self.device)

    def chat_batch(self, list_of_messages: list[Messages], *, json_schema: dict | None = None,
                   max_new_tokens: int = 512, temperature: float = 0.0, seed: int | None = None) -> list[str]:
        import torch
        from transformers import GenerationConfig

        prompts = [self.render(m, json_schema) for m in list_of_messages]
        base = self.model.generation_config.to_dict()
        base.update(self.gen_kwargs)
        base.update(max_new_tokens=int(max_new_tokens), pad_token_id=self.tokenizer.pad_token_id)
        if temperature and temperature > 0:
            base.update(do_sample=True, temperature=float(temperature))
        else:  # greedy: drop the checkpoint's sampling defaults so nothing random happens
            base.update(do_sample=False, temperature=None, top_p=None, top_k=None, min_p=None)
        gen_config = GenerationConfig(**{k: v for k, v in base.items() if not k.startswith("_")})
        replies: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            if seed is not None:
                torch.manual_seed(int(seed) + start)
            enc = self.encode(chunk)
            with torch.inference_mode():
                out = self.model.generate(**enc, generation_config=gen_config)
            new_tokens = out[:, enc["input_ids"].shape[1]:]
            replies.extend(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return replies

    @property
    def _cache_arg(self) -> str:
        """The forward() keyword of the KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _prompt_pass(self, enc):
        """Forward pass over a left-padded prompt batch with explicit position ids (so that models with absolute
        positions give the same numbers whatever the padding); returns (outputs, position_ids)."""
        import torch

        positions = (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        params = inspect.signature(self.model.forward).parameters
        # only the last position's logits are read: skip the (T, vocab) LM head for the rest of the prompt
        keep = {k: 1 for k in ("logits_to_keep", "num_logits_to_keep") if k in params}
        with torch.inference_mode():
            out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             position_ids=positions, use_cache=True, **keep)
        return out, positions

    def next_token_logprobs(self, prompts: list[str]):
        """Log-probabilities of the next token after each prompt: ``(B, vocab)`` float32 on CPU."""
        import torch

        out = []
        for start in range(0, len(prompts), self.batch_size):
            res, _ = self._prompt_pass(self.encode(prompts[start:start + self.batch_size]))
            out.append(torch.log_softmax(res.logits[:, -1, :].float(), dim=-1).cpu())  # last position: real token
        return torch.cat(out, dim=0)

    def continuation_logprobs(self, prompts: list[str], continuations: list[str],
                              first_token_only: bool | list[bool] = False):
        """Log-probability of each continuation after each prompt: ``(B, K)`` float32 on CPU.

        One forward pass over the prompts; the continuations of several tokens are then scored token by token
        (teacher forcing) in one more pass over their own few tokens, on a copy of the prompts' KV cache
        repeated once per continuation.
        ``first_token_only`` (one flag, or one per continuation) scores just the continuation's first token.
        """

        import torch

        flags = [first_token_only] * len(continuations) if isinstance(first_token_only, bool) else first_token_only
        cont_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        for c, ids in zip(continuations, cont_ids):
            if not ids:
                raise ValueError(f"continuation {c!r} has no tokens")
        rows = []
        for start in range(0, len(prompts), self.batch_size):
            enc = self.encode(prompts[start:start + self.batch_size])
            res, positions = self._prompt_pass(enc)
            first = torch.log_softmax(res.logits[:, -1, :].float(), dim=-1).cpu()
            b = first.shape[0]
            scores = torch.zeros(b, len(continuations))
            for k, ids in enumerate(cont_ids):
                scores[:, k] = first[:, ids[0]]
            multi = [k for k, (ids, only_first) in enumerate(zip(cont_ids, flags)) if len(ids) > 1 and not only_first]
            if multi:  # all multi-token continuations in one pass: rows (prompt i, continuation j) -> i * m + j
                m, n = len(multi), max(len(cont_ids[k]) for k in multi) - 1
                inputs = torch.full((b * m, n), self.tokenizer.pad_token_id, dtype=torch.long)
                valid = torch.zeros((b * m, n), dtype=enc["attention_mask"].dtype)
                for j, k in enumerate(multi):  # feed all but the last token; right-padded after the prompt
                    feed = torch.tensor(cont_ids[k][:-1])
                    inputs[j::m, :len(feed)] = feed
                    valid[j::m, :len(feed)] = 1
                cache = copy.deepcopy(_output_cache(res))
                cache.batch_repeat_interleave(m)
                mask = torch.cat([enc["attention_mask"].repeat_interleave(m, 0), valid.to(self.device)], 1)
                pos = positions[:, -1:].repeat_interleave(m, 0) + torch.arange(1, n + 1, device=self.device)
                with torch.inference_mode():
                    step = self.model(input_ids=inputs.to(self.device), attention_mask=mask, position_ids=pos,
                                      use_cache=True, **{self._cache_arg: cache})
                logp = torch.log_softmax(step.logits.float(), dim=-1).cpu()  # (b * m, n, V)
                for j, k in enumerate(multi):
                    targets = torch.tensor(cont_ids[k][1:])
                    scores[:, k] += logp[j::m, torch.arange(len(targets)), targets].sum(-1)
            rows.append(scores)
        return torch.cat(rows, dim=0)


def _output_cache(outputs):
    """The KV cache of a model output, under its new (``cache``) or old (``past_key_values``) name."""
    keys = outputs.keys() if hasattr(outputs, "keys") else ()
    return outputs["cache"] if "cache" in keys else outputs.past_key_values


# --------------------------------------------------------------------------------------------------------------


def build_llm(backend: str, model: str, base_url: str | None = None, api_key: str | None = None,
              timeout: float = 60, max_retries: int = 3, device: str = "auto", dtype: str = "auto",
              **gen_kwargs: Any) -> ChatLLM:
    """A :class:`ChatLLM` for ``backend`` ("openai" | "transformers") and ``model`` (name, hub id or folder).

    ``gen_kwargs`` go to every request (openai: e.g. ``top_p``; transformers: generation config fields, or
    ``batch_size`` / ``trust_remote_code``). Raises :class:`LLMUnavailable` when the backend cannot be used.
    """
    if not model:
        raise ValueError("build_llm: model must name a model (hub id, folder, or server model name)")
    if backend == "openai":
        return OpenAIChatLLM(model, base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                             **gen_kwargs)
    if backend == "transformers":
        extra = {k: gen_kwargs.pop(k) for k in ("batch_size", "trust_remote_code") if k in gen_kwargs}
        return TransformersChatLLM(model, device=device, dtype=dtype, **extra, **gen_kwargs)
    raise ValueError(f"unknown LLM backend {backend!r}; choose one of {BACKENDS}")
