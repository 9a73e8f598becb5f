"""LS-LLM labellers: the backends that answer "which emotions, how much" for a batch of utterances.

Owns :class:`Labeller` and its four backends (:class:`LexiconLabeller`, offline, not an LLM;
:class:`GenerateLabeller`, a chat LLM whose reply :mod:`.replies` reads; :class:`LogitLabeller`, the class words'
next-token probabilities; :class:`ReferenceLabeller`, the published label files) and :func:`build_labeller`.
A labeller returns raw replies and the numbers they hold; it does not validate, cache or write tables
(:mod:`.workdir` does). LLM access goes through :mod:`bber_utils.synthesis.llm` (torch is imported there, lazily).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bber_utils.augment.ls_llm.lexicon import LEXICON_VERSION, lexicon_distribution
from bber_utils.augment.ls_llm.prompts import PROMPT_VERSION, build_messages
from bber_utils.augment.ls_llm.replies import PARSER_VERSION, read_reply
from bber_utils.augment.ls_llm.tables import load_reference_labels, reference_model_name
from bber_utils.core.labels import CLASSES, NUM_CLASSES
from bber_utils.synthesis.llm import LLMError, LLMRefusal, LLMUnavailable, TransformersChatLLM, build_llm

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.

LEXICON_BACKEND = "lexicon (not an LLM)"
LABEL_BACKENDS = ("lexicon", "transformers", "openai", "reference")
MODES = ("generate", "logits")


@dataclass
class LabelRequest:
    utt_id: str
    text: str
    label: str


@dataclass
class LabelOutcome:
    """What a backend said about one utterance: the raw reply and the 7 numbers it holds (None = none found,
    ``reason`` says why). ``error`` marks a failure worth retrying later (not cached)."""

    raw: str
    values: list[float] | None
    error: str | None = None
    reason: str = ""


def _read(raw: str) -> LabelOutcome:
    reply = read_reply(raw)
    return LabelOutcome(raw, reply.values, reason=reply.reason)


class Labeller:
    """A soft-label backend. ``backend``, ``model``, ``mode`` and ``prompt_version`` key the cache; ``parser``
    (non-empty for backends whose replies :mod:`.replies` reads) is recorded per cached reply, so that replies
    read by an older parser are read again."""

    backend = ""
    model = ""
    mode = "generate"
    prompt_version = PROMPT_VERSION
    settings = ""  # anything else that changes the answers (decoding options): part of the cache identity
    parser = ""

    def label(self, requests: list[LabelRequest]) -> list[LabelOutcome]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, model={self.model!r}, mode={self.mode!r})"


class LexiconLabeller(Labeller):
    """The offline default: the bilingual cue lexicon plus the true label (:mod:`.lexicon`). Not an LLM."""

    backend = LEXICON_BACKEND
    mode = "lexicon"

    def __init__(self, confidence: float = 0.65):
        self.confidence = float(confidence)
        self.model = LEXICON_VERSION
        self.prompt_version = f"{LEXICON_VERSION}-c{self.confidence:g}"

    def label(self, requests):
        out = []
        for r in requests:
            d = lexicon_distribution(r.text, r.label, self.confidence)
            out.append(LabelOutcome(", ".join(f"{x:.5f}" for x in d), [float(x) for x in d]))
        return out


class GenerateLabeller(Labeller):
    """Chat LLM + :func:`.replies.read_reply` (the paper's method). ``llm`` is a :class:`bber_utils.synthesis.llm.ChatLLM`."""

    mode = "generate"
    parser = PARSER_VERSION

    def __init__(self, llm, max_new_tokens: int = 96, temperature: float = 0.0, seed: int | None = 42,
                 concurrency: int = 4):
        self.llm, self.max_new_tokens, self.temperature, self.seed = llm, int(max_new_tokens), temperature, seed
        self.concurrency = max(1, int(concurrency))  # requests in flight at once (server backends)
        self.backend, self.model = llm.backend, llm.model_name
        # greedy decoding does not depend on the seed
        self.settings = f"max_new_tokens={self.max_new_tokens} temperature={temperature:g}" + (
            f" seed={seed}" if temperature else "")

    def _ask(self, convs):
        return self.llm.chat_batch(convs, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                   seed=self.seed)

    def _ask_one(self, conv) -> LabelOutcome:
        try:
            rep = self._ask([conv])[0]
            return _read(rep)
        except LLMRefusal as e:  # a refusal is the model's answer: cached and rejected
            return LabelOutcome(f"[refused] {e.refusal}", None)
        except LLMUnavailable:
            raise
        except LLMError as e:  # malformed reply, HTTP error after retries: not cached, retried next run
            return LabelOutcome("", None, error=str(e))

    def label(self, requests):
        convs = [build_messages(r.text, r.label, "generate") for r in requests]
        if self.llm.backend == "transformers":  # one batched generate; nothing to refuse or time out per item
            return [_read(rep) for rep in self._ask(convs)]
        # a server: one request per utterance (a failure costs only its own), `concurrency` of them in flight
        if self.concurrency == 1 or len(convs) == 1:
            return [self._ask_one(c) for c in convs]
        with ThreadPoolExecutor(min(self.concurrency, len(convs))) as pool:
            return list(pool.map(self._ask_one, convs))  # in order; LLMUnavailable propagates


class LogitLabeller(Labeller):
    """One forward pass per utterance: the next-token probabilities of the seven class words after the prompt.

    Each class is scored by the log-probability of its words (``word`` and ``Word``, log-sum-exp'ed). A word is
    scored by its first token; a word whose first token another class's word also starts with (e.g. a tokenizer
    that splits ``sad`` and ``surprise`` into ``s`` + ...) is scored as a whole, by the sum of its token
    log-probs (on the prompt's KV cache, so this stays cheap). The seven scores are softmax-normalised.
    """

    mode = "logits"

    def __init__(self, llm):
        if not isinstance(llm, TransformersChatLLM):
            raise ValueError("logits mode needs a local transformers model (backend='transformers')")
        self.llm = llm
        self.backend, self.model = llm.backend, llm.model_name
        self.variants = {c: [c, c.capitalize()] for c in CLASSES}
        self.words = [w for c in CLASSES for w in self.variants[c]]
        first = [llm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in self.words]
        owner = [c for c in CLASSES for _ in self.variants[c]]
        classes_of_token: dict[int, set[str]] = {}
        for t, c in zip(first, owner):
            classes_of_token.setdefault(t, set()).add(c)
        self.full_word = [len(classes_of_token[t]) > 1 for t in first]  # shared first token: score the whole word
        self.scoring = "first-token" if not any(self.full_word) else (
            "full-word" if all(self.full_word) else "first-token + full-word for shared first tokens")

    def class_logprobs(self, prompts: list[str]):
        """``(B, 7)`` log-scores of the class words after each rendered prompt."""
        import torch

        only_first = [not f for f in self.full_word]
        words = self.llm.continuation_logprobs(prompts, self.words, first_token_only=only_first)  # (B, 14)
        return torch.logsumexp(words.view(len(prompts), NUM_CLASSES, -1), dim=-1)

    def label(self, requests):
        import torch

        prompts = [self.llm.render(build_messages(r.text, r.label, "logits")) for r in requests]
        scores = self.class_logprobs(prompts)
        probs = torch.softmax(scores, dim=-1)
        out = []
        for s, p in zip(scores.tolist(), probs.tolist()):
            raw = f"{self.scoring} log-probs: " + ", ".join(f"{c}={x:.4f}" for c, x in zip(CLASSES, s))
            out.append(LabelOutcome(raw, p))
        return out


class ReferenceLabeller(Labeller):
    """The reference's published soft labels (``response_clean`` kept as the raw reply), looked up by utt_id."""

    backend = "reference"
    mode = "generate"
    prompt_version = "reference"

    def __init__(self, csv: str | os.PathLike, corpus: str = "auto", split: str = "train"):
        self.table = load_reference_labels(csv, corpus, split)
        self.model = reference_model_name(csv)

    def label(self, requests):
        out = []
        for r in requests:
            if r.utt_id not in self.table.index:
                out.append(LabelOutcome("", None, error="not in the reference file"))
                continue
            row = self.table.loc[r.utt_id]
            out.append(LabelOutcome(str(row["response_clean"]), [float(row[c]) for c in CLASSES]))
        return out


def build_labeller(backend: str = "lexicon", model: str | None = None, mode: str = "generate",
                   base_url: str | None = None, api_key: str | None = None, reference_csv: str | None = None,
                   corpus: str = "auto", device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                   max_new_tokens: int = 96, temperature: float = 0.0, seed: int | None = 42, timeout: float = 60,
                   concurrency: int = 4, **llm_kwargs: Any) -> Labeller:
    """A :class:`Labeller` for ``backend`` (see :data:`LABEL_BACKENDS`). LLM backends raise
    :class:`bber_utils.synthesis.llm.LLMUnavailable` when the model or server cannot be used. ``concurrency``: requests
    in flight at once against a server (openai); ``batch_size``: prompts per batched pass (transformers)."""
    if backend == "lexicon":
        return LexiconLabeller()
    if backend == "reference":
        if not reference_csv:
            raise ValueError("backend 'reference' needs reference_csv (a published *_emotions_*.csv file)")
        return ReferenceLabeller(reference_csv, corpus)
    if backend not in ("transformers", "openai"):
        raise ValueError(f"unknown soft-label backend {backend!r}; choose one of {LABEL_BACKENDS}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if mode == "logits" and backend != "transformers":
        raise ValueError("logits mode reads the model's next-token probabilities: it needs backend='transformers'")
    if not model:
        raise ValueError(f"backend {backend!r} needs a model (hub id, local folder or server model name)")

    if backend == "transformers":
        llm = build_llm("transformers", model, device=device, dtype=dtype, batch_size=batch_size, **llm_kwargs)
    else:
        llm = build_llm("openai", model, base_url=base_url, api_key=api_key, timeout=timeout, **llm_kwargs)
    if mode == "logits":
        return LogitLabeller(llm)
    return GenerateLabeller(llm, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                            concurrency=concurrency)


