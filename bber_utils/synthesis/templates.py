"""TUG templates: the JSON schema, its validator, the built-in EN/RU templates and the seeded composer.

A template file is a JSON object with five lists of strings (the paper's schema)::

    {"subjects": [...], "verbs": [...], "interjections": [...], "contexts": [...],
     "templates": ["{s} {v}, {c}.", "{i} {s} {v}.", ...]}

Templates use only the placeholders ``{s} {v} {i} {c}``. Paralinguistic cues are inline, in parentheses, and
only the 21 tags Dia knows are allowed (``DIA_TAGS``), e.g. ``"(sighs) I don't know"``.

The built-in files live in ``bber_utils/resources/templates/{en,ru}/{emotion}.json``; besides the seven
classes there is ``neutral_wording``: emotionally neutral everyday sentences that the demo corpus speaks with
emotional prosody. They were written for BBER (none of the reference's sentences are used). Russian files
use singular subjects with present-tense verbs, so that any subject agrees with any verb.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bber_utils.core.labels import CLASSES

SLOT_KEYS: tuple[str, ...] = ("subjects", "verbs", "interjections", "contexts")
SCHEMA_KEYS: tuple[str, ...] = SLOT_KEYS + ("templates",)
PLACEHOLDER_TO_SLOT: dict[str, str] = {"s": "subjects", "v": "verbs", "i": "interjections", "c": "contexts"}
DIA_TAGS: tuple[str, ...] = (
    "laughs", "clears throat", "sighs", "gasps", "coughs", "singing", "sings", "mumbles", "beep", "groans",
    "sniffs", "claps", "screams", "inhales", "exhales", "applause", "burps", "humming", "sneezes", "chuckle",
    "whistles",
)
LANGUAGES: tuple[str, ...] = ("en", "ru")
TEMPLATE_NAMES: tuple[str, ...] = CLASSES + ("neutral_wording",)
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "resources" / "templates"

# Spaces that look like a space: warned about and replaced by " " on load.
_SOFT_SPACES = {"\u00a0": "NBSP", "\u202f": "narrow NBSP", "\u2007": "figure space"}
_TAG_RE = re.compile(r"\(([^()]*)\)")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_KNOWN_TAG_RE = re.compile(r"\s*\((?:" + "|".join(re.escape(t) for t in DIA_TAGS) + r")\)\s*", re.IGNORECASE)
_WORD_RE = re.compile(r"\w", re.UNICODE)


class TemplateError(ValueError):
    """A template file that fails validation; the message names the file and the problems."""


@dataclass
class ValidationReport:
    """Result of ``validate_templates``: item counts per key, errors (unusable) and warnings (fixable)."""

    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return f"{'OK' if self.ok else 'INVALID'} ({counts}); {len(self.errors)} errors, {len(self.warnings)} warnings"

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _check_string(where: str, s: str, report: ValidationReport) -> None:
    if not s.strip():
        report.errors.append(f"{where}: empty string")
        return
    for ch, name in _SOFT_SPACES.items():
        if ch in s:
            report.warnings.append(f"{where}: contains {name} (U+{ord(ch):04X}); replaced by a space on load")
    bad = sorted({f"U+{ord(ch):04X}" for ch in s
                  if ch not in _SOFT_SPACES and ch != " " and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cn")})
    if bad:
        report.errors.append(f"{where}: non-printing characters {', '.join(bad)} in {s!r}")
    for tag in _TAG_RE.findall(s):
        if _normalise_spaces(tag).strip().lower() not in DIA_TAGS:
            report.errors.append(f"{where}: disallowed tag ({tag}) in {s!r}; allowed: {', '.join(DIA_TAGS)}")
    if s.count("(") != s.count(")"):
        report.errors.append(f"{where}: unbalanced parentheses in {s!r}")


def validate_templates(obj: object) -> ValidationReport:
    """Check a template object against the schema.

    Errors: not a mapping, a missing key, a key that is not a list of strings, an empty list, an empty string,
    a placeholder other than ``{s} {v} {i} {c}`` (or any placeholder inside a slot item), a template without
    placeholders' slots to fill, a tag that is not one of ``DIA_TAGS``, non-printing characters.
    Warnings: NBSP / narrow NBSP (normalised on load), duplicate items, unknown extra keys, leading or trailing
    spaces.
    """
    report = ValidationReport()
    if not isinstance(obj, dict):
        report.errors.append(f"expected a JSON object with keys {list(SCHEMA_KEYS)}, got {type(obj).__name__}")
        return report
    for key in obj:
        if key not in SCHEMA_KEYS:
            report.warnings.append(f"unknown key {key!r} is ignored")
    for key in SCHEMA_KEYS:
        items = obj.get(key)
        if items is None:
            report.errors.append(f"missing key {key!r}")
            continue
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            report.errors.append(f"{key!r} must be a list of strings")
            continue
        report.counts[key] = len(items)
        if not items:
            report.errors.append(f"{key!r} is empty")
        seen: set[str] = set()
        for n, s in enumerate(items):
            where = f"{key}[{n}]"
            _check_string(where, s, report)
            if s != s.strip():
                report.warnings.append(f"{where}: leading or trailing spaces in {s!r}")
            norm = _normalise_spaces(s).strip()
            if norm in seen:
                report.warnings.append(f"{where}: duplicate item {s!r}")
            seen.add(norm)
            names = _PLACEHOLDER_RE.findall(s)
            if key == "templates":
                unknown = [p for p in names if p not in PLACEHOLDER_TO_SLOT]
                if unknown:
                    report.errors.append(f"{where}: unknown placeholders {['{' + p + '}' for p in unknown]} in {s!r}")
                if not names:
                    report.errors.append(f"{where}: no placeholder in {s!r}")
                if _PLACEHOLDER_RE.sub("", s).count("{") or _PLACEHOLDER_RE.sub("", s).count("}"):
                    report.errors.append(f"{where}: unbalanced braces in {s!r}")
            elif names or "{" in s or "}" in s:
                report.errors.append(f"{where}: braces are only allowed in templates: {s!r}")
    return report


def _normalise_spaces(s: str) -> str:
    for ch in _SOFT_SPACES:
        s = s.replace(ch, " ")
    return s


def normalise_templates(obj: dict) -> dict:
    """The five schema lists with NBSP-like spaces replaced, items trimmed, exact duplicates dropped."""
    out: dict[str, list[str]] = {}
    for key in SCHEMA_KEYS:
        seen: dict[str, None] = {}
        for s in obj[key]:
            seen.setdefault(re.sub(r" {2,}", " ", _normalise_spaces(s)).strip(), None)
        out[key] = list(seen)
    return out


def _template_path(language: str, emotion: str, source: str | os.PathLike | None) -> Path:
    if source is None:
        if language not in LANGUAGES:
            raise TemplateError(f"TUG has no built-in templates for language {language!r} (they exist for "
                                f"{', '.join(LANGUAGES)}): add JSON templates under {BUILTIN_DIR}/{language}/, or "
                                f"train with tug_ratio 0")
        if emotion not in TEMPLATE_NAMES:
            raise TemplateError(f"no built-in templates for {emotion!r}; known: {TEMPLATE_NAMES}")
        return BUILTIN_DIR / language / f"{emotion}.json"
    src = Path(source)
    if src.is_file():
        return src
    for cand in (src / language / f"{emotion}.json", src / f"{emotion}.json"):
        if cand.exists():
            return cand
    raise TemplateError(f"no template file for {language}/{emotion} in {src} "
                        f"(looked for {language}/{emotion}.json and {emotion}.json)")


def load_templates(language: str, emotion: str, source: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Load, validate and normalise one template file.

    ``source=None`` reads the built-in file; a folder is searched for ``{language}/{emotion}.json`` and then
    ``{emotion}.json`` (the reference's layout); a file path is read as it is. Raises ``TemplateError`` naming
    the file when the JSON is broken or has validation errors; warnings are issued with ``warnings.warn``.
    """
    path = _template_path(language, emotion, source)
    try:
        obj = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TemplateError(f"{path}: cannot read template JSON ({exc})") from exc
    report = validate_templates(obj)
    if not report.ok:
        raise TemplateError(f"{path}: invalid templates\n{report}")
    if report.warnings:
        warnings.warn(f"{path}: {len(report.warnings)} template warnings, e.g. {report.warnings[0]}", stacklevel=2)
    return normalise_templates(obj)


