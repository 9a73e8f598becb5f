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


def parse_label_set(spec) -> tuple[str, ...]:
    """A corpus's label set, in ``CLASSES`` order, from ``"anger,fear,neutral"`` or a list of class names (any
    case). ``None``/``""``/``"all"`` = all seven. ``UnknownLabelError`` (one line) for a name that is not one of
    the seven classes, naming the closest one, or for an empty set."""
    import difflib

    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return CLASSES
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    for n in names:
        if n not in CLASS_TO_INDEX:
            close = difflib.get_close_matches(n, CLASSES, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownLabelError(f"label set: {n!r} is not one of the {NUM_CLASSES} classes{hint}; "
                                    f"classes: {', '.join(CLASSES)}")
    if not names:
        raise UnknownLabelError(f"label set: no class named; give some of {', '.join(CLASSES)}")
    return tuple(c for c in CLASSES if c in names)


def class_indices(classes) -> tuple[int, ...]:
    """The indices of a label set (names) in ``CLASSES`` order."""
    return tuple(CLASS_TO_INDEX[c] for c in parse_label_set(classes))
