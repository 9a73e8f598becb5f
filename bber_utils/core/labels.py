"""The seven emotion classes, in the paper's order, and each corpus's map onto them.

Every model output, soft-label vector and confusion matrix in BBER uses ``CLASSES`` order:
index 0 = neutral … index 6 = fear.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "anger", "surprise", "disgust", "fear")
NUM_CLASSES = len(CLASSES)
CLASS_TO_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}

# Corpus label -> common class. Identity entries are listed so that the maps are complete.
MELD_TO_CLASS: dict[str, str] = {
    "neutral": "neutral",
    "joy": "happy",
    "sadness": "sad",
    "anger": "anger",
    "surprise": "surprise",
    "disgust": "disgust",
    "fear": "fear",
}
RESD_TO_CLASS: dict[str, str] = {
    "neutral": "neutral",
    "happiness": "happy",
    "sadness": "sad",
    "anger": "anger",
    "enthusiasm": "surprise",
    "disgust": "disgust",
    "fear": "fear",
}
CORPUS_LABEL_MAPS: dict[str, dict[str, str]] = {"meld": MELD_TO_CLASS, "resd": RESD_TO_CLASS}


class UnknownLabelError(ValueError):
    """A corpus label that maps to none of the seven classes."""


def map_label(raw: str, corpus: str) -> str:
    """Map a corpus's own label (any case, surrounding spaces allowed) to one of ``CLASSES``.

    Common class names are accepted as they are for every corpus.
    """
    key = str(raw).strip().lower()
    table = CORPUS_LABEL_MAPS.get(corpus, {})
    if key in table:
        return table[key]
    if key in CLASS_TO_INDEX:
        return key
    raise UnknownLabelError(f"unknown {corpus} label {raw!r}; known: {sorted(set(table) | set(CLASSES))}")


def label_index(label: str) -> int:
    """Index of a common class name in ``CLASSES``."""
    try:
        return CLASS_TO_INDEX[label]
    except KeyError:
        raise UnknownLabelError(f"{label!r} is not one of {CLASSES}") from None