def merge_templates(*objs: dict) -> dict[str, list[str]]:
    """Union of several template objects (each list concatenated, duplicates dropped, order kept)."""
    out: dict[str, list[str]] = {}
    for key in SCHEMA_KEYS:
        out[key] = list(dict.fromkeys(s for obj in objs for s in obj[key]))
    return out


def strip_tags(text: str) -> str:
    """Remove the DIA paralinguistic tags, e.g. ``"(sighs) Fine."`` -> ``"Fine."``, and tidy the spacing."""
    return clean_utterance(_KNOWN_TAG_RE.sub(" ", text))


def split_on_tags(text: str) -> list[str]:
    """The text between DIA tags: ``"Oh (sighs) fine"`` -> ``["Oh", "fine"]`` (empty pieces kept)."""
    return [piece.strip() for piece in _KNOWN_TAG_RE.split(text)]


def has_tag(text: str) -> bool:
    """True when ``text`` holds at least one of the DIA tags."""
    return bool(_KNOWN_TAG_RE.search(text))


def count_words(text: str) -> int:
    """Words without the tags: whitespace-separated tokens that contain a letter or digit."""
    return sum(1 for tok in strip_tags(text).split() if _WORD_RE.search(tok))


def clean_utterance(text: str) -> str:
    """The composer's clean-up: no space before punctuation, ".." -> "." (keeping "..."), a space after ")" and
    before "(", no doubled marks like "!." ",." "!,", single spaces, trimmed, each sentence capitalised (not after
    an ellipsis)."""
    t = _normalise_spaces(text)
    t = re.sub(r"(?<=\w)\(", " (", t)
    t = re.sub(r"\)(?=[\w\"«])", ") ", t)
    t = re.sub(r"\s+([,.!?;:…])", r"\1", t)
    t = re.sub(r"(?<!\.)\.\.(?!\.)", ".", t)
    t = re.sub(r"([!?…])\.(?!\.)", r"\1", t)
    t = re.sub(r",\s*([.!?])", r"\1", t)
    t = re.sub(r"([!?])\s*,", r"\1", t)
    t = re.sub(r"(?<!\.)\.,", ",", t)
    t = re.sub(r"([,;:])\1+", r"\1", t)
    t = re.sub(r"\s{2,}", " ", t).strip()
    t = re.sub(r"^[,;:—–-]\s*", "", t)
    t = re.sub(r"((?:(?<!\.)\.(?!\.)|[!?])\s+(?:\([^()]*\)\s+)?)(\w)", lambda m: m.group(1) + m.group(2).upper(), t)
    if t and t[0].islower():
        t = t[0].upper() + t[1:]
    return t


