"""LS-LLM replies: read an LLM's reply into 7 numbers (or a reason why not), then validate and repair them.

Owns :func:`read_reply` (text -> :class:`Reply`), :func:`parse_reply` (its values only) and
:func:`validate_distribution` (7 numbers + true label -> distribution, status, reason). Pure functions on strings
and numbers: this file imports no torch and no pandas, does no I/O and knows nothing of backends or caches.

What a reply must be to be read (issue 18, 20):

* **Named values** (``neutral: 0.6``, ``Neutral (0.60)``, ``neutral 0.6``, ``neutral=0.6``, ``- Neutral — 60%``,
  ``**Happiness**: 0.1``, ``"fear": 0.03``, ``neutral_prob: 0.6``, ``0.6 for neutral``; any order, any case,
  English or Russian names and the synonyms in :data:`CLASS_ALIASES`): whenever a class name is tied to a number,
  the names decide the mapping. The answer is the last block of named values that names each of the seven
  classes exactly once; when no block does, the reply is rejected with a reason (a class missing, one named
  twice, or an emotion that is not one of the seven). Named numbers need not sum to 1 (the validator
  renormalises).
* **A list of 7 numbers** without names (``0.7, 0.1, ...``, ``[0.7, ...]``, one per line, decimal commas
  ``0,7 0,1 ...``, percentages), in the prompt's order, or in the order of a header line that names all seven
  classes. The numbers must stand together (only separators between them: prose with stray numbers is no list)
  and must be a distribution: values at most 1 summing to about 1, or percentages (``%``, or values at most
  100 summing to about 100), see :data:`SUM_RANGE`. Ranks such as ``7,6,5,4,3,2,1`` are rejected.
* Always: ``<think>`` blocks are dropped; ``sum = 1.00000``-like clauses and counts (``the 7 probabilities``)
  are not values; a ``nan`` or ``inf`` anywhere in the answer rejects the reply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bber_utils.core.labels import CLASSES, NUM_CLASSES

PARSER_VERSION = "bber-replies-v2"  # recorded with every cached reply; older entries are read again
POLICIES = ("swap", "reject")
USABLE_STATUSES = ("ok", "repaired")

# Tolerances
TINY_NEGATIVE = 1e-3  # values in [-1e-3, 0) are rounding noise: clipped to 0 and counted
SUM_OK = 0.01  # |sum - 1| up to this is rounding (status stays "ok"); beyond it renormalising is a repair
# An unnamed list is a distribution when each value is at most 1 and the sum lies in SUM_RANGE (or, for
# percentages, each at most 100 and the sum in 100 x SUM_RANGE). Wide on purpose: small models add badly (the
# reference's Qwen3-4B replies sum to 0.90 ... 1.62); ranks (7,6,5,4,3,2,1: 28) and prose numbers fall outside.
SUM_RANGE = (0.5, 2.0)
NO_NUMBERS = "no 7 numbers found in the reply"

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
# Emotions that are not one of the seven: tied to a number they make a reply "name more than the seven classes".
OTHER_EMOTIONS = ("contempt", "love", "calm", "excite", "frustrat", "confus", "anxi", "trust", "anticipat",
                  "shame", "guilt", "bored", "pride", "relief", "embarrass", "annoy", "amuse", "worr", "nervous",
                  "disappoint", "curio", "gratitude", "презрен", "любов", "тревог", "стыд", "вин", "интерес")

_NUM = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUM_OR_COMMA = r"[-+]?(?:\d+(?:[.,]\d+)?|[.,]\d+)(?:[eE][-+]?\d+)?"
_NAME = r"(?P<name>[^\W\d_]+)(?:_[^\W\d_]+)?"  # neutral, Happiness, neutral_prob
_NAME_FIRST = re.compile(
    _NAME + r"[*_\"'`]*[ \t]*(?:\([^()\n\d]{0,40}\)[ \t]*)?"  # closing markup, a parenthetical: (calm)
    r"(?:[:=|\-\u2013\u2014]+[ \t*_\"'`]*)?\(?[ \t]*"  # ':' '=' dashes, an opening '(' or just spaces
    r"(?P<num>" + _NUM_OR_COMMA + r")(?![\d.])[ \t]*(?P<pct>%)?", re.UNICODE)
_NUM_FIRST = re.compile(
    r"(?<![\w.,])(?P<num>" + _NUM + r")[ \t]*(?P<pct>%)?[ \t]*(?:\(|for\b|to\b|[:=\-\u2013\u2014])?[ \t]*[*_\"'`]*"
    + _NAME, re.UNICODE | re.IGNORECASE)
_TOKEN = re.compile(r"(?<![\w.])(?P<num>" + _NUM + r")(?P<pct>[ \t]*%)?(?![\w])")
_TOKEN_COMMA = re.compile(r"(?<![\w,.])(?P<num>[-+]?\d+(?:,\d+)?)(?P<pct>[ \t]*%)?(?![\w]|,\d)")
_GAP = re.compile(r"[\s,;|/\[\]()]*")
_GAP_COMMA = re.compile(r"[ \t;|/\[\]()]+|[ \t]*;[ \t]*|,[ \t]+")  # in a decimal-comma list, "," needs a space
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_SINGLE = re.compile(r"^[\s,;()\[\]]*(?P<num>" + _NUM + r")(?P<pct>[ \t]*%)?[\s,;()\[\]]*$")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_NONFINITE = re.compile(r"(?<![^\W\d_])(?:nan|inf(?:inity)?)(?![^\W\d_])|\u221e", re.IGNORECASE | re.UNICODE)
_SUM_CLAUSE = re.compile(r"\b(?:sum|sums|summing|summed|total|add(?:s|ed|ing)?\s+up)\b[^\d\n]{0,40}?"
                         + _NUM + r"(?:[ \t]*%)?", re.IGNORECASE)
_COUNT = re.compile(r"(?<![\w.])(?:\d+|seven)\s+(?:probabilit\w*|numbers?|values?|emotions?|classes|scores?|"
                    r"decimals?|digits?)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Reply:
    """What a reply holds: ``values`` the 7 numbers in class order (percentages scaled to fractions; not
    renormalised) or None, ``reason`` why not ("" when read), ``form`` how they were written."""

    values: list[float] | None
    reason: str = ""
    form: str = ""


@dataclass(frozen=True)
class _Pair:
    cls: str | None  # one of CLASSES, or None for an emotion that is not one of the seven
    name: str
    value: float
    pct: bool
    start: int
    end: int


# ================================================================================================== reading


def class_of(word: str) -> str | None:
    """The class a word names (``Happiness`` -> ``happy``), or None."""
    w = word.lower()
    for c, stems in CLASS_ALIASES.items():
        if any(w.startswith(s) for s in stems):
            return c
    return None


def _other_emotion(word: str) -> bool:
    w = word.lower()
    return any(w.startswith(s) for s in OTHER_EMOTIONS)


def _answer_text(reply: str) -> str:
    """The reply without think blocks (a ``</think>`` with no opening tag: the text after it)."""
    text = _THINK.sub("\n", str(reply))
    if "</think>" in text.lower():
        text = text[text.lower().rfind("</think>") + len("</think>"):]
    if "<think>" in text.lower():  # an unfinished think block holds no answer
        text = text[:text.lower().find("<think>")]
    return text


def _to_float(s: str) -> float:
    return float(s.replace(",", "."))


def read_reply(text: str | None) -> Reply:
    """Read a reply (see the module docstring). Never raises: an unreadable reply gives ``values=None`` and a
    reason."""
    if text is None or not isinstance(text, str):
        return Reply(None, "empty reply")
    answer = _answer_text(text)
    if not answer.strip():
        return Reply(None, "empty reply" if "<think>" not in text.lower() else "no answer after the think block")
    bad = _NONFINITE.search(answer)
    if bad:
        return Reply(None, f"non-finite value {bad.group(0)!r} in the reply")
    answer = _COUNT.sub(" ", _SUM_CLAUSE.sub(_drop_sum_clause, answer))
    reply = _read_named(answer)
    if reply is None:
        reply = _read_list(answer)
    if reply.values is not None and not all(math.isfinite(v) for v in reply.values):
        return Reply(None, "non-finite value in the reply (a number too large for a float)", reply.form)
    return reply


def _drop_sum_clause(m: re.Match) -> str:
    """``sum = 1.00000`` is no value; a clause that names a class (``total ... neutral 0.7``) is kept."""
    return m.group(0) if any(class_of(w) for w in re.findall(r"[^\W\d_]+", m.group(0))) else " "


def parse_reply(text: str | None) -> list[float] | None:
    """The 7 numbers of a reply in class order (neutral ... fear), or None (:func:`read_reply` says why)."""
    return read_reply(text).values


# ----------------------------------------------------------------------------------------------- named values


def _pairs(answer: str, pattern: re.Pattern) -> list[_Pair]:
    out = []
    for m in pattern.finditer(answer):
        c = class_of(m["name"])
        if c is None and not _other_emotion(m["name"]):
            continue
        out.append(_Pair(c, m["name"], _to_float(m["num"]), bool(m["pct"]), m.start(), m.end()))
    return out


def _blocks(answer: str, pairs: list[_Pair]) -> list[list[_Pair]]:
    """Pairs grouped into blocks: a line of text without a pair between two pairs starts a new block."""
    blocks: list[list[_Pair]] = []
    for p in pairs:
        if blocks:
            inner = answer[blocks[-1][-1].end:p.start].split("\n")[1:-1]
            if not any(line.strip() for line in inner):
                blocks[-1].append(p)
                continue
        blocks.append([p])
    return blocks


def _by_name(block: list[_Pair]) -> list[float]:
    """The block's values in class order, each placed by its name."""
    value = {p.cls: p.value for p in block}
    return [value[c] for c in CLASSES]


