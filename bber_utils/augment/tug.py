"""TUG — template-based utterance generation: a synthetic corpus spoken by a TTS, mixed into training.

Three steps (notebook 04, ``bber tug``):

1. Templates per emotion and language: the built-in ones (``augment/templates.py``) or written by an LLM
   (``augment/tug_llm.py``, cached under ``<workdir>/tug/templates/``).
2. ``build_synthetic_corpus``: a seeded composer fills the templates into unique utterances, a TTS backend
   (``augment/tts.py``) speaks them into ``<workdir>/tug/wavs/{lang}/``, and the spoken ones become a
   manifest ``<workdir>/tug/tug_{lang}.parquet`` (``source="tug"``, ``corpus="tug_{lang}"``, split
   ``train``). Failed syntheses are dropped with their reason into ``tug/tug_{lang}_dropped.csv``; silence is
   never saved as data.
3. ``mix_synthetic``: at training time, synthetic rows of a corpus's language join that corpus's train split
   (and only train), taking its ``corpus`` value.

Unlike the reference, utterance ids follow the composer's seeded order (not a set's hash order), a shortfall of
unique phrases is reported rather than crashing, and a failed synthesis is never saved as 1 s of silence.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

MIX_MODES = ("per_class", "top_up")
TEMPLATE_SOURCES = ("builtin", "openai", "transformers")
TTS_NAMES = ("espeak", "mms", "dia")
DROPPED_COLUMNS = ["utt_id", "language", "label", "text", "reason"]


def synthetic_corpus_name(language: str) -> str:
    """``"en"`` -> ``"tug_en"``: the ``corpus`` value of synthetic rows before they are mixed."""
    return f"tug_{language}"


def synthetic_utt_id(language: str, emotion: str, index: int) -> str:
    """``tug_en-train-happy_00007``: the ``index``-th utterance the seeded composer made for ``emotion``."""
    return f"{synthetic_corpus_name(language)}-train-{emotion}_{index:05d}"


def synthetic_manifest_path(workdir: str | os.PathLike, language: str) -> Path:
    from ..paths import run_dirs

    return run_dirs(workdir).tug / f"tug_{language}.parquet"


def dropped_path(workdir: str | os.PathLike, language: str) -> Path:
    from ..paths import run_dirs

    return run_dirs(workdir).tug / f"tug_{language}_dropped.csv"


# --------------------------------------------------------------------------------------------------------------
# Mixing into a train split
# --------------------------------------------------------------------------------------------------------------

def mix_plan(train_df: "pd.DataFrame", synthetic_df: "pd.DataFrame", ratio: float,
             mode: str = "per_class") -> "pd.DataFrame":
    """How many synthetic rows each (corpus, class) of ``train_df`` gets, before sampling.

    Returns one row per corpus and class: ``corpus, language, label, n_train, wanted, available, added``.

    - ``per_class``: ``wanted = round(ratio * n_train)``.
    - ``top_up``: ``wanted = round(ratio * (n_max - n_train))`` where ``n_max`` is the corpus's largest class, so
      ``ratio=1`` brings every class up to it (the paper topped MELD's classes up to the neutral count).

    Synthetic rows of a language go only into corpora of that language; two corpora of one language draw
    disjoint rows. ``added = min(wanted, available)``.
    """
    import pandas as pd

    from ..labels import CLASSES

    if mode not in MIX_MODES:
        raise ValueError(f"mix mode {mode!r}: expected one of {MIX_MODES}")
    if not ratio >= 0:
        raise ValueError(f"TUG ratio must be >= 0, got {ratio!r}")
    _check_train_only(train_df, "train_df")
    rows = []
    left = synthetic_df.groupby(["language", "label"]).size().to_dict() if len(synthetic_df) else {}
    for corpus, part in train_df.groupby("corpus", sort=True):
        languages = part["language"].unique()
        if len(languages) != 1:
            raise ValueError(f"train corpus {corpus!r} mixes languages {sorted(languages)}; expected one")
        language = languages[0]
        counts = part[part["source"] != "tug"]["label"].value_counts()
        n_max = int(counts.max()) if len(counts) else 0
        for label in CLASSES:
            n = int(counts.get(label, 0))
            base = n if mode == "per_class" else n_max - n
            wanted = int(round(ratio * base))
            available = int(left.get((language, label), 0))
            added = min(wanted, available)
            left[(language, label)] = available - added
            rows.append(dict(corpus=corpus, language=language, label=label, n_train=n, wanted=wanted,
                             available=available, added=added))
    return pd.DataFrame(rows, columns=["corpus", "language", "label", "n_train", "wanted", "available", "added"])


def mix_synthetic(train_df: "pd.DataFrame", synthetic_df: "pd.DataFrame", ratio: float,
                  mode: str = "per_class", seed: int = 42) -> "pd.DataFrame":
    """``train_df`` plus seeded synthetic rows per class (see ``mix_plan`` for the counts).

    ``train_df`` is the train split of one or several corpora; ``synthetic_df`` one or several TUG manifests
    (``source="tug"``). Chosen rows take their target corpus's ``corpus`` value and split ``"train"``; their
    ``utt_id`` (``tug_{lang}-train-…``) is kept, so soft labels and features stay keyed. A class with fewer
    synthetic rows than wanted gets all of them and a warning. Rows missing a soft label fall back to one-hot in
    the trainer. The result is a validated manifest; synthetic rows are only ever in the train split.
    """
    import numpy as np

    from ..corpora.manifest import concat_manifests

    if len(synthetic_df) and not (synthetic_df["source"] == "tug").all():
        raise ValueError("synthetic_df must hold only TUG rows (source='tug')")
    plan = mix_plan(train_df, synthetic_df, ratio, mode)
    short = plan[plan["added"] < plan["wanted"]]
    if len(short):
        warnings.warn("TUG mix: fewer synthetic rows than wanted for " + ", ".join(
            f"{r.corpus}/{r.label} ({r.added} of {r.wanted})" for r in short.itertuples()), stacklevel=2)
    rng = np.random.default_rng(seed)
    pool = synthetic_df.sort_values("utt_id", kind="stable").reset_index(drop=True)
    used = np.zeros(len(pool), dtype=bool)
    chosen = []
    for r in plan[plan["added"] > 0].itertuples():
        candidates = np.flatnonzero(((pool["language"] == r.language) & (pool["label"] == r.label)).to_numpy()
                                    & ~used)
        pick = np.sort(rng.choice(candidates, size=r.added, replace=False))
        used[pick] = True
        rows = pool.iloc[pick].copy()
        rows["corpus"] = r.corpus
        rows["split"] = "train"
        chosen.append(rows)
    mixed = concat_manifests([train_df, *chosen])
    assert set(mixed.loc[mixed["source"] == "tug", "split"]) <= {"train"}, "synthetic rows outside train"
    return mixed


def _check_train_only(df: "pd.DataFrame", name: str) -> None:
    bad = df[df["split"] != "train"]
    if len(bad):
        raise ValueError(f"{name}: TUG rows are mixed into train splits only, but row {bad.index[0]} "
                         f"(utt_id={bad['utt_id'].iloc[0]!r}) has split {bad['split'].iloc[0]!r}")