def compose_utterances(templates: dict, n: int, seed: int, min_words: int = 5, max_words: int = 20,
                       max_attempts: int | None = None) -> list[str]:
    """``n`` unique utterances filled from ``templates`` (seeded with a numpy Generator).

    Each attempt samples a template, a subject, a verb, an interjection and a context uniformly. When the
    template uses both ``{i}`` and ``{c}`` and both hold a tag, the tags of one of them (chosen at random) are
    stripped, as in the paper. The result is cleaned (``clean_utterance``) and kept if it has ``min_words`` to
    ``max_words`` words (tags do not count) and is new. After ``max_attempts`` (default ``50 * n``) attempts it
    returns what it has and warns. The order depends only on ``seed``, not on ``PYTHONHASHSEED``.
    """
    report = validate_templates(templates)
    if not report.ok:
        raise TemplateError(f"cannot compose from invalid templates\n{report}")
    if n <= 0:
        return []
    tpl = normalise_templates(templates)
    rng = np.random.default_rng(seed)
    max_attempts = 50 * n if max_attempts is None else max_attempts
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(max_attempts):
        template = tpl["templates"][rng.integers(len(tpl["templates"]))]
        slots = {p: tpl[key][rng.integers(len(tpl[key]))] for p, key in PLACEHOLDER_TO_SLOT.items()}
        strip_first = rng.random() < 0.5
        if "{i}" in template and "{c}" in template and has_tag(slots["i"]) and has_tag(slots["c"]):
            victim = "c" if strip_first else "i"
            slots[victim] = _KNOWN_TAG_RE.sub(" ", slots[victim]).strip()
        text = clean_utterance(_PLACEHOLDER_RE.sub(lambda m: slots[m.group(1)], template))
        if not (min_words <= count_words(text) <= max_words) or text in seen:
            continue
        seen.add(text)
        out.append(text)
        if len(out) == n:
            return out
    warnings.warn(f"compose_utterances: found only {len(out)} of {n} unique utterances of {min_words}-{max_words} "
                  f"words in {max_attempts} attempts; add more slot items or templates", stacklevel=2)
    return out
