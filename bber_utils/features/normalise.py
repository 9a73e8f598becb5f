"""Per-speaker (or per-utterance) normalisation of audio features (``audio_norm``): our extension, off by default.

``audio_norm: speaker`` z-normalises every feature dimension with the mean and standard deviation of all frames of
the same speaker (the manifest's ``speaker`` column; rows without one are grouped by corpus): what stays is how
an utterance differs from the speaker's usual voice (louder, higher, faster), which is what prosody carries
across speakers. The statistics use features only, never labels; a scored speaker's are taken from its own
clips. ``audio_norm: utterance`` normalises each utterance by its own statistics (it removes level and pitch
range, which carry emotion). ``none`` leaves the store untouched (every profile).

Owns: ``AUDIO_NORMS``, ``NormalisedAudioStore``, ``with_audio_norm``, ``speaker_groups``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

AUDIO_NORMS = ("none", "speaker", "utterance")
_EPS = 1e-5


def speaker_groups(manifest: pd.DataFrame) -> dict[str, str]:
    """``{utt_id: group}``: the row's speaker, or ``corpus:<name>`` for a row without one."""
    corpus = manifest["corpus"].astype(str)
    if "speaker" in manifest.columns:
        speaker = manifest["speaker"].fillna("").astype(str)
        group = np.where(speaker.str.strip() != "", corpus + ":" + speaker, "corpus:" + corpus)
    else:
        group = ("corpus:" + corpus).to_numpy()
    return dict(zip(manifest["utt_id"].astype(str), group))


def group_statistics(store, groups: dict[str, str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{group: (mean (D,), std (D,))}`` over every frame of the group's utterances in ``store``."""
    sums: dict[str, list] = {}
    for u, g in groups.items():
        if u not in store:
            continue
        x = np.asarray(store[u], dtype=np.float64)
        if not len(x):
            continue
        acc = sums.setdefault(g, [0, np.zeros(x.shape[1]), np.zeros(x.shape[1])])
        acc[0] += len(x)
        acc[1] += x.sum(axis=0)
        acc[2] += (x * x).sum(axis=0)
    out = {}
    for g, (n, s, s2) in sums.items():
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
        out[g] = (mean.astype(np.float32), (std + _EPS).astype(np.float32))
    return out


def normalise_utterance(x: np.ndarray) -> np.ndarray:
    """(T, D) z-normalised by its own frames' mean and standard deviation."""
    x = np.asarray(x, dtype=np.float32)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + _EPS)


class NormalisedAudioStore:
    """An audio store whose items are normalised (``store[u]`` -> (T, D) float32); ``path`` is a distinct cache
    key, ``index`` the inner store's (the data fingerprint reads the same per-utterance content hashes)."""

    def __init__(self, store, mode: str, groups: dict[str, str] | None = None):
        if mode not in AUDIO_NORMS[1:]:
            raise ValueError(f"audio_norm must be one of {AUDIO_NORMS} (got {mode!r})")
        self.store, self.mode, self.groups = store, mode, dict(groups or {})
        self.dim = int(store.dim)
        self.index = getattr(store, "index", None)
        self.path = Path(f"{getattr(store, 'path', 'audio')}+norm-{mode}")
        self.stats = group_statistics(store, self.groups) if mode == "speaker" else {}

    def __contains__(self, u) -> bool:
        return u in self.store

    def __len__(self) -> int:
        return len(self.store)

    def length(self, u: str) -> int:
        return self.store.length(u) if hasattr(self.store, "length") else len(self.store[u])

    def __getitem__(self, u: str) -> np.ndarray:
        x = np.asarray(self.store[u], dtype=np.float32)
        if self.mode == "utterance":
            return normalise_utterance(x)
        mean, std = self.stats[self.groups[u]] if u in self.groups else (x.mean(axis=0), x.std(axis=0) + _EPS)
        return (x - mean) / std


def with_audio_norm(store, mode: str, manifest: pd.DataFrame):
    """``store`` itself for ``mode == "none"`` (or no store), else a ``NormalisedAudioStore`` whose speaker
    statistics cover ``manifest``'s rows."""
    if store is None or mode == "none":
        return store
    return NormalisedAudioStore(store, mode, speaker_groups(manifest) if mode == "speaker" else None)
