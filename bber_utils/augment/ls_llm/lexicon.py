"""A small bilingual (English + Russian) emotion lexicon: the offline, model-free stand-in for an LLM in LS-LLM.

It is NOT an LLM. It exists so that the LS-LLM step runs on a laptop with no model: each class has a list of
word stems (written for this project); a text's cue counts per class, mixed with the true label and a prior
of which emotions are confused with which, give a plausible soft label. Stems match the start of a lower-cased
word, so ``рад`` matches ``рада``, ``радостно`` and ``happ`` matches ``happy``, ``happiness``.
"""

from __future__ import annotations

import re

import numpy as np

from bber_utils.core.labels import CLASSES, label_index

LEXICON_VERSION = "bber-lexicon-v1"

CUE_STEMS: dict[str, tuple[str, ...]] = {
    "neutral": (
        "okay", "fine", "normal", "usual", "maybe", "probably", "think", "know", "meeting", "schedule", "tomorrow",
        "report", "address", "actually", "well",
        "обычн", "нормальн", "наверн", "возможн", "думаю", "знаю", "завтра", "встреч", "расписан", "отчёт", "отчет",
        "адрес", "ладно", "хорошо",
    ),
    "happy": (
        "happ", "glad", "joy", "great", "wonderful", "love", "awesome", "fantastic", "delight", "nice", "fun",
        "smile", "laugh", "thank", "yay", "congrat", "excellent", "beautiful",
        "рад", "счаст", "весел", "отличн", "прекрасн", "чудесн", "люблю", "любим", "спасибо", "ура", "поздравл",
        "класс", "замечательн", "смех", "улыб",
    ),
    "sad": (
        "sad", "sorry", "miss", "cry", "tear", "lonely", "alone", "lost", "unhapp", "depress", "hurt", "gone",
        "grief", "regret", "tired",
        "грус", "печал", "жаль", "скуча", "плак", "слёз", "слез", "одинок", "потерял", "тоск", "обидн", "устал",
        "сожал",
    ),
    "anger": (
        "angry", "anger", "mad", "hate", "furious", "stupid", "idiot", "shut", "annoy", "damn", "enough", "how dare",
        "ridiculous", "sick of", "stop",
        "зл", "ненавиж", "бесит", "дурак", "идиот", "замолч", "хватит", "надоел", "возмут", "прекрати", "сколько можно",
        "как ты смеешь", "ярост",
    ),
    "surprise": (
        "wow", "what", "really", "seriously", "unbelievable", "oh my", "no way", "surpris", "amazing", "sudden",
        "can't believe", "whoa",
        "ого", "неужели", "правда", "серьёзно", "серьезно", "не может быть", "удив", "вот это да", "внезапн",
        "ничего себе", "ух ты",
    ),
    "disgust": (
        "disgust", "gross", "eww", "ew", "yuck", "nasty", "sick", "revolting", "vile", "awful", "filthy", "rotten",
        "smell",
        "фу", "отврат", "мерз", "гадост", "противн", "тошн", "воня", "гнил", "омерз", "мерзк",
    ),
    "fear": (
        "afraid", "scare", "fear", "terrif", "frighten", "panic", "worried", "nervous", "danger", "help", "careful",
        "dark", "noise",
        "страш", "бою", "испуг", "паник", "опасн", "помоги", "тревож", "волну", "темн", "жутк", "ужас",
    ),
}

# Which emotions an annotator (or an LLM) most often confuses each class with: a small share of the mass goes
# there even without a cue word (after the direction of disagreements the reference's Qwen labels show).
CONFUSED_WITH: dict[str, dict[str, float]] = {
    "neutral": {"happy": 0.4, "sad": 0.3, "surprise": 0.3},
    "happy": {"surprise": 0.5, "neutral": 0.5},
    "sad": {"neutral": 0.4, "fear": 0.4, "anger": 0.2},
    "anger": {"disgust": 0.5, "sad": 0.3, "neutral": 0.2},
    "surprise": {"happy": 0.5, "fear": 0.3, "neutral": 0.2},
    "disgust": {"anger": 0.6, "sad": 0.4},
    "fear": {"sad": 0.5, "surprise": 0.3, "neutral": 0.2},
}

_WORD = re.compile(r"[\w']+", re.UNICODE)


def cue_counts(text: str) -> np.ndarray:
    """Number of cue-stem matches per class in ``text``: ``(7,)`` float64 in ``CLASSES`` order.

    A single-word stem matches the start of a word; a multi-word cue ("how dare", "не может быть") matches the
    lower-cased text.
    """
    low = str(text).lower().replace("ё", "е")
    words = _WORD.findall(low)
    counts = np.zeros(len(CLASSES))
    for c, stems in CUE_STEMS.items():
        k = label_index(c)
        for stem in stems:
            stem = stem.replace("ё", "е")
            if " " in stem or "'" in stem:
                counts[k] += low.count(stem)
            else:
                counts[k] += sum(1 for w in words if w.startswith(stem))
    return counts


def lexicon_distribution(text: str, true_label: str, confidence: float = 0.65) -> np.ndarray:
    """A plausible soft label for (text, true label): ``(7,)`` float64, sums to 1, true label highest.

    ``confidence`` of the mass goes to the true label when the text's cues agree with it (less when they point
    elsewhere); the rest is split between the classes the cues name and the classes the true label is usually
    confused with, plus a small floor so that no emotion is exactly 0.
    """
    t = label_index(true_label)
    counts = cue_counts(text)
    other = np.delete(np.arange(len(CLASSES)), t)
    cue_total = counts[other].sum()
    # the text's own cues for the true class make the label more certain; cues for other classes less
    agree = counts[t] / (counts[t] + cue_total) if counts[t] + cue_total > 0 else 0.5
    p_true = float(np.clip(confidence + 0.25 * (agree - 0.5), 0.5, 0.9))  # >= 0.5: always the highest
    rest = np.zeros(len(CLASSES))
    if cue_total > 0:
        rest[other] += 0.6 * counts[other] / cue_total
    prior = np.zeros(len(CLASSES))
    for c, w in CONFUSED_WITH[true_label].items():
        prior[label_index(c)] = w
    rest += (0.4 if cue_total > 0 else 1.0) * prior
    rest[other] += 0.02  # floor: nothing is exactly impossible
    rest[t] = 0.0
    dist = rest / rest.sum() * (1.0 - p_true)
    dist[t] = p_true
    return dist
