"""TUG templates written by an LLM, validated, retried with feedback, cached; built-in ones as the fallback.

The paper asked ChatGPT-4o, shown a few MELD utterances of an emotion, for a JSON object of ``subjects, verbs,
interjections, contexts, templates``. ``build_template_prompt`` asks the same in our own words, for English or
Russian, with examples drawn (seeded) from the train manifests of that language. ``generate_templates`` checks
each reply with ``templates.validate_templates`` and, when it is not JSON or not valid, tries again with the
errors fed back, after a growing pause. ``resolve_templates`` does this for every (language, emotion), caching
each valid answer under ``<workdir>/tug/templates/{language}/`` keyed by (model, ``PROMPT_VERSION``, emotion,
language), so a rerun costs nothing; where the LLM cannot be used (no key, unreachable server, timeout) or never
gives valid templates, the built-in templates are used and the reason is kept (``TemplateSet.note``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bber_utils.core.fileio import atomic_write_text, locked
from bber_utils.core.labels import CLASSES
from bber_utils.core.paths import run_dirs
from bber_utils.corpora.manifest import load_manifest
from bber_utils.synthesis.llm import LLMError, LLMUnavailable, build_llm
from bber_utils.synthesis.templates import (DIA_TAGS, SCHEMA_KEYS, load_templates, normalise_templates,
                                            validate_templates)

if TYPE_CHECKING:
    import pandas as pd

    from bber_utils.synthesis.llm import ChatLLM
    from bber_utils.synthesis.templates import ValidationReport

PROMPT_VERSION = "tug-prompt-v1"
TEMPLATE_SOURCES = ("builtin", "openai", "transformers")
LANGUAGE_NAMES = {"en": "English", "ru": "Russian"}
# How many items the prompt asks for (part of PROMPT_VERSION: change both together).
ITEM_COUNTS = {"subjects": 40, "verbs": 40, "interjections": 15, "contexts": 40}
TEMPLATE_COUNT = (8, 15)
N_EXAMPLES = 5

SYSTEM_PROMPT = (
    "You help build a speech emotion recognition data set. You write building blocks from which short, natural, "
    "spoken utterances are composed, each clearly expressing one emotion. You answer with JSON only."
)


def template_json_schema() -> dict:
    """The JSON schema of a reply: five lists of strings (the paper's template schema)."""

    return {
        "title": "tug_templates",
        "type": "object",
        "properties": {k: {"type": "array", "items": {"type": "string"}} for k in SCHEMA_KEYS},
        "required": list(SCHEMA_KEYS),
        "additionalProperties": False,
    }


def build_template_prompt(emotion: str, language: str, examples: list[str]) -> list[dict[str, str]]:
    """The chat messages asking for one emotion's templates in ``language`` ("en" | "ru")."""

    if emotion not in CLASSES:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {CLASSES}")
    if language not in LANGUAGE_NAMES:
        raise ValueError(f"TUG has no LLM template prompt for language {language!r} (prompts exist for "
                         f"{', '.join(sorted(LANGUAGE_NAMES))}): add its name to tug_llm.LANGUAGE_NAMES, or train "
                         f"with tug_ratio 0")
    lang = LANGUAGE_NAMES[language]
    lines = [
        f"Emotion: {emotion}. Language of every string: {lang}.",
        "",
    ]
    if examples:
        lines += [f"Real {lang} utterances labelled '{emotion}', for tone and register only (do not copy them):"]
        lines += [f"- {e}" for e in examples]
        lines += [""]
    lines += [
        f"Write a JSON object with five lists of {lang} strings:",
        f'- "subjects": about {ITEM_COUNTS["subjects"]} noun phrases that can start a sentence '
        "(a person, a thing, an event).",
        f'- "verbs": about {ITEM_COUNTS["verbs"]} verb phrases that follow any subject to form a clause.',
        f'- "interjections": about {ITEM_COUNTS["interjections"]} short exclamations typical of {emotion}.',
        f'- "contexts": about {ITEM_COUNTS["contexts"]} phrases or clauses that add a circumstance or a reason.',
        f'- "templates": {TEMPLATE_COUNT[0]} to {TEMPLATE_COUNT[1]} sentence patterns that combine them with the '
        "placeholders {s} (subject), {v} (verb), {i} (interjection) and {c} (context), e.g. \"{i} {s} {v}, {c}.\"",
        "",
        "Rules:",
        "- Every combination of a template with any items must read as one natural spoken utterance of 5 to 20 "
        f"words that clearly expresses {emotion}.",
        "- Templates use only the placeholders {s}, {v}, {i}, {c}; the other lists contain no braces.",
        "- Interjections and contexts may contain at most one non-verbal cue, written in parentheses, chosen only "
        "from: " + ", ".join(f"({t})" for t in DIA_TAGS) + ". No other parenthesised text.",
        "- No item repeats; no numbering; plain text inside the strings.",
    ]
    if language == "ru":
        lines.append("- Subjects are singular and verbs are in the present tense, third person singular, so that "
                     "any subject agrees with any verb.")
    lines.append("Answer with the JSON object only.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def parse_template_reply(reply: str) -> dict:
    """The JSON object in ``reply`` (code fences and text around it tolerated); ``ValueError`` if there is none."""
    text = reply.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0:
        raise ValueError(f"the reply holds no JSON object: {reply[:120]!r}")
    if end <= start:
        raise ValueError("the reply's JSON object is incomplete (cut off? allow more new tokens)")
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError("the reply's JSON is not an object")
    return obj


@dataclass
class GenerationResult:
    """What ``generate_templates`` got: valid ``templates`` (or None), its validation report, every attempt's
    problems (``errors[k]`` lists attempt k's), and the number of attempts."""

    templates: dict | None
    report: "ValidationReport | None"
    attempts: int
    errors: list[list[str]] = field(default_factory=list)


def generate_templates(llm: "ChatLLM", emotion: str, language: str, examples: list[str], max_attempts: int = 3,
                       backoff_s: float = 2.0, max_new_tokens: int = 4096, temperature: float = 0.0,
                       seed: int | None = 42) -> GenerationResult:
    """Ask ``llm`` for one emotion's templates until they validate, at most ``max_attempts`` times.

    A reply that is not JSON, fails validation, is refused or is malformed counts as a failed attempt; the next
    one continues the conversation with the problems listed, after ``backoff_s * 2**k`` seconds.
    ``LLMUnavailable`` (no key, unreachable server, timeout) is raised at once: retrying cannot help.
    """

    messages = build_template_prompt(emotion, language, examples)
    schema = template_json_schema()
    result = GenerationResult(templates=None, report=None, attempts=0)
    for attempt in range(max_attempts):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        result.attempts = attempt + 1
        try:
            reply = llm.chat(messages, json_schema=schema, max_new_tokens=max_new_tokens, temperature=temperature,
                             seed=None if seed is None else seed + attempt)
        except LLMUnavailable:
            raise
        except LLMError as exc:
            result.errors.append([str(exc)])
            continue
        try:
            obj = parse_template_reply(reply)
            problems = []
        except ValueError as exc:
            obj, problems = None, [str(exc)]
        if obj is not None:
            report = validate_templates(obj)
            result.report = report
            if report.ok:
                result.templates = normalise_templates(obj)
                return result
            problems = report.errors
        result.errors.append(problems)
        feedback = "Your answer cannot be used:\n" + "\n".join(f"- {p}" for p in problems[:20])
        messages = messages + [{"role": "assistant", "content": reply},
                               {"role": "user", "content": feedback + "\nAnswer again with the corrected JSON "
                                                                      "object only."}]
    return result


# --------------------------------------------------------------------------------------------------------------
# Corpus examples, cache, and the per-emotion resolution with fallback
# --------------------------------------------------------------------------------------------------------------

def load_train_texts(workdir: str | os.PathLike) -> "pd.DataFrame":
    """``language, label, text`` of the original rows of every ``<workdir>/manifests/*_train.parquet``."""

    frames = [load_manifest(p) for p in sorted(run_dirs(workdir).manifests.glob("*_train.parquet"))]
    if not frames:
        return pd.DataFrame(columns=["language", "label", "text"])
    df = pd.concat(frames, ignore_index=True)
    return df.loc[df["source"] == "original", ["language", "label", "text"]].reset_index(drop=True)


def corpus_examples(workdir: str | os.PathLike, language: str, emotion: str, k: int = N_EXAMPLES,
                    seed: int = 42, train_texts: "pd.DataFrame | None" = None) -> list[str]:
    """Up to ``k`` distinct texts of ``emotion`` from the original train manifests of ``language`` (seeded).

    Reads ``<workdir>/manifests/*_train.parquet`` (or takes ``train_texts`` from ``load_train_texts``); returns
    ``[]`` when there are none yet.
    """

    df = load_train_texts(workdir) if train_texts is None else train_texts
    texts = df.loc[(df["language"] == language) & (df["label"] == emotion), "text"]
    texts = sorted(set(t.strip() for t in texts if t.strip()))
    if len(texts) <= k:
        return texts
    rng = np.random.default_rng(stable_int(seed, language, emotion))
    return [texts[i] for i in sorted(rng.choice(len(texts), size=k, replace=False))]


def template_cache_path(workdir: str | os.PathLike, model: str, emotion: str, language: str) -> Path:
    """``<workdir>/tug/templates/{language}/{emotion}__{model slug}__{PROMPT_VERSION}.json``."""

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-")[:60]
    digest = hashlib.sha1(model.encode()).hexdigest()[:8]
    return run_dirs(workdir).tug / "templates" / language / f"{emotion}__{slug}-{digest}__{PROMPT_VERSION}.json"


def _read_cache(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))["templates"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return normalise_templates(obj) if validate_templates(obj).ok else None


def _write_cache(path: Path, templates: dict, provenance: dict) -> None:
    atomic_write_text(path, json.dumps({"provenance": provenance, "templates": templates}, ensure_ascii=False,
                                       indent=1))


@dataclass
class TemplateSet:
    """One emotion's templates in one language and where they came from.

    ``source``: ``"builtin"``, ``"{backend}:{model}"`` (written now) or ``"{backend}:{model} (cached)"``;
    ``note``: why the built-in ones were used instead of the LLM's (empty when nothing went wrong).
    """

    language: str
    emotion: str
    templates: dict
    source: str
    report: "ValidationReport"
    note: str = ""
    attempts: int = 0


def resolve_templates(workdir: str | os.PathLike, languages: list[str], source: str = "builtin",
                      llm_model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                      emotions: tuple[str, ...] = CLASSES, seed: int = 42, llm: "ChatLLM | None" = None,
                      max_attempts: int = 3, backoff_s: float = 2.0, timeout: float = 60,
                      max_new_tokens: int = 4096, temperature: float = 0.0,
                      **llm_kwargs: Any) -> dict[tuple[str, str], TemplateSet]:
    """Templates for every (language, emotion): built-in, or from an LLM with cache and built-in fallback.

    ``source``: ``"builtin"`` | ``"openai"`` | ``"transformers"`` (the ``llm.build_llm`` backend, with
    ``llm_model``, ``base_url``, ``api_key``). ``llm``: an already built ``ChatLLM`` (then ``source`` only labels
    it); ``llm_kwargs`` go to ``build_llm`` (e.g. ``device``, ``max_retries``). The LLM is built on the first
    cache miss, once; if it is unavailable every remaining emotion falls back
    to the built-in templates with the reason in ``TemplateSet.note`` (and one warning).
    """

    if source not in TEMPLATE_SOURCES:
        raise ValueError(f"template source {source!r}: expected one of {', '.join(TEMPLATE_SOURCES)}")
    if source != "builtin" and llm is None and not llm_model:
        raise ValueError(f"template source {source!r} needs llm_model (a model name, hub id or folder)")
    model = (llm.model_name if llm is not None else llm_model) or ""
    unavailable = ""
    train_texts = None  # read once, on the first cache miss
    out: dict[tuple[str, str], TemplateSet] = {}
    for language in languages:
        for emotion in emotions:
            if source == "builtin":
                out[(language, emotion)] = _builtin_set(language, emotion)
                continue
            label = f"{source}:{model}"
            cache = template_cache_path(workdir, model, emotion, language)
            with contextlib.ExitStack() as held:
                cached = _read_cache(cache)
                if cached is None and not unavailable:  # one writer per language; a run that waited reads
                    cache.parent.mkdir(parents=True, exist_ok=True)  # what the other one wrote
                    held.enter_context(locked(cache.parent / ".lock", waiting=f"bber tug: another run is writing the "
                                                                              f"{language} templates; waiting"))
                    cached = _read_cache(cache)
                if cached is not None:
                    out[(language, emotion)] = TemplateSet(language, emotion, cached, f"{label} (cached)",
                                                           validate_templates(cached))
                    continue
                if unavailable:
                    out[(language, emotion)] = _builtin_set(language, emotion, note=unavailable)
                    continue
                try:
                    if llm is None:
                        llm = build_llm(source, llm_model, base_url=base_url, api_key=api_key, timeout=timeout,
                                        **llm_kwargs)
                    if train_texts is None:
                        train_texts = load_train_texts(workdir)
                    examples = corpus_examples(workdir, language, emotion, seed=seed, train_texts=train_texts)
                    result = generate_templates(llm, emotion, language, examples, max_attempts=max_attempts,
                                                backoff_s=backoff_s, max_new_tokens=max_new_tokens,
                                                temperature=temperature, seed=seed)
                except LLMUnavailable as exc:
                    unavailable = f"LLM unavailable: {exc}"
                    warnings.warn(f"TUG templates: {unavailable}; using the built-in templates", stacklevel=2)
                    out[(language, emotion)] = _builtin_set(language, emotion, note=unavailable)
                    continue
                if result.templates is not None:
                    _write_cache(cache, result.templates, dict(
                        backend=source, model=model, prompt_version=PROMPT_VERSION, emotion=emotion,
                        language=language, examples=examples, attempts=result.attempts))
                    out[(language, emotion)] = TemplateSet(language, emotion, result.templates, label, result.report,
                                                           attempts=result.attempts)
                    continue
                last = "; ".join(result.errors[-1][:3]) if result.errors else "no reply"
                note = f"no valid templates after {result.attempts} attempts (last: {last})"
                warnings.warn(f"TUG templates {language}/{emotion}: {note}; using the built-in ones", stacklevel=2)
                out[(language, emotion)] = _builtin_set(language, emotion, note=note, attempts=result.attempts)
    return out


def _builtin_set(language: str, emotion: str, note: str = "", attempts: int = 0) -> TemplateSet:
    templates = load_templates(language, emotion)
    return TemplateSet(language, emotion, templates, "builtin", validate_templates(templates), note=note,
                       attempts=attempts)


def templates_table(sets: dict[tuple[str, str], TemplateSet]) -> "pd.DataFrame":
    """One row per (language, emotion): item counts per key, the source, validity, warnings, fallback note."""

    rows = []
    for (language, emotion), ts in sets.items():
        row: dict[str, Any] = dict(language=language, emotion=emotion, source=ts.source)
        row.update({k: len(ts.templates[k]) for k in SCHEMA_KEYS})
        row.update(valid=ts.report.ok, warnings=len(ts.report.warnings), attempts=ts.attempts, note=ts.note)
        rows.append(row)
    return pd.DataFrame(rows)


def stable_int(*parts: Any) -> int:
    """A seed from ``parts`` that does not depend on PYTHONHASHSEED."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")
