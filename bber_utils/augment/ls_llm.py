"""LS-LLM: soft labels from an LLM (label smoothing with LLM knowledge), notebook 05 and ``bber label``.

The paper asks an LLM (Qwen3-4B with thinking disabled; Phi-4-mini-instruct) for a probability distribution
over the seven classes of a train utterance, telling it the true label, and trains on that distribution as a
soft target for a fraction p of the samples. Here:

* **Backends** (a :class:`Labeller` each): a local transformers causal LM or an OpenAI-compatible server (both
  through :mod:`bber_utils.llm`); the reference's published label files (``backend="reference"``, loaded as
  they are); and the offline default ``backend="lexicon (not an LLM)"`` (:mod:`.lexicon`), which needs no model.
* **Modes**: ``generate`` (the paper's prompt in our words, :data:`PROMPT_VERSION`; the reply is parsed by
  :func:`parse_reply`) and ``logits`` (one forward pass per utterance reading the next-token probabilities of
  the seven class words: no parsing, no sampling; transformers only).
* **Validation** (:func:`validate_distribution`): 7 finite values, non-negative (tiny negatives clipped), sum 1
  (renormalised), not all equal, the true label highest. When the true label is not highest, the default
  policy ``"swap"`` swaps its value with the maximum (the reference never checked this: 1.2-11.6 % of its rows).
* **Resumable cache** per (backend, model, prompt version, mode): one JSON line per utterance keyed by
  ``utt_id`` + a hash of (text, label), with the raw reply, status and reason, appended after every batch.
* **Sharding** (one process per GPU or server): ``shard=(i, n)`` asks only the utterances at positions
  ``i, i + n, ...`` and appends to its own ``<cache>.part-i-of-n.jsonl``; the next call without ``shard``
  appends every part to the main cache, removes the parts and writes the table.
* **Output** ``<workdir>/ls_llm/soft_labels.parquet`` (:data:`SOFT_LABEL_COLUMNS`), read back by
  :func:`load_soft_labels`, which also accepts the reference CSV format.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..labels import CLASSES, NUM_CLASSES

PROMPT_VERSION = "bber-ls-llm-v1"
LEXICON_BACKEND = "lexicon (not an LLM)"
LABEL_BACKENDS = ("lexicon", "transformers", "openai", "reference")
MODES = ("generate", "logits")
POLICIES = ("swap", "reject")
SOFT_LABELS_FILE = "soft_labels.parquet"
SOFT_LABEL_COLUMNS = ["utt_id", *CLASSES, "backend", "model", "prompt_version", "mode", "status"]
# extra columns written next to the contract ones
EXTRA_COLUMNS = ["reason", "label", "llm_argmax", "corpus", "raw"]
REFERENCE_COLUMNS = ("video_name", "text", "ground_truth", *CLASSES, "response_clean")
USABLE_STATUSES = ("ok", "repaired")

# Tolerances of validate_distribution
TINY_NEGATIVE = 1e-3  # values in [-1e-3, 0) are rounding noise: clipped to 0 and counted
SUM_OK = 0.01  # |sum - 1| up to this is rounding (status stays "ok"); beyond it renormalising is a repair

GENERATE_PROMPT = (
    "You are an expert in recognising emotions in what people say.\n"
    "Estimate how much of each of seven emotions is present in the utterance below, as probabilities in this "
    "fixed order: neutral, happy, sad, anger, surprise, disgust, fear.\n"
    "Rules:\n"
    "- The annotators labelled this utterance as \"{label}\". Give \"{label}\" the highest probability.\n"
    "- Give \"{label}\" 1.00000 only if no other emotion is present at all.\n"
    "- Use 0.00000 only for emotions that are completely absent, and do not give two emotions the same value.\n"
    "- Write exactly seven numbers with five decimals each, separated by commas, summing to 1.00000, and "
    "nothing else.\n\n"
    "Utterance: {text}\n"
    "Answer (neutral, happy, sad, anger, surprise, disgust, fear):"
)
LOGITS_PROMPT = (
    "You are an expert in recognising emotions in what people say.\n"
    "The annotators labelled the utterance below as \"{label}\".\n"
    "Utterance: {text}\n"
    "Which one emotion does the speaker express? Answer with one word: neutral, happy, sad, anger, surprise, "
    "disgust or fear."
)


# ============================================================================================== prompt, parsing


def build_messages(text: str, label: str, mode: str = "generate") -> list[dict[str, str]]:
    """The single user turn sent to the LLM for (text, true label)."""
    if label not in CLASSES:
        raise ValueError(f"true label {label!r} is not one of {CLASSES}")
    template = GENERATE_PROMPT if mode == "generate" else LOGITS_PROMPT
    return [{"role": "user", "content": template.format(text=str(text).strip(), label=label)}]


# Class names as a reply may write them (lower-cased word starts), English and Russian.
CLASS_ALIASES: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral", "нейтрал", "спокойств"),
    "happy": ("happ", "joy", "радост", "счаст", "весел"),
    "sad": ("sad", "грус", "печал"),
    "anger": ("anger", "angry", "злост", "злоб", "гнев"),
    "surprise": ("surpris", "удивл"),
    "disgust": ("disgust", "отвращ", "омерз"),
    "fear": ("fear", "afraid", "scare", "страх", "испуг", "боязн"),
}
_NUM = r"[-+]?(?:\d+(?:[.,]\d+)?|[.,]\d+)(?:[eE][-+]?\d+)?"
_PAIR = re.compile(
    r"(?P<name>[^\W\d_]+)[^\w\n]{0,4}?[ \t]*(?:\([^)\n]{0,40}\)[ \t]*)?[*_]*[ \t]*[:=\-\u2013\u2014][ \t*_]*"
    r"(?P<num>" + _NUM + r")[ \t]*(?P<pct>%)?",
    re.UNICODE,
)
_LINE_NUM = re.compile(r"(?<![\w.])(?P<num>[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)(?P<pct>[ \t]*%)?(?!\w)")
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def _class_of(word: str) -> str | None:
    w = word.lower()
    for c, stems in CLASS_ALIASES.items():
        if any(w.startswith(s) for s in stems):
            return c
    return None


def _to_float(s: str) -> float:
    return float(s.replace(",", "."))


def _answer_text(reply: str) -> str:
    """The reply without think blocks (a ``</think>`` with no opening tag: the text after it)."""
    text = _THINK.sub("\n", str(reply))
    if "</think>" in text.lower():
        text = text[text.lower().rfind("</think>") + len("</think>"):]
    if "<think>" in text.lower():  # an unfinished think block holds no answer
        text = text[:text.lower().find("<think>")]
    return text


def _scale(values: list[float], percent: bool) -> list[float]:
    if percent or (max(values) > 1.0 and 90.0 <= sum(values) <= 110.0):
        return [v / 100.0 for v in values]
    return values


def parse_reply(text: str) -> list[float] | None:
    """The 7 numbers of a reply in class order (neutral … fear), or None when the reply holds no such answer.

    Accepted: think blocks; header and explanation lines; ``name: value`` lists in any order (names in English
    or Russian, any case, markdown bold, ``=`` or dashes); a line (or a JSON list) of 7 numbers, searched from
    the bottom as the last answer wins; one number per line; percentages (``85%``, or values summing to ~100).
    The numbers are returned as written (not renormalised): see :func:`validate_distribution`.
    """
    if text is None:
        return None
    answer = _answer_text(text)
    # 1. name: value pairs; the last value given for each class wins (a final answer after a draft)
    named: dict[str, tuple[float, bool]] = {}
    for m in _PAIR.finditer(answer):
        c = _class_of(m["name"])
        if c is not None:
            named[c] = (_to_float(m["num"]), bool(m["pct"]))
    if len(named) == NUM_CLASSES:
        return _scale([named[c][0] for c in CLASSES], any(p for _, p in named.values()))
    # 2. a line holding exactly 7 numbers, bottom-up (list markers like "1." stripped first)
    lines = [_LIST_MARKER.sub("", ln) for ln in answer.splitlines()]
    for ln in reversed(lines):
        nums = list(_LINE_NUM.finditer(ln))
        if len(nums) == NUM_CLASSES:
            return _scale([float(m["num"]) for m in nums], any(m["pct"] for m in nums))
    # 3. one number per line in a run of at least 7 lines (the last 7), or exactly 7 numbers in the whole answer
    singles: list[re.Match] = []
    for ln in reversed(lines):
        nums = list(_LINE_NUM.finditer(ln))
        if len(nums) == 1:
            singles.insert(0, nums[0])
            if len(singles) == NUM_CLASSES:
                return _scale([float(m["num"]) for m in singles], any(m["pct"] for m in singles))
        elif ln.strip() and singles:
            singles = []
    nums = list(_LINE_NUM.finditer(answer))
    if len(nums) == NUM_CLASSES:
        return _scale([float(m["num"]) for m in nums], any(m["pct"] for m in nums))
    return None


# ================================================================================================== validation


def validate_distribution(values: Sequence[float] | None, true_label: str, policy: str = "swap"):
    """Check (and where safe repair) an LLM distribution for an utterance whose true label is ``true_label``.

    Returns ``(dist, status, reason)``: ``dist`` a ``(7,)`` float64 numpy array summing to 1 (None when
    rejected), ``status`` "ok" | "repaired" | "rejected", ``reason`` what was wrong ("" when nothing).

    Rules, in order: 7 finite numbers; values below ``-TINY_NEGATIVE`` reject, tiny negatives are clipped to 0
    (repair); a zero sum rejects; the sum is renormalised to 1 (a repair when it was off by more than
    ``SUM_OK``); seven equal values reject. The true label must be strictly highest: with ``policy="swap"``
    its value is swapped with the maximum (the distribution's shape and entropy are kept, only which class gets
    the top value changes), a tie at the top is broken by moving 1 % of each tied value to the true label;
    with ``policy="reject"`` such replies are rejected.
    """
    import numpy as np

    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
    if true_label not in CLASSES:
        raise ValueError(f"true label {true_label!r} is not one of {CLASSES}")
    if values is None:
        return None, "rejected", "no 7 numbers found in the reply"
    try:
        v = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError):
        return None, "rejected", f"not numbers: {values!r}"
    if v.shape != (NUM_CLASSES,):
        return None, "rejected", f"{v.size} values instead of {NUM_CLASSES}"
    if not np.isfinite(v).all():
        return None, "rejected", "non-finite value"
    reasons: list[str] = []
    if (v < -TINY_NEGATIVE).any():
        k = int(np.argmin(v))
        return None, "rejected", f"negative value {v[k]:g} for {CLASSES[k]}"
    n_neg = int((v < 0).sum())
    if n_neg:
        v = np.clip(v, 0.0, None)
        reasons.append(f"clipped {n_neg} tiny negative value{'s' if n_neg > 1 else ''}")
    total = float(v.sum())
    if total <= 0:
        return None, "rejected", "all values are zero"
    if abs(total - 1.0) > SUM_OK:
        reasons.append(f"renormalised (sum was {total:.4g})")
    v = v / total
    if np.allclose(v, v[0], rtol=0, atol=1e-9):
        return None, "rejected", "all seven values are equal"
    t = CLASSES.index(true_label)
    others = np.delete(v, t)
    top = float(others.max())
    if v[t] < top:
        k = int(np.flatnonzero(v == v.max())[0])
        if policy == "reject":
            return None, "rejected", f"true label {true_label} is not highest ({CLASSES[k]} is)"
        v[t], v[k] = v[k], v[t]
        reasons.append(f"true label not highest: swapped {true_label} with {CLASSES[k]}")
    elif v[t] == top:
        if policy == "reject":
            return None, "rejected", f"true label {true_label} ties for the highest value"
        tied = np.flatnonzero(v == top)
        tied = tied[tied != t]
        moved = 0.01 * v[tied]
        v[tied] -= moved
        v[t] += moved.sum()
        reasons.append(f"tie at the top broken in favour of {true_label}")
    status = "repaired" if reasons else "ok"
    return v / v.sum(), status, "; ".join(reasons)


# ==================================================================================================== backends


@dataclass
class LabelRequest:
    utt_id: str
    text: str
    label: str


@dataclass
class LabelOutcome:
    """What a backend said about one utterance: the raw reply and the 7 numbers it holds (None = none found).
    ``error`` marks a failure worth retrying later (not cached)."""

    raw: str
    values: list[float] | None
    error: str | None = None


class Labeller:
    """A soft-label backend. ``backend``, ``model``, ``mode`` and ``prompt_version`` key the cache."""

    backend = ""
    model = ""
    mode = "generate"
    prompt_version = PROMPT_VERSION
    settings = ""  # anything else that changes the answers (decoding options): part of the cache identity

    def label(self, requests: list[LabelRequest]) -> list[LabelOutcome]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, model={self.model!r}, mode={self.mode!r})"


class LexiconLabeller(Labeller):
    """The offline default: the bilingual cue lexicon plus the true label (:mod:`.lexicon`). Not an LLM."""

    backend = LEXICON_BACKEND
    mode = "lexicon"

    def __init__(self, confidence: float = 0.65):
        from .lexicon import LEXICON_VERSION

        self.confidence = float(confidence)
        self.model = LEXICON_VERSION
        self.prompt_version = f"{LEXICON_VERSION}-c{self.confidence:g}"

    def label(self, requests):
        from .lexicon import lexicon_distribution

        out = []
        for r in requests:
            d = lexicon_distribution(r.text, r.label, self.confidence)
            out.append(LabelOutcome(", ".join(f"{x:.5f}" for x in d), [float(x) for x in d]))
        return out


class GenerateLabeller(Labeller):
    """Chat LLM + :func:`parse_reply` (the paper's method). ``llm`` is a :class:`bber_utils.llm.ChatLLM`."""

    mode = "generate"

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
        from ..llm import LLMError, LLMRefusal, LLMUnavailable

        try:
            rep = self._ask([conv])[0]
            return LabelOutcome(rep, parse_reply(rep))
        except LLMRefusal as e:  # a refusal is the model's answer: cached and rejected
            return LabelOutcome(f"[refused] {e.refusal}", None)
        except LLMUnavailable:
            raise
        except LLMError as e:  # malformed reply, HTTP error after retries: not cached, retried next run
            return LabelOutcome("", None, error=str(e))

    def label(self, requests):
        from concurrent.futures import ThreadPoolExecutor

        convs = [build_messages(r.text, r.label, "generate") for r in requests]
        if self.llm.backend == "transformers":  # one batched generate; nothing to refuse or time out per item
            return [LabelOutcome(rep, parse_reply(rep)) for rep in self._ask(convs)]
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
        from ..llm import TransformersChatLLM

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
    :class:`bber_utils.llm.LLMUnavailable` when the model or server cannot be used. ``concurrency``: requests
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
    from ..llm import build_llm

    if backend == "transformers":
        llm = build_llm("transformers", model, device=device, dtype=dtype, batch_size=batch_size, **llm_kwargs)
    else:
        llm = build_llm("openai", model, base_url=base_url, api_key=api_key, timeout=timeout, **llm_kwargs)
    if mode == "logits":
        return LogitLabeller(llm)
    return GenerateLabeller(llm, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                            concurrency=concurrency)


# ======================================================================================================= cache


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-")[:60] or "x"


def request_key(r: LabelRequest) -> str:
    """``utt_id`` + a hash of what the prompt depends on (text and true label)."""
    h = hashlib.sha1(f"{r.text}\x1f{r.label}".encode("utf-8")).hexdigest()[:16]
    return f"{r.utt_id}|{h}"


class LabelCache:
    """Append-only JSON-lines cache of one (backend, model, prompt version, mode, decoding settings).

    Each line: ``key, utt_id, backend, model, prompt_version, mode, settings, raw, values, status, reason``. A line cut
    short by an interrupted run is skipped (and counted in ``.bad_lines``).
    """

    def __init__(self, cache_dir: str | os.PathLike, labeller: Labeller, shard: tuple[int, int] | None = None):
        ident = json.dumps([labeller.backend, labeller.model, labeller.prompt_version, labeller.mode,
                            labeller.settings])
        h = hashlib.sha1(ident.encode()).hexdigest()[:10]
        name = f"{_slug(labeller.backend)}__{_slug(Path(labeller.model).name or labeller.model)}__{labeller.mode}__{h}"
        self.path = Path(cache_dir) / f"{name}.jsonl"  # the main cache
        # where this process appends: the main cache, or its shard's own part (no two writers on one file)
        self.write_path = self.path if shard is None else self.path.with_name(
            f"{name}.part-{shard[0]:03d}-of-{shard[1]:03d}.jsonl")
        self.provenance = dict(backend=labeller.backend, model=labeller.model,
                               prompt_version=labeller.prompt_version, mode=labeller.mode)
        self.settings = labeller.settings
        self.entries: dict[str, dict] = {}
        self.bad_lines = 0
        for path in [p for p in (self.path, *self.part_paths()) if p.exists()]:  # what every shard finished
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        e = json.loads(line)
                        self.entries[e["key"]] = e
                    except (ValueError, KeyError, TypeError):
                        self.bad_lines += 1

    def part_paths(self) -> list[Path]:
        """The shard parts of this cache (``<cache>.part-I-of-N.jsonl``)."""
        if not self.path.parent.is_dir():
            return []
        return sorted(self.path.parent.glob(f"{self.path.stem}.part-*-of-*.jsonl"))

    def merge_parts(self) -> int:
        """Append every shard part to the main cache (fsync-ed), then remove the parts; returns lines merged.

        Killed midway, the next merge appends a part again: repeated lines of a key are harmless (last wins)."""
        merged = 0
        for part in self.part_paths():
            lines = [line for line in part.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
            if lines and not lines[-1].endswith("\n"):
                lines = lines[:-1]  # a line cut short by a killed shard: dropped (asked again next time)
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(lines)
                f.flush()
                os.fsync(f.fileno())
            part.unlink()
            merged += len(lines)
        return merged

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def add(self, items: list[dict]) -> None:
        """Append entries and flush them to disk (so an interruption loses at most the batch in flight)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.write_path, "a", encoding="utf-8") as f:
            for e in items:
                e = {**e, **self.provenance, "settings": self.settings}
                self.entries[e["key"]] = e
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


# ==================================================================================================== labelling


def _requests(df) -> list[LabelRequest]:
    missing = [c for c in ("utt_id", "text", "label") if c not in df.columns]
    if missing:
        raise ValueError(f"the table to label lacks columns {missing}")
    bad = ~df["label"].isin(CLASSES)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(f"row {i} (utt_id={df['utt_id'].iloc[i]!r}): label {df['label'].iloc[i]!r} not in {CLASSES}")
    return [LabelRequest(str(u), "" if t is None or (isinstance(t, float) and math.isnan(t)) else str(t), str(lab))
            for u, t, lab in zip(df["utt_id"], df["text"], df["label"])]


def label_utterances(df, labeller: Labeller, cache_dir: str | os.PathLike, batch_size: int = 8,
                     policy: str = "swap", progress: bool = True, shard: Any = None):
    """Soft labels for the rows of ``df`` (``utt_id``, ``text``, ``label``; ``corpus`` kept when present).

    Cached answers are reused; the rest is asked in batches of ``batch_size`` and appended to the cache after
    each batch, so an interrupted run continues where it stopped. Returns one row per input row with
    :data:`SOFT_LABEL_COLUMNS` + :data:`EXTRA_COLUMNS`; rejected rows have NaN probabilities, rows the backend
    failed on (not cached; retried next time) have ``status="error"``. ``.attrs["computed"]`` counts the
    utterances asked this time.

    ``shard=(index, count)`` (or ``"index/count"``): only the rows at positions ``index, index + count, ...``
    are asked and returned, appended to this shard's part of the cache; a call without ``shard`` merges the
    parts into the main cache first.
    """
    import numpy as np
    import pandas as pd
    from bber_utils.progress import tqdm

    from ..features.store import check_shard

    shard = check_shard(shard)
    if shard is not None:
        df = df.iloc[shard[0]::shard[1]]
    requests = _requests(df)
    if shard is None:
        LabelCache(cache_dir, labeller).merge_parts()
    cache = LabelCache(cache_dir, labeller, shard)
    todo = [r for r in requests if request_key(r) not in cache]
    todo = list({request_key(r): r for r in todo}.values())  # a duplicated row is asked once
    errors: dict[str, str] = {}
    bar = tqdm(total=len(todo), desc=f"LS-LLM {labeller.backend}", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        outcomes = labeller.label(chunk)
        if len(outcomes) != len(chunk):
            raise RuntimeError(f"{labeller!r} returned {len(outcomes)} answers for {len(chunk)} utterances")
        entries = []
        for r, o in zip(chunk, outcomes):
            if o.error is not None:
                errors[request_key(r)] = o.error
                continue
            _, status, reason = validate_distribution(o.values, r.label, policy)
            entries.append(dict(key=request_key(r), utt_id=r.utt_id, raw=o.raw, values=o.values, status=status,
                                reason=reason))
        cache.add(entries)
        bar.update(len(chunk))
    bar.close()

    rows = []
    for r in requests:
        key = request_key(r)
        row: dict[str, Any] = {"utt_id": r.utt_id, "label": r.label, **cache.provenance}
        if key in errors or key not in cache:
            row.update({c: np.nan for c in CLASSES}, status="error", reason=errors.get(key, "not labelled"),
                       llm_argmax=None, raw="")
        else:
            e = cache.entries[key]
            dist, status, reason = validate_distribution(e["values"], r.label, policy)  # policy may differ now
            row.update({c: (np.nan if dist is None else float(dist[k])) for k, c in enumerate(CLASSES)},
                       status=status, reason=reason, raw=e["raw"],
                       llm_argmax=(CLASSES[int(np.argmax(e["values"]))] if e["values"] is not None
                                   and len(e["values"]) == NUM_CLASSES else None))
        rows.append(row)
    out = pd.DataFrame(rows)
    if "corpus" in df.columns:
        out["corpus"] = df["corpus"].astype(str).to_numpy()
    else:
        out["corpus"] = None
    out = out[SOFT_LABEL_COLUMNS + EXTRA_COLUMNS]
    out.attrs["computed"] = len(todo)
    out.attrs["cache"] = str(cache.path)
    out.attrs["cache_bad_lines"] = cache.bad_lines
    return out


def train_manifests(workdir: str | os.PathLike, corpora: Iterable[str] | None = None):
    """The train manifests of every corpus in ``<workdir>/manifests`` (or of ``corpora``), concatenated."""
    import pandas as pd

    from ..corpora.manifest import load_manifest
    from ..paths import run_dirs

    dirs = run_dirs(workdir)
    paths = sorted(dirs.manifests.glob("*_train.parquet"))
    if corpora is not None:
        wanted = set(corpora)
        paths = [p for p in paths if p.stem[: -len("_train")] in wanted]
    if not paths:
        raise FileNotFoundError(f"no train manifests in {dirs.manifests}: run notebook 01 (bber prepare) first")
    return pd.concat([load_manifest(p) for p in paths], ignore_index=True)


def label_workdir(workdir: str | os.PathLike, backend: str = "lexicon", model: str | None = None,
                  mode: str = "generate", corpora: Iterable[str] | None = None, batch_size: int = 8,
                  policy: str = "swap", limit: int = 0, progress: bool = True, labeller: Labeller | None = None,
                  shard: Any = None, **backend_kwargs: Any):
    """Label the train manifests of ``workdir`` and write ``ls_llm/soft_labels.parquet``; returns the table.

    ``limit`` > 0 labels only the first N utterances of each corpus (quick looks at a slow LLM).
    ``shard=(index, count)``: label only this shard's share into its part of the cache and return it, without
    writing the table; the next call without ``shard`` merges the parts, labels what is still missing and
    writes the table.
    """
    from ..features.store import check_shard

    shard = check_shard(shard)
    from ..paths import run_dirs

    dirs = run_dirs(workdir)
    df = train_manifests(workdir, corpora)
    if limit and limit > 0:
        df = df.groupby("corpus", sort=False).head(int(limit)).reset_index(drop=True)
    labeller = labeller or build_labeller(backend, model, mode, batch_size=batch_size, **backend_kwargs)
    table = label_utterances(df, labeller, dirs.ls_llm / "cache", batch_size=batch_size, policy=policy,
                             progress=progress, shard=shard)
    if shard is not None:
        return table
    out = dirs.ls_llm / SOFT_LABELS_FILE
    if len(table) and not table["status"].isin(USABLE_STATUSES).any():
        reasons = table["reason"].value_counts().head(3).to_dict()
        raise ValueError(f"{labeller!r} gave no usable soft label for any of {len(table)} utterances "
                         f"(most common reasons: {reasons}); {out} was left unchanged")
    save_soft_labels(table, out)
    return table


def save_soft_labels(table, path: str | os.PathLike) -> Path:
    """Write the soft-label table atomically (Parquet)."""
    from ..fileio import atomic_write

    return atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))


# ====================================================================================== reading the tables back


def reference_model_name(csv: str | os.PathLike) -> str:
    """``Qwen3-4B_emotions_meld.csv`` -> ``Qwen3-4B``."""
    stem = Path(csv).stem
    return stem.split("_emotions")[0] if "_emotions" in stem else stem


_MELD_NATIVE = re.compile(r"^dia\d+_utt\d+$")


def load_reference_labels(csv: str | os.PathLike, corpus: str = "auto", split: str = "train"):
    """A published reference label file, as it is, indexed (and keyed) by ``utt_id``.

    ``utt_id = make_utt_id(corpus, split, video_name)``; ``corpus="auto"`` takes ``meld`` for MELD-style names
    (``dia12_utt3``) and ``resd`` otherwise, row by row (the union file holds both). ``label`` is the
    ground truth mapped to the common classes.
    """
    import pandas as pd

    from ..corpora.manifest import make_utt_id
    from ..labels import map_label

    path = Path(csv)
    if not path.exists():
        raise FileNotFoundError(f"reference label file {path} does not exist")
    df = pd.read_csv(path)
    missing = [c for c in REFERENCE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a reference label file, missing columns {missing}")
    names = df["video_name"].astype(str).str.strip()
    if corpus == "auto":
        corpora = ["meld" if _MELD_NATIVE.match(n) else "resd" for n in names]
    else:
        corpora = [corpus] * len(df)
    df.insert(0, "utt_id", [make_utt_id(c, split, n) for c, n in zip(corpora, names)])
    df.insert(1, "corpus", corpora)
    labels = []
    for i, (g, c) in enumerate(zip(df["ground_truth"], corpora)):
        try:
            labels.append(map_label(g, c))
        except ValueError as e:
            raise ValueError(f"{path}: row {i} (video_name={names.iloc[i]!r}): {e}") from None
    df.insert(2, "label", labels)
    dup = df["utt_id"].duplicated()
    if dup.any():
        raise ValueError(f"{path}: duplicate video_name {df['video_name'][dup].iloc[0]!r}")
    return df.set_index("utt_id", drop=False)


def reference_to_soft_labels(ref, model: str = "reference", policy: str = "swap"):
    """A reference label table (:func:`load_reference_labels`) in our soft-label format, validated."""
    import numpy as np
    import pandas as pd

    rows = []
    for r in ref.itertuples(index=False):
        values = [float(getattr(r, c)) for c in CLASSES]
        dist, status, reason = validate_distribution(values, r.label, policy)
        row = {"utt_id": r.utt_id, "backend": "reference", "model": model, "prompt_version": "reference",
               "mode": "generate", "status": status, "reason": reason, "label": r.label,
               "llm_argmax": CLASSES[int(np.argmax(values))], "corpus": r.corpus, "raw": r.response_clean}
        row.update({c: (np.nan if dist is None else float(dist[k])) for k, c in enumerate(CLASSES)})
        rows.append(row)
    return pd.DataFrame(rows, columns=SOFT_LABEL_COLUMNS + EXTRA_COLUMNS)


def load_soft_labels(path: str | os.PathLike, usable_only: bool = True, corpus: str = "auto",
                     split: str = "train", policy: str = "swap"):
    """Read a soft-label table: ours (Parquet or CSV) or a reference ``*_emotions_*.csv`` (converted).

    With ``usable_only`` (default) only rows with a valid distribution (status ok / repaired) are returned, so
    a trainer can look them up by ``utt_id``; utterances without one fall back to one-hot there.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"soft-label table {path} does not exist (run notebook 05 / bber label)")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        head = pd.read_csv(path, nrows=0)
        if "video_name" in head.columns and "response_clean" in head.columns:
            table = reference_to_soft_labels(load_reference_labels(path, corpus, split),
                                             reference_model_name(path), policy)
        else:
            table = pd.read_csv(path)
    missing = [c for c in ("utt_id", *CLASSES) if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a soft-label table, missing columns {missing}")
    if usable_only:
        ok = table[list(CLASSES)].notna().all(axis=1)
        if "status" in table.columns:
            ok &= table["status"].isin(USABLE_STATUSES)
        table = table[ok].reset_index(drop=True)
    return table


# =========================================================================================== looking at results


def mean_by_true_class(table):
    """``7 x 7`` DataFrame: the mean soft label (columns) of the usable rows of each true class (rows)."""
    usable = table[table["status"].isin(USABLE_STATUSES)]
    return usable.groupby("label")[list(CLASSES)].mean().reindex(list(CLASSES))


def entropy(table):
    """Entropy (nats) of each usable row's distribution, as a Series indexed like ``table``."""
    import numpy as np

    usable = table[table["status"].isin(USABLE_STATUSES)]
    p = usable[list(CLASSES)].to_numpy(dtype=float)
    return usable.assign(_h=-(np.where(p > 0, p * np.log(np.clip(p, 1e-12, None)), 0.0)).sum(axis=1))["_h"]


def argmax_agreement(table):
    """Per true class: how often the backend's own top class (before any repair) is the true label."""
    import pandas as pd

    answered = table[table["llm_argmax"].notna()]
    agree = (answered["llm_argmax"] == answered["label"]).groupby(answered["label"]).agg(["mean", "size"])
    agree = agree.rename(columns={"mean": "agreement", "size": "utterances"}).reindex(list(CLASSES))
    total = pd.DataFrame({"agreement": [(answered["llm_argmax"] == answered["label"]).mean()],
                          "utterances": [len(answered)]}, index=["all"])
    return pd.concat([agree, total])


def status_summary(table):
    """Counts per status and reason (reasons stripped of class names, so that alike reasons group)."""
    import pandas as pd

    reason = table["reason"].fillna("").str.replace(r"swapped \w+ with \w+", "swapped with the max", regex=True)
    reason = reason.str.replace(r"\(sum was [^)]*\)", "", regex=True).str.replace(r"in favour of \w+", "",
                                                                                   regex=True)
    reason = reason.str.replace(r"(negative value) \S+ for \w+", r"\1", regex=True).str.strip()
    return (pd.DataFrame({"status": table["status"], "reason": reason}).value_counts().rename("utterances")
            .reset_index())


# ============================================================================================================ CLI


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("label", help="LS-LLM: soft labels for the train manifests of a work folder",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="run folder holding manifests/ (notebook 01)")
    p.add_argument("--backend", choices=LABEL_BACKENDS, default="lexicon",
                   help="lexicon: offline, not an LLM; transformers: local model; openai: OpenAI-compatible "
                        "server; reference: published label file")
    p.add_argument("--model", help="hub id, local folder or server model name (transformers, openai)")
    p.add_argument("--mode", choices=MODES, default="generate", help="generate + parse, or class-word logits")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    p.add_argument("--reference-csv", help="a reference *_emotions_*.csv (backend reference)")
    p.add_argument("--corpus", default="auto", help="corpus of the reference file's rows (auto: from the names)")
    p.add_argument("--corpora", nargs="*", help="label only these corpora's train manifests")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (openai)")
    p.add_argument("--policy", choices=POLICIES, default="swap",
                   help="when the true label is not highest: swap it with the max, or reject the reply")
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, default=0, help="label at most N utterances per corpus (0 = all)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="label only utterances i = I (mod N) into this shard's part of the cache (run N in "
                        "parallel, e.g. one per GPU), then once without --shard to merge and write the table")
    p.set_defaults(func=_cli_label)


def _cli_label(args: argparse.Namespace) -> int:
    import sys

    from ..llm import LLMUnavailable

    try:
        table = label_workdir(args.workdir, backend=args.backend, model=args.model, mode=args.mode,
                              corpora=args.corpora, batch_size=args.batch_size, policy=args.policy,
                              limit=args.limit, base_url=args.base_url, reference_csv=args.reference_csv,
                              corpus=args.corpus, device=args.device, max_new_tokens=args.max_new_tokens,
                              concurrency=args.concurrency, shard=args.shard)
    except (LLMUnavailable, FileNotFoundError, ValueError) as e:
        print(f"bber label: {e}", file=sys.stderr)
        return 2
    print(status_summary(table).to_string(index=False))
    if args.shard:
        print(f"shard {args.shard}: {len(table)} utterances, {table.attrs.get('computed', 0)} asked now; run "
              f"once without --shard to merge the parts and write the table")
    else:
        print(f"{len(table)} utterances, {table.attrs.get('computed', 0)} asked now; wrote "
              f"{Path(args.workdir) / 'ls_llm' / SOFT_LABELS_FILE}")
    return 0
