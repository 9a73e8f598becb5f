"""Dialogue context for the text branch (``text_context: k``): our extension, not in the paper.

With ``k > 0`` the text features of an utterance become the features of the previous ``k`` utterances of the
same dialogue, oldest first, then its own, with one extra feature column that flags the utterance's own steps
(1.0) against the context steps (0.0): ``(sum T_context + T_own, D + 1)``. Only earlier utterances are used
(never later ones: the model must not read the answer to what it classifies), and only utterances of the same
split's manifest (never across splits). Works for every model that reads the text store, bimodal ones too;
``k = 0`` leaves the store untouched (the paper's setting; off in every profile).

``text_context_speaker`` adds a second column that flags, on every step, whether that turn's speaker is the
utterance's own (1.0; the own steps too) or another (0.0): ``(…, D + 2)``; it needs the manifest's ``speaker``
column (MELD's reader and ``bber prepare table --column speaker=…`` give it; a turn without a speaker counts as
another speaker's).

Dialogue structure comes from the manifest: ``dialogue_id`` + ``utterance_id`` columns (``bber prepare table``),
else a MELD ``native_id`` ``dia{D}_utt{U}``. Rows without it (RESD, SDS merges, TUG rows) get no context.
Numeric utterance ids order a dialogue; a dialogue with any id that is not a number (or empty) keeps the
manifest's row order, which is the table's (``row_ordered_dialogues``).
RESD's names (``{NN}_{emo1}_{emo2}_{x}_{NNN}``) start with a dialogue number, but they also name the dialogue's
two emotions and their order within a dialogue is not documented, so the RESD reader gives no dialogue columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bber_utils.corpora import dialogues


def with_flag(x: np.ndarray, own: bool) -> np.ndarray:
    """(T, D) -> (T, D + 1): the last column is 1.0 on the utterance's own steps, 0.0 on context steps."""
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate([x, np.full((len(x), 1), 1.0 if own else 0.0, np.float32)], axis=1)


CONTEXT_MODES = ("steps", "mean")


def context_steps(x: np.ndarray, mode: str = "steps") -> np.ndarray:
    """A previous utterance's steps as context: all of them (``"steps"``, (T, D)) or their mean as one step
    (``"mean"``, (1, D)): the utterance's own steps then dominate the model's mean pooling however long k is."""
    x = np.asarray(x, dtype=np.float32)
    if mode == "mean":
        return x.mean(axis=0, keepdims=True)
    if mode != "steps":
        raise ValueError(f"text_context_mode must be one of {CONTEXT_MODES} (got {mode!r})")
    return x


def with_context(own: np.ndarray, previous: list[np.ndarray], mode: str = "steps") -> np.ndarray:
    """One utterance's text input with its context: each previous utterance's steps (``context_steps``, flag
    0.0), oldest first, then its own (T, D) steps (flag 1.0) -> ``(T_ctx + T, D + 1)``."""
    parts = [with_flag(context_steps(x, mode), own=False) for x in previous]
    return np.concatenate(parts + [with_flag(own, own=True)], axis=0)


def with_speaker_flags(x: np.ndarray, same: list[bool]) -> np.ndarray:
    """(T, D) -> (T, D + 1): the last column is 1.0 on the steps whose turn has the utterance's speaker."""
    return np.concatenate([x, np.asarray(same, np.float32)[:, None]], axis=1)


class ContextTextStore:
    """A text store whose items carry the dialogue context: ``store[u]`` -> ``(T_ctx + T_u, D + 1)``
    (``T_ctx`` = the context utterances' steps, or one step each with ``mode="mean"``); with ``speakers``
    (``{utt_id: speaker}``) one more column flags the steps of turns by the utterance's own speaker."""

    def __init__(self, store, contexts: dict[str, list[str]], k: int, mode: str = "steps",
                 speakers: dict[str, str] | None = None):
        context_steps(np.zeros((1, 1), np.float32), mode)  # checks the mode
        self.store, self.contexts, self.k, self.mode = store, contexts, int(k), mode
        self.speakers = speakers
        self.dim = int(store.dim) + 1 + (speakers is not None)
        tag = f"+context{self.k}" + ("" if mode == "steps" else f"-{mode}") + ("-speaker" if speakers else "")
        self.path = Path(f"{getattr(store, 'path', 'text')}{tag}")  # a distinct cache key

    def __contains__(self, u) -> bool:
        return u in self.store

    def __len__(self) -> int:
        return len(self.store)

    def context_of(self, u: str) -> list[str]:
        return [c for c in self.contexts.get(u, []) if c in self.store]

    def __getitem__(self, u: str) -> np.ndarray:
        previous = self.context_of(u)
        x = with_context(self.store[u], [self.store[c] for c in previous], self.mode)
        if self.speakers is None:
            return x
        own = self.speakers.get(u, "")
        same = []
        for c in previous:
            same += [bool(own) and self.speakers.get(c, "") == own] * len(context_steps(self.store[c], self.mode))
        return with_speaker_flags(x, same + [True] * (len(x) - len(same)))


def with_text_context(store, splits: dict[str, pd.DataFrame], k: int, mode: str = "steps", speaker: bool = False):
    """``store`` itself for ``k == 0``, else a ``ContextTextStore`` over ``splits`` (each split on its own);
    ``speaker``: flag the turns by the utterance's own speaker (``ValueError`` when no split has a speaker)."""
    if not k:
        return store
    if int(k) < 0:
        raise ValueError(f"text_context must be >= 0 (got {k})")
    speakers = None
    if speaker:
        frames = [df for df in splits.values() if "speaker" in df.columns]
        if not frames:
            raise ValueError("text_context_speaker needs the manifests' speaker column (MELD's reader, or bber "
                             "prepare table --column speaker=NAME); none has one")
        rows = pd.concat(frames)
        speakers = dict(zip(rows["utt_id"].astype(str), rows["speaker"].fillna("").astype(str).str.strip()))
    return ContextTextStore(store, dialogues.split_context_map(splits, int(k)), int(k), mode, speakers)