def _block_problem(block: list[_Pair]) -> str:
    """Why a block is not an answer ("" when it names each of the seven classes exactly once)."""
    other = next((p.name for p in block if p.cls is None), None)
    if other is not None:
        return f"names {other!r}, which is not one of the 7 classes"
    seen: set[str] = set()
    for p in block:
        if p.cls in seen:
            return f"names {p.cls} twice"
        seen.add(p.cls)
    missing = [c for c in CLASSES if c not in seen]
    if missing:
        return f"names {len(seen)} of the 7 classes (missing {', '.join(missing)})"
    return ""


def _read_named(answer: str) -> Reply | None:
    """The last block of named values that names each class once; None when no class name is tied to a number."""
    best: tuple | None = None
    for pattern in (_NAME_FIRST, _NUM_FIRST):  # name before number is preferred on a tie
        blocks = _blocks(answer, _pairs(answer, pattern))
        if not blocks:
            continue
        complete = [b for b in blocks if not _block_problem(b)]
        score = (bool(complete), max(sum(p.cls is not None for p in b) for b in blocks))
        if best is None or score > best[0]:
            best = (score, blocks, complete)
    if best is None:
        return None
    _, blocks, complete = best
    if not complete:
        biggest = max(reversed(blocks), key=len)
        return Reply(None, "class names given, but the reply " + _block_problem(biggest), "named")
    block = complete[-1]
    values = _by_name(block)
    if any(p.pct for p in block) or (max(values) > 1.0 and 100 * SUM_RANGE[0] <= sum(values) <= 100 * SUM_RANGE[1]):
        values = [v / 100.0 for v in values]
    return Reply(values, "", "named")


