"""The study table as Markdown (``study_markdown``: percent, mean ± 95 % CI over
seeds, a note where a difference to BiFormer is within a few test clips) and the paper table's view.
"""

from __future__ import annotations

import math
from typing import Iterable

from bber_utils.study.stats import compare_to


SETTING_NAMES = {"audio_only": "audio only", "text_only": "text only", "biformer": "BiFormer",
                 "bigraphformer": "BiGraphFormer", "bigatedformer": "BiGatedFormer",
                 "bigatedgraphformer": "BiGatedGraphFormer", "bimamba": "BiMamba",
                 "predictions_fusion": "prediction fusion", "biformer_withprob": "BiFormer WithProb"}

AUGMENT_LABELS = {"sds_ratio": "SDS", "tug_ratio": "TUG", "ls_llm_p": "LS-LLM"}


def _setting_label(study: str, setting: str) -> str:
    if study != "augmentation":
        return SETTING_NAMES.get(setting, setting)
    if setting == "+all":
        return "BiFormer + SDS + TUG + LS-LLM"
    parts = []
    for piece in setting.lstrip("+").split("+"):
        key, _, value = piece.partition("=")
        parts.append(f"{AUGMENT_LABELS.get(key, key)} ({value})" if value else piece)
    return "BiFormer + " + " + ".join(parts)


def _cell(mean: float, half: float) -> str:
    if mean is None or mean != mean:
        return "–"
    return f"{100 * mean:.1f}" if half is None or half != half else f"{100 * mean:.1f} ± {100 * half:.1f}"


def study_markdown(study, n_test: dict[str, int] | None = None, reference: tuple[str, str] = ("fusion", "biformer"),
                   metrics: Iterable[str] = ("uar", "wf1"), synthetic: bool = True, clips: int = 3) -> str:
    """The study table (``study.csv`` of notebook 07) as Markdown: one row per setting, per corpus the metrics as
    mean ± 95 % CI half-width over seeds (percent), the number of seeds, and a note per corpus where the WAR
    difference to ``reference`` is within ``clips`` test clips or its 95 % interval includes 0 (``compare_to``)."""

    metrics = list(metrics)
    corpora = list(dict.fromkeys(study["corpus"]))
    notes = {}
    if n_test:
        cmp = compare_to(study, reference, n_test, metric="war", clips=clips)
        for r in cmp.itertuples(index=False):
            if r.verdict not in ("better", "worse"):
                notes.setdefault((r.study, r.setting), []).append(f"{r.corpus}: {r.verdict}")
    header = ["study", "setting", "seeds"] + [f"{c} {m.upper()}" for c in corpora for m in metrics]
    if n_test:
        header.append(f"vs {SETTING_NAMES.get(reference[1], reference[1])}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (st, se), part in study.groupby(["study", "setting"], sort=False):
        by_corpus = part.set_index("corpus")
        seeds = int(part["n_seeds"].max()) if "n_seeds" in part else 1
        row = [st, _setting_label(st, se), str(seeds)]
        for c in corpora:
            for m in metrics:
                if c in by_corpus.index:
                    r = by_corpus.loc[c]
                    row.append(_cell(float(r[m]), float(r.get(f"{m}_ci95", math.nan))))
                else:
                    row.append("–")
        if n_test:
            row.append("reference" if (st, se) == reference else "; ".join(notes.get((st, se), [])) or "")
        lines.append("| " + " | ".join(row) + " |")
    what = "the synthetic demo corpus" if synthetic else "the corpora of this work folder"
    n_seeds = int(study["n_seeds"].max()) if "n_seeds" in study and len(study) else 1
    footer = (f"Test split of {what}, percent, mean ± 95 % confidence half-width over {n_seeds} seed(s) "
              "(Student t; no interval with one seed).")
    if n_test:
        sizes = ", ".join(f"{c} {n}" for c, n in n_test.items())
        footer += (f" Test clips: {sizes}; the last column flags a WAR difference to the reference smaller than "
                   f"{clips} clips, or whose 95 % interval includes 0 (not a finding): the interval of the "
                   "seed-by-seed difference (the runs of a seed share their unimodal encoders and data order), "
                   "or the two rows' own intervals where the seeds differ.")
    return "\n".join(lines) + "\n\n" + footer + "\n"


def paper_table_view(paper):
    """The paper table for reading: our missing numbers as "–" (no run of that corpus here), not None/NaN."""
    view = paper.copy()
    for col in view.columns:
        if col.startswith("ours"):
            view[col] = view[col].map(lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    return view
