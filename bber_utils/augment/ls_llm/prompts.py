"""LS-LLM prompts: what is sent to the LLM for one (utterance, true label).

Owns the prompt texts and their version (:data:`PROMPT_VERSION`, part of every cache key) and
:func:`build_messages`. Pure strings: imports nothing but :mod:`bber_utils.core.labels` (no torch, no I/O).
"""

from __future__ import annotations

from bber_utils.core.labels import CLASSES

PROMPT_VERSION = "bber-ls-llm-v1"

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


def build_messages(text: str, label: str, mode: str = "generate") -> list[dict[str, str]]:
    """The single user turn sent to the LLM for (text, true label)."""
    if label not in CLASSES:
        raise ValueError(f"true label {label!r} is not one of {CLASSES}")
    template = GENERATE_PROMPT if mode == "generate" else LOGITS_PROMPT
    return [{"role": "user", "content": template.format(text=str(text).strip(), label=label)}]