# ------------------------------------------------------------------------------------------------ plain lists


def _runs(line: str) -> list[list[re.Match]]:
    """Runs of numbers standing together on a line (only separators between them); decimal commas when the
    line has no decimal point and reading the commas as decimals gives a run of 7 with a decimal comma."""
    if not re.search(r"\d\.\d", line) and re.search(r"\d,\d", line):
        runs = _group(line, list(_TOKEN_COMMA.finditer(line)), _GAP_COMMA)
        if any(len(r) == NUM_CLASSES and any("," in m["num"] for m in r) for r in runs):
            return runs
    return _group(line, list(_TOKEN.finditer(line)), _GAP)


def _group(line: str, tokens: list[re.Match], gap: re.Pattern) -> list[list[re.Match]]:
    runs: list[list[re.Match]] = []
    for m in tokens:
        if runs and gap.fullmatch(line[runs[-1][-1].end():m.start()]):
            runs[-1].append(m)
        else:
            runs.append([m])
    return runs


def _header_order(lines: list[str], i: int, before: str) -> list[str] | None:
    """The class order a header gives (the text before the list on its line, else the nearest line above),
    when it names all seven classes once; None otherwise."""
    header = before if before.strip() else next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
    named = [c for c in (class_of(w) for w in re.findall(r"[^\W\d_]+", header)) if c is not None]
    return named if len(named) == NUM_CLASSES and len(set(named)) == NUM_CLASSES else None


def _find_list(lines: list[str]) -> tuple[list[tuple[float, bool]], list[str] | None] | None:
    """The last list of exactly 7 numbers: on one line, else in a column of one number per line."""
    for i in range(len(lines) - 1, -1, -1):
        line = _LIST_MARKER.sub("", lines[i])
        for run in reversed(_runs(line)):
            if len(run) == NUM_CLASSES:
                order = _header_order(lines, i, line[:run[0].start()])
                return [(_to_float(m["num"]), bool(m["pct"])) for m in run], order
    column: list[re.Match] = []
    first = 0
    for i in range(len(lines) - 1, -1, -1):
        m = _SINGLE.match(_LIST_MARKER.sub("", lines[i]))
        if m:
            column.insert(0, m)
            first = i
        elif lines[i].strip() and column:
            break
    if len(column) == NUM_CLASSES:
        return [(float(m["num"]), bool(m["pct"])) for m in column], _header_order(lines, first, "")
    return None


