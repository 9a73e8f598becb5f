"""SDS — stacked data sampling: short training utterances extended with same-label partners (notebook 03).

What the paper does: utterances shorter than a target length (4 s) are "stacked" with other utterances of the
same emotion and corpus, so that the encoders see longer, still single-label, examples.

What we do (``apply_sds``), on the train split only, per corpus, seeded with a numpy ``Generator``:

1. *Eligible* utterances are those with ``0 < duration_s < target_seconds``. Zero-length or unknown-duration
   rows are never merged (nor used as partners) and are reported.
2. ``ratio`` is the fraction of eligible utterances that is merged: ``round(ratio · n_eligible)`` of them, drawn
   without replacement (``ratio=0``: none; ``ratio=1``: all).
3. Each selected utterance is extended by random partners of the same label and corpus until
   ``target_seconds`` is reached: a partner whose length fills the gap *without* passing ``max_seconds`` is
   preferred (uniform among those), else any long-enough partner (the result is then cropped), else the
   longest unused one (and the chain goes on). Partners are indexed by label once (sorted durations and a
   binary search), so a MELD-sized train split (~10 k utterances) is planned in well under a second.
4. The merged audio is the components joined (``gap_seconds`` of silence between them), cropped to
   ``max_seconds``; it is written once, atomically, as ``out_dir/wavs/{utt_id}.wav`` and reused later. The
   text is the components' texts joined with a space. The new row has ``source="sds"``, a ``components``
   column (``;``-joined utt_ids, the original first) and ``utt_id = "{corpus}-train-sds_{hash}"`` where the
   hash covers the components, ``max_seconds`` and ``gap_seconds`` — the same merge always gets the same id.
5. Rows of any source take part (TUG rows too, if they were mixed in first, as in the reference), except
   earlier SDS rows, which are kept as they are but never merged again.
6. ``mode="add"`` (default) returns the originals *plus* the merged rows: the paper describes stacked samples
   as augmenting the training set. ``mode="replace"`` puts each merged row in place of its original, as the
   reference code does (notes §4.6, §11.11), for comparison.

Where we differ from the reference code: it is unseeded, keeps the partners' texts unused and re-transcribes
the merged audio with Whisper, never crops, picks from ``ratio · n_all`` rows and replaces the originals; ours
is seeded (``tests/augment/test_sds.py::test_seeded_and_deterministic``), joins the real texts, crops to
``max_seconds``, uses ``ratio · n_eligible`` and adds by default. A component whose audio cannot be read
drops that merge, counted and reported in ``df.attrs["sds"]`` (``sds_report``).
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from bber_utils.core.audio import SAMPLE_RATE, AudioError, concatenate, load_audio, write_wav
from bber_utils.core.fileio import check_writable
from bber_utils.core.paths import run_dirs
from bber_utils.core.progress import tqdm
from bber_utils.corpora import available_corpora, load_corpus
from bber_utils.corpora.manifest import make_utt_id, save_manifest


TARGET_SECONDS = 4.0

MAX_SECONDS = 8.0

MODES = ("add", "replace")


@dataclass
class SdsPlan:
    """Which utterances are merged with which partners (row positions into the train table)."""

    merges: list[list[int]] = field(default_factory=list)  # each: [original, partner, partner, …]
    planned_seconds: list[float] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)  # {"utt_id", "reason"}
    eligible: int = 0
    selected: int = 0


class _LabelIndex:
    """Usable utterances of one (corpus, label), sorted by duration, for partner look-ups by binary search."""

    def __init__(self, positions: np.ndarray, durations: np.ndarray):
        order = np.argsort(durations, kind="stable")
        self.pos = positions[order]
        self.dur = durations[order]

    def _draw(self, a: int, b: int, used: set[int], rng: np.random.Generator) -> int | None:
        if b <= a:
            return None
        for _ in range(8):
            p = int(self.pos[rng.integers(a, b)])
            if p not in used:
                return p
        free = [int(p) for p in self.pos[a:b] if int(p) not in used]
        return free[int(rng.integers(len(free)))] if free else None

    def pick(self, needed: float, room: float, used: set[int], rng: np.random.Generator) -> int | None:
        """A partner that fills ``needed`` seconds within ``room``; else one longer than needed; else the longest."""
        lo = int(np.searchsorted(self.dur, needed, side="left"))
        hi = int(np.searchsorted(self.dur, room, side="right"))
        for a, b in ((lo, hi), (lo, len(self.dur))):
            p = self._draw(a, b, used, rng)
            if p is not None:
                return p
        for i in range(min(lo, len(self.dur)) - 1, -1, -1):
            if int(self.pos[i]) not in used:
                return int(self.pos[i])
        return None


def _check_args(train_df, ratio: float, target_seconds: float, max_seconds: float | None, gap_seconds: float):
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"SDS ratio must be in [0, 1], got {ratio}")
    if target_seconds <= 0:
        raise ValueError(f"target_seconds must be > 0, got {target_seconds}")
    if max_seconds is not None and max_seconds < target_seconds:
        raise ValueError(f"max_seconds ({max_seconds}) must be >= target_seconds ({target_seconds})")
    if gap_seconds < 0:
        raise ValueError(f"gap_seconds must be >= 0, got {gap_seconds}")
    missing = [c for c in ("utt_id", "corpus", "split", "label", "duration_s") if c not in train_df.columns]
    if missing:
        raise ValueError(f"SDS needs manifest columns {missing}")
    other = train_df.loc[train_df["split"] != "train", "utt_id"]
    if len(other):
        raise ValueError(f"SDS applies to the train split only; got {len(other)} other row(s), e.g. {other.iloc[0]!r}")


def plan_sds(train_df, ratio: float, seed: int, target_seconds: float = TARGET_SECONDS,
             max_seconds: float | None = MAX_SECONDS, gap_seconds: float = 0.0) -> SdsPlan:
    """Choose the merges (no audio is read): the fast, seeded selection step of ``apply_sds``."""
    _check_args(train_df, ratio, target_seconds, max_seconds, gap_seconds)
    plan = SdsPlan()
    ids = train_df["utt_id"].astype(str).to_numpy()
    dur = train_df["duration_s"].to_numpy(dtype=float)
    labels = train_df["label"].astype(str).to_numpy()
    corpora = train_df["corpus"].astype(str).to_numpy()
    src = train_df["source"].astype(str).to_numpy() if "source" in train_df.columns else np.full(len(ids), "")
    usable = np.isfinite(dur) & (dur > 0) & (src != "sds")
    for i in np.flatnonzero(~(np.isfinite(dur) & (dur > 0)) & (src != "sds")):
        plan.skips.append({"utt_id": ids[i], "reason": "zero-length or unknown duration: not merged"})
    room_total = math.inf if max_seconds is None else max_seconds
    for corpus in sorted(set(corpora)):
        rng = np.random.default_rng([int(seed), zlib.crc32(corpus.encode())])
        in_corpus = corpora == corpus
        index = {lab: _LabelIndex(np.flatnonzero(in_corpus & usable & (labels == lab)),
                                  dur[in_corpus & usable & (labels == lab)])
                 for lab in sorted(set(labels[in_corpus]))}
        eligible = np.flatnonzero(in_corpus & usable & (dur < target_seconds))
        k = int(round(ratio * len(eligible)))
        plan.eligible += len(eligible)
        plan.selected += k
        chosen = np.sort(rng.choice(eligible, size=k, replace=False)) if k else eligible[:0]
        for base in chosen:
            base = int(base)
            comps, used, cur = [base], {base}, float(dur[base])
            while cur < target_seconds:
                p = index[labels[base]].pick(target_seconds - cur - gap_seconds,
                                             room_total - cur - gap_seconds, used, rng)
                if p is None:
                    break
                comps.append(p)
                used.add(p)
                cur += gap_seconds + float(dur[p])
            if len(comps) == 1:
                plan.skips.append({"utt_id": ids[base],
                                   "reason": f"no partner with label {labels[base]!r} in corpus {corpus!r}"})
                continue
            plan.merges.append(comps)
            plan.planned_seconds.append(min(cur, room_total))
    return plan


def sds_utt_id(corpus: str, component_ids: list[str], max_seconds: float | None, gap_seconds: float) -> str:
    """Deterministic id of a merged utterance: ``"{corpus}-train-sds_{12 hex}"``."""

    key = ";".join(component_ids) + f"|max={max_seconds}|gap={gap_seconds}"
    return make_utt_id(corpus, "train", "sds_" + hashlib.sha1(key.encode()).hexdigest()[:12])


def _render(rows, merge_id: str, wav_path: Path, max_seconds: float | None, gap_seconds: float) -> float:
    """Write (or reuse) the merged wav; returns its duration. Raises ``AudioError`` for a bad component."""

    if wav_path.exists():
        return sf.info(str(wav_path)).duration
    waves = []
    for r in rows:
        try:
            start, end = r.get("start_s"), r.get("end_s")
            waves.append(load_audio(r["audio_path"],
                                    start_s=start if start is not None and np.isfinite(start) and start > 0 else None,
                                    end_s=end if end is not None and np.isfinite(end) else None))
        except AudioError as exc:
            raise AudioError(exc.path, f"component {r['utt_id']}: {exc.reason}") from exc
    wav = concatenate(waves, gap_s=gap_seconds)
    if max_seconds is not None:
        wav = wav[:int(round(max_seconds * SAMPLE_RATE))]
    write_wav(wav_path, wav)
    return len(wav) / SAMPLE_RATE


def apply_sds(train_df, ratio: float, seed: int, out_dir: str | os.PathLike, target_seconds: float = TARGET_SECONDS,
              max_seconds: float | None = MAX_SECONDS, gap_seconds: float = 0.0, mode: str = "add",
              progress: bool = True):
    """Stacked data sampling on a train manifest; returns the augmented train manifest (see module docstring).

    The result has a ``components`` column ("" for originals) and ``df.attrs["sds"]`` with the counts
    (eligible, selected, merged, cropped, skipped) and the skipped utterances with their reasons.
    """

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    base_df = train_df.reset_index(drop=True)
    plan = plan_sds(base_df, ratio, seed, target_seconds, max_seconds, gap_seconds)
    records = base_df.to_dict("records")
    wav_dir = Path(out_dir) / "wavs"
    merged, replaced_at, skips, cropped = [], [], list(plan.skips), 0
    present = set(base_df["utt_id"].astype(str))  # an input that already holds some merges keeps them once
    for comps, planned in tqdm(list(zip(plan.merges, plan.planned_seconds)), desc="SDS merges",
                               disable=not progress or not plan.merges, leave=False):
        rows = [records[i] for i in comps]
        comp_ids = [str(r["utt_id"]) for r in rows]
        uid = sds_utt_id(str(rows[0]["corpus"]), comp_ids, max_seconds, gap_seconds)
        if uid in present:
            continue
        try:
            seconds = _render(rows, uid, wav_dir / f"{uid}.wav", max_seconds, gap_seconds)
        except AudioError as exc:
            skips.append({"utt_id": comp_ids[0], "reason": f"merge dropped: {exc}"})
            continue
        full = sum(float(r["duration_s"]) for r in rows) + gap_seconds * (len(rows) - 1)
        cropped += bool(max_seconds is not None and full > max_seconds + 1e-6)
        merged.append({**rows[0], "utt_id": uid, "audio_path": str((wav_dir / f"{uid}.wav").resolve()),
                       "start_s": 0.0, "end_s": float("nan"), "duration_s": float(seconds),
                       "text": " ".join(str(r.get("text") or "").strip() for r in rows if str(r.get("text") or "").strip()),
                       "source": "sds", "components": ";".join(comp_ids)})
        replaced_at.append(comps[0])
    columns = list(base_df.columns) + ([] if "components" in base_df.columns else ["components"])
    originals = [{**r, "components": r["components"] if isinstance(r.get("components"), str) else ""}
                 for r in records]
    if mode == "add":
        rows_out = originals + merged
    else:
        rows_out = list(originals)
        for pos, row in zip(replaced_at, merged):
            rows_out[pos] = row
    out = pd.DataFrame(rows_out, columns=columns)
    out.attrs["sds"] = {"mode": mode, "ratio": float(ratio), "seed": int(seed), "target_seconds": target_seconds,
                        "max_seconds": max_seconds, "gap_seconds": gap_seconds, "eligible": plan.eligible,
                        "selected": plan.selected, "merged": len(merged), "cropped": cropped,
                        "skipped": len(skips), "skips": skips}
    return out


def sds_report(df):
    """The skipped utterances of an ``apply_sds`` result as a table (``utt_id, reason``)."""

    return pd.DataFrame(df.attrs.get("sds", {}).get("skips", []), columns=["utt_id", "reason"])


def apply_sds_to_workdir(workdir, ratio: float, seed: int = 42, target_seconds: float = TARGET_SECONDS,
                         max_seconds: float | None = MAX_SECONDS, gap_seconds: float = 0.0, mode: str = "add",
                         progress: bool = True) -> dict:
    """``apply_sds`` on every prepared corpus's train manifest; writes ``sds/{corpus}_train_sds.parquet`` and
    ``sds/{corpus}_train_sds_skips.csv``; returns ``{corpus: DataFrame}``."""

    dirs = run_dirs(workdir)
    corpora = available_corpora(workdir)
    if not corpora:
        raise FileNotFoundError(f"no manifests in {dirs.manifests}; run prepare (notebook 01) first")
    check_writable(dirs.root / "sds", "SDS writes its merged wavs and manifests there; make it writable or "
                                      "choose another --workdir")
    out = {}
    for corpus in corpora:
        df = apply_sds(load_corpus(workdir, corpus)["train"], ratio, seed, dirs.sds, target_seconds, max_seconds,
                       gap_seconds, mode, progress)
        save_manifest(df, dirs.sds / f"{corpus}_train_sds.parquet")
        sds_report(df).to_csv(dirs.sds / f"{corpus}_train_sds_skips.csv", index=False)
        out[corpus] = df
    return out
