"""Cross-fitting folds for the out-of-fold train logits of the ``*_withprob`` and ``predictions_fusion`` models:
which rows each fold model may train on, so that no fold model has seen any part of a row it predicts (an SDS
merge and its components share a fold; the reference's stacking leak, notes §11.9).

Owns: ``fold_assignment``, ``fold_training_rows``, ``_components``. Pure functions of a manifest.
Must not import: torch, or any other module of ``bber_utils.train``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

# Heavy libraries (sklearn) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


def _components(value) -> list[str]:
    """The utt_ids an SDS row was merged from (list, array, JSON list or a '|'/','-separated string)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    s = str(value).strip()
    if s.startswith("["):
        try:
            return [str(v) for v in json.loads(s)]
        except json.JSONDecodeError:
            pass
    for sep in ("|", ";", ","):
        if sep in s:
            return [p.strip() for p in s.split(sep) if p.strip()]
    return [s] if s else []


def fold_assignment(train_df: pd.DataFrame, k: int, seed: int, links: dict[str, str] | None = None) -> np.ndarray:
    """Cross-fitting folds for the out-of-fold logits, by groups: ``fold (N,)``.

    Every row that shares audio or text with another through SDS components (a merged row and each of its
    components, transitively: union-find over ``components``) is in one group, and so are the rows that
    ``links`` (``{utt_id: key}``) gives the same key: the turns of one dialogue when the text branch reads the
    previous turns (``text_context``), so no fold model reads a held-out row's text as another row's context.
    A group is never split across folds. The fold-``k`` model trains on the rows of the other folds only
    (``fold_training_rows``), so no fold model has seen any part of a row it predicts. Groups are assigned to
    folds stratified by the label of the group's first row (``StratifiedGroupKFold``), or by a seeded round-robin
    when a class is too rare.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    ids = train_df["utt_id"].astype(str).tolist()
    comps = [_components(v) for v in train_df["components"]] if "components" in train_df else [[]] * len(ids)
    parent = {u: u for u in ids}

    def find(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    def union(u: str, other: str) -> None:
        parent.setdefault(other, other)  # a node outside this manifest still links the rows that share it
        ru, ro = find(u), find(other)
        if ru != ro:
            parent[ro] = ru

    for u, cs in zip(ids, comps):
        for c in cs:
            union(u, c)
    for u, key in (links or {}).items():
        if u in parent:
            union(u, f"\0link:{key}")  # one shared node per key
    roots = [find(u) for u in ids]
    group = pd.factorize(pd.Series(roots))[0]
    n_groups = int(group.max()) + 1 if len(ids) else 0
    n_splits = min(k, n_groups)
    if n_splits < 2:
        raise ValueError(f"cross-fitting needs at least 2 groups of rows, got {n_groups} (oof_folds={k})")
    labels = train_df["label"].astype(str).to_numpy()
    first = pd.Series(range(len(ids))).groupby(group).first().to_numpy()      # (G,) a row of each group
    group_label = labels[first]
    folds_of_group = np.zeros(n_groups, dtype=int)
    if pd.Series(group_label).value_counts().min() >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for f, (_, held) in enumerate(splitter.split(np.zeros(len(ids)), labels, group)):
            folds_of_group[np.unique(group[held])] = f
    else:  # a class too rare to stratify: a seeded round-robin over a permutation of the groups
        perm = np.random.default_rng(seed).permutation(n_groups)
        folds_of_group[perm] = np.arange(n_groups) % n_splits
    return folds_of_group[group]


def fold_training_rows(train_df: pd.DataFrame, folds: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the rows the fold-``k`` model trains on (every row outside fold ``k``)."""
    return np.asarray(folds) != k
