"""``limit``: keep at most N utterances of a split for a quick run, every class kept where possible."""

from __future__ import annotations

import numpy as np


def limit_rows(df, limit: int, seed: int, label_col: str = "label"):
    """At most ``limit`` rows (0 = all), drawn round-robin over the classes from a seeded shuffle.

    Rows are taken class by class in turn (the 1st of each class, then the 2nd …), so a small limit still sees
    every class; the kept rows stay in their original order. Unlike the reference's ``subset_size`` (the first N
    rows), this is not biased towards the first dialogues.
    """

    if not limit or limit <= 0 or len(df) <= limit:
        return df
    order = np.random.default_rng(seed).permutation(len(df))
    shuffled = df.iloc[order]
    rank = shuffled.groupby(label_col, sort=False).cumcount().to_numpy()
    picked = order[np.lexsort((np.arange(len(rank)), rank))[:limit]]
    return df.iloc[np.sort(picked)]
