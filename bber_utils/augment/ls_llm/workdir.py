"""LS-LLM orchestration: label a table or a work folder's train manifests, and summarise the result.

Owns :func:`label_utterances` (cache lookup, batches, validation, the output rows), :func:`label_workdir`
(manifests in, ``ls_llm/soft_labels.parquet`` out), :func:`train_manifests` and the summaries notebook 05 shows
(:func:`mean_by_true_class`, :func:`entropy`, :func:`argmax_agreement`, :func:`status_summary`). It reads replies
only through :mod:`.replies` and asks backends only through the :class:`.labellers.Labeller` interface.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bber_utils.augment.ls_llm.cache import LabelCache, open_for_writing, request_key
from bber_utils.augment.ls_llm.labellers import Labeller, LabelRequest, build_labeller
from bber_utils.augment.ls_llm.replies import USABLE_STATUSES, read_reply, validate_distribution
from bber_utils.augment.ls_llm.tables import EXTRA_COLUMNS, SOFT_LABEL_COLUMNS, SOFT_LABELS_FILE, save_soft_labels
from bber_utils.core.fileio import check_writable
from bber_utils.core.labels import CLASSES, NUM_CLASSES
from bber_utils.core.paths import run_dirs
from bber_utils.core.progress import tqdm
from bber_utils.corpora.manifest import load_manifest
from bber_utils.features.store import check_shard


def _requests(df) -> list[LabelRequest]:
    missing = [c for c in ("utt_id", "text", "label") if c not in df.columns]
    if missing:
        raise ValueError(f"the table to label lacks columns {missing}")
    bad = ~df["label"].isin(CLASSES)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(f"row {i} (utt_id={df['utt_id'].iloc[i]!r}): label {df['label'].iloc[i]!r} not in {CLASSES}")
    return [LabelRequest(str(u), "" if t is None or (isinstance(t, float) and math.isnan(t)) else str(t), str(lab))
            for u, t, lab in zip(df["utt_id"], df["text"], df["label"])]


def label_utterances(df, labeller: Labeller, cache_dir: str | os.PathLike, batch_size: int = 8,
                     policy: str = "swap", progress: bool = True, shard: Any = None):
    """Soft labels for the rows of ``df`` (``utt_id``, ``text``, ``label``; ``corpus`` kept when present).

    Cached answers are reused; the rest is asked in batches of ``batch_size`` and appended to the cache after
    each batch, so an interrupted run continues where it stopped. Returns one row per input row with
    :data:`SOFT_LABEL_COLUMNS` + :data:`EXTRA_COLUMNS`; rejected rows have NaN probabilities, rows the backend
    failed on (not cached; retried next time) have ``status="error"``. ``.attrs["computed"]`` counts the
    utterances asked this time.

    ``shard=(index, count)`` (or ``"index/count"``): only the rows at positions ``index, index + count, ...``
    are asked and returned, appended to this shard's part of the cache; a call without ``shard`` merges the
    parts into the main cache first.
    """

    shard = check_shard(shard)
    if shard is not None:
        df = df.iloc[shard[0]::shard[1]]
    requests = _requests(df)
    with open_for_writing(cache_dir, labeller, shard) as cache:  # a concurrent run over this cache waits
        todo = [r for r in requests if request_key(r) not in cache]
        todo = list({request_key(r): r for r in todo}.values())  # a duplicated row is asked once
        errors = _ask(labeller, todo, cache, batch_size, policy, progress)
    rows = [_row(r, cache, labeller, policy, errors) for r in requests]
    out = pd.DataFrame(rows)
    if "corpus" in df.columns:
        out["corpus"] = df["corpus"].astype(str).to_numpy()
    else:
        out["corpus"] = None
    out = out[SOFT_LABEL_COLUMNS + EXTRA_COLUMNS]
    out.attrs["computed"] = len(todo)
    out.attrs["cache"] = str(cache.path)
    out.attrs["cache_bad_lines"] = cache.bad_lines
    return out


def _ask(labeller: Labeller, todo: list[LabelRequest], cache: LabelCache, batch_size: int, policy: str,
         progress: bool) -> dict[str, str]:
    """Ask ``labeller`` for ``todo`` in batches, appending each batch's answers to ``cache``; returns the
    backend errors (not cached) by request key."""

    errors: dict[str, str] = {}
    bar = tqdm(total=len(todo), desc=f"LS-LLM {labeller.backend}", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        outcomes = labeller.label(chunk)
        if len(outcomes) != len(chunk):
            raise RuntimeError(f"{labeller!r} returned {len(outcomes)} answers for {len(chunk)} utterances")
        entries = []
        for r, o in zip(chunk, outcomes):
            if o.error is not None:
                errors[request_key(r)] = o.error
                continue
            _, status, reason = validate_distribution(o.values, r.label, policy)
            if o.values is None and o.reason:
                reason = o.reason  # why the reply held no distribution
            entries.append(dict(key=request_key(r), utt_id=r.utt_id, raw=o.raw, values=o.values, status=status,
                                reason=reason, parser=labeller.parser))
        cache.add(entries)
        bar.update(len(chunk))
    bar.close()
    return errors


def _current(entry: dict, labeller: Labeller) -> dict:
    """A cached entry as the current parser reads its raw reply (entries read by an older parser are re-read;
    a refusal stays a refusal)."""
    if not labeller.parser or entry.get("parser") == labeller.parser or not entry.get("raw") \
            or str(entry["raw"]).startswith("[refused]"):
        return entry
    reply = read_reply(entry["raw"])
    return {**entry, "values": reply.values, "reason": reply.reason, "parser": labeller.parser}


def _row(r: LabelRequest, cache: LabelCache, labeller: Labeller, policy: str, errors: dict[str, str]) -> dict:
    """One output row: the cached answer validated under ``policy`` (it may differ from the cached run's)."""

    key = request_key(r)
    row: dict[str, Any] = {"utt_id": r.utt_id, "label": r.label, **cache.provenance}
    if key in errors or key not in cache:
        row.update({c: np.nan for c in CLASSES}, status="error", reason=errors.get(key, "not labelled"),
                   llm_argmax=None, raw="")
        return row
    e = _current(cache.entries[key], labeller)
    dist, status, reason = validate_distribution(e["values"], r.label, policy)
    if e["values"] is None and e.get("reason"):
        reason = e["reason"]
    valid = e["values"] is not None and len(e["values"]) == NUM_CLASSES
    row.update({c: (np.nan if dist is None else float(dist[k])) for k, c in enumerate(CLASSES)},
               status=status, reason=reason, raw=e["raw"],
               llm_argmax=CLASSES[int(np.argmax(e["values"]))] if valid else None)
    return row


def train_manifests(workdir: str | os.PathLike, corpora: Iterable[str] | None = None):
    """The train manifests of every corpus in ``<workdir>/manifests`` (or of ``corpora``), concatenated."""

    dirs = run_dirs(workdir)
    paths = sorted(dirs.manifests.glob("*_train.parquet"))
    if corpora is not None:
        wanted = set(corpora)
        paths = [p for p in paths if p.stem[: -len("_train")] in wanted]
    if not paths:
        raise FileNotFoundError(f"no train manifests in {dirs.manifests}: run notebook 01 (bber prepare) first")
    return pd.concat([load_manifest(p) for p in paths], ignore_index=True)


LEXICON_LANGUAGES = ("en", "ru")  # the languages of the lexicon's cue words (``lexicon.CUE_STEMS``)


def _warn_uncovered_languages(df, backend: str) -> None:
    """One warning line when the offline lexicon labeller meets rows of a language it has no cue words for (the
    LLM backends' prompt asks about the utterance in any language)."""
    langs = sorted(set(df["language"].astype(str)) - set(LEXICON_LANGUAGES)) if "language" in df else []
    if backend == "lexicon" and langs:
        warnings.warn(f"LS-LLM: the lexicon labeller has cue words for {', '.join(LEXICON_LANGUAGES)} only; rows in "
                      f"{', '.join(langs)} get soft labels from the true label alone: use an LLM backend "
                      f"(transformers | openai), whose prompt works for any language", stacklevel=3)


def label_workdir(workdir: str | os.PathLike, backend: str = "lexicon", model: str | None = None,
                  mode: str = "generate", corpora: Iterable[str] | None = None, batch_size: int = 8,
                  policy: str = "swap", limit: int = 0, progress: bool = True, labeller: Labeller | None = None,
                  shard: Any = None, **backend_kwargs: Any):
    """Label the train manifests of ``workdir`` and write ``ls_llm/soft_labels.parquet``; returns the table.

    ``limit`` > 0 labels only the first N utterances of each corpus (quick looks at a slow LLM).
    ``shard=(index, count)``: label only this shard's share into its part of the cache and return it, without
    writing the table; the next call without ``shard`` merges the parts, labels what is still missing and
    writes the table.
    """

    shard = check_shard(shard)
    dirs = run_dirs(workdir)
    df = train_manifests(workdir, corpora)
    check_writable(dirs.root / "ls_llm", "labelling writes its cache and soft-label table there; make it "
                                         "writable or choose another --workdir")
    if limit and limit > 0:
        df = df.groupby("corpus", sort=False).head(int(limit)).reset_index(drop=True)
    if labeller is None:
        _warn_uncovered_languages(df, backend)
    labeller = labeller or build_labeller(backend, model, mode, batch_size=batch_size, **backend_kwargs)
    table = label_utterances(df, labeller, dirs.ls_llm / "cache", batch_size=batch_size, policy=policy,
                             progress=progress, shard=shard)
    if shard is not None:
        return table
    out = dirs.ls_llm / SOFT_LABELS_FILE
    if len(table) and not table["status"].isin(USABLE_STATUSES).any():
        reasons = table["reason"].value_counts().head(3).to_dict()
        raise ValueError(f"{labeller!r} gave no usable soft label for any of {len(table)} utterances "
                         f"(most common reasons: {reasons}); {out} was left unchanged")
    save_soft_labels(table, out)
    return table




def mean_by_true_class(table):
    """``7 x 7`` DataFrame: the mean soft label (columns) of the usable rows of each true class (rows)."""
    usable = table[table["status"].isin(USABLE_STATUSES)]
    return usable.groupby("label")[list(CLASSES)].mean().reindex(list(CLASSES))


def entropy(table):
    """Entropy (nats) of each usable row's distribution, as a Series indexed like ``table``."""

    usable = table[table["status"].isin(USABLE_STATUSES)]
    p = usable[list(CLASSES)].to_numpy(dtype=float)
    return usable.assign(_h=-(np.where(p > 0, p * np.log(np.clip(p, 1e-12, None)), 0.0)).sum(axis=1))["_h"]


def argmax_agreement(table):
    """Per true class: how often the backend's own top class (before any repair) is the true label."""

    answered = table[table["llm_argmax"].notna()]
    agree = (answered["llm_argmax"] == answered["label"]).groupby(answered["label"]).agg(["mean", "size"])
    agree = agree.rename(columns={"mean": "agreement", "size": "utterances"}).reindex(list(CLASSES))
    total = pd.DataFrame({"agreement": [(answered["llm_argmax"] == answered["label"]).mean()],
                          "utterances": [len(answered)]}, index=["all"])
    return pd.concat([agree, total])


def status_summary(table):
    """Counts per status and reason (reasons stripped of class names, so that alike reasons group)."""

    reason = table["reason"].fillna("").str.replace(r"swapped \w+ with \w+", "swapped with the max", regex=True)
    reason = reason.str.replace(r"\(sum was [^)]*\)", "", regex=True).str.replace(r"in favour of \w+", "",
                                                                                   regex=True)
    reason = reason.str.replace(r"(negative value) \S+ for \w+", r"\1", regex=True).str.strip()
    return (pd.DataFrame({"status": table["status"], "reason": reason}).value_counts().rename("utterances")
            .reset_index())