def _read_list(answer: str) -> Reply:
    found = _find_list(answer.splitlines())
    if found is None:
        n = len(_TOKEN.findall(answer))
        if n == 0:
            return Reply(None, NO_NUMBERS)
        if n == NUM_CLASSES:
            return Reply(None, "7 numbers in prose (words between them), not a list of probabilities")
        return Reply(None, f"no list of 7 numbers in the reply ({n} number{'s' if n > 1 else ''} found)")
    written, order = found
    values = _as_distribution(written)
    if isinstance(values, str):
        return Reply(None, values, "list")
    if order is not None:  # a header named the classes: its order decides
        by_class = dict(zip(order, values))
        values = [by_class[c] for c in CLASSES]
    return Reply(values, "", "list")


def _as_distribution(written: list[tuple[float, bool]]) -> list[float] | str:
    """The list's values as fractions when they are a distribution, else the reason why not."""
    values = [v for v, _ in written]
    lo, hi = SUM_RANGE
    if any(p for _, p in written) or (max(values) > 1.0 and 100 * lo <= sum(values) <= 100 * hi):
        values = [v / 100.0 for v in values]
    if max(values) <= 1.0 and lo <= sum(values) <= hi:
        return values
    return (f"not a distribution: 7 numbers summing to {sum(v for v, _ in written):g} (neither about 1 nor "
            f"about 100 %: ranks, scores or prose?)")


# ================================================================================================ validation


def validate_distribution(values: Sequence[float] | None, true_label: str, policy: str = "swap"):
    """Check (and where safe repair) an LLM distribution for an utterance whose true label is ``true_label``.

    Returns ``(dist, status, reason)``: ``dist`` a ``(7,)`` float64 numpy array summing to 1 (None when
    rejected), ``status`` "ok" | "repaired" | "rejected", ``reason`` what was wrong ("" when nothing).

    Rules, in order: 7 finite numbers; values below ``-TINY_NEGATIVE`` reject, tiny negatives are clipped to 0
    (repair); a zero sum rejects; the sum is renormalised to 1 (a repair when it was off by more than
    ``SUM_OK``); seven equal values reject. The true label must end strictly highest: with ``policy="swap"``
    its value is swapped with the maximum (the distribution's shape and entropy are kept, only which class gets
    the top value changes); a tie at the top that remains (the true label's own, or another class sharing the
    maximum it was swapped with) is broken by moving 1 % of each tied value to the true label. With
    ``policy="reject"`` such replies are rejected.
    """

    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
    if true_label not in CLASSES:
        raise ValueError(f"true label {true_label!r} is not one of {CLASSES}")
    if values is None:
        return None, "rejected", NO_NUMBERS
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
    v, rejection = _true_label_highest(v, CLASSES.index(true_label), policy, reasons)
    if rejection:
        return None, "rejected", rejection
    status = "repaired" if reasons else "ok"
    return v / v.sum(), status, "; ".join(reasons)


# Values closer than this count as a tie at the top: 1.0 and 0.9999999999999999 are one value with float noise,
# and a target must put its true label clearly first (``train.dataset.stale_soft_labels`` reads it back so).
TIE = 1e-6


def _true_label_highest(v, t: int, policy: str, reasons: list[str]):
    """``(v, rejection)``: ``v`` with class ``t`` strictly highest (swap, then tie-break), reasons appended."""

    label = CLASSES[t]
    if v[t] < np.delete(v, t).max():
        k = int(np.flatnonzero(v == v.max())[0])
        if policy == "reject":
            return v, f"true label {label} is not highest ({CLASSES[k]} is)"
        v[t], v[k] = v[k], v[t]
        reasons.append(f"true label not highest: swapped {label} with {CLASSES[k]}")
    top = np.delete(v, t).max()
    if v[t] - top < TIE:  # the true label's own tie (float noise included), or a class that shared the maximum
        if policy == "reject":
            return v, f"true label {label} ties for the highest value"
        tied = np.flatnonzero(v > v[t] - TIE)
        tied = tied[tied != t]
        moved = 0.01 * v[tied]
        v[tied] -= moved
        v[t] += moved.sum()
        reasons.append(f"tie at the top broken in favour of {label}")
    return v, None
