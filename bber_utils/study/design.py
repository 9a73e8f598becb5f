"""The paper's study: which settings it trains (``paper_study``: modalities,
fusion types, each augmentation and all of them, single- vs multi-corpus) and the numbers the paper reports
(``PAPER_REPORTED``, ``paper_table``).
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd


# Numbers the paper reports (percent, test sets). They are reported, not reproduced here.
PAPER_REPORTED = [
    # setting, corpus, metric, value
    ("bimodal (multi-corpus)", "meld", "uar", 38.54),
    ("bimodal (multi-corpus)", "resd", "uar", 67.89),
    ("text only (multi-corpus)", "meld", "uar", 36.17),
    ("text only (multi-corpus)", "resd", "uar", 37.20),
    ("audio only (multi-corpus)", "meld", "uar", 28.00),
    ("audio only (multi-corpus)", "resd", "uar", 60.79),
    ("best single-corpus", "meld", "wf1", 68.31),
    ("best single-corpus", "resd", "wf1", 85.25),
]


def paper_table(registry=None, split: str = "test"):
    """The paper's reported numbers next to ours (percent). Ours: the best run per corpus by dev mean."""

    paper = pd.DataFrame(PAPER_REPORTED, columns=["setting", "corpus", "metric", "paper (reported)"])
    if registry is None or registry.empty:
        return paper
    ours = {}
    for corpus, part in registry.groupby("corpus"):
        dev = part[part["split"] == "dev"]
        if dev.empty:
            continue
        best_run = dev.sort_values("mean", ascending=False)["run"].iloc[0]
        row = part[(part["run"] == best_run) & (part["split"] == split)]
        if not row.empty:
            ours[corpus] = (best_run, row.iloc[0])
    paper["ours: best run by dev"] = [ours[c][0] if c in ours else None for c in paper["corpus"]]
    paper[f"ours ({split}, %)"] = [round(100 * float(ours[c][1][m]), 2) if c in ours else None
                                   for c, m in zip(paper["corpus"], paper["metric"])]
    return paper


FUSION_MODELS = ("biformer", "bigraphformer", "bigatedformer", "bigatedgraphformer", "bimamba",
                 "predictions_fusion", "biformer_withprob")

AUGMENT_NAMES = {"sds_ratio": "SDS", "tug_ratio": "TUG", "ls_llm_p": "LS-LLM"}


def paper_study(corpora: list[str], fusion_models: Iterable[str] = FUSION_MODELS, main_model: str = "biformer",
                augment: dict[str, float] | None = None, single_corpus: bool = True) -> list[dict[str, Any]]:
    """The settings of the paper's study, each with a ``study`` (which question) and ``setting`` label.

    unimodal vs bimodal; the fusion types; each augmentation alone and all combined (ratios from
    ``augment``, e.g. the search's choice); single- vs multi-corpus training for ``main_model``.
    ``augment`` may also hold ``"+a+b": {...}`` entries: an extra combination with its own ratios (e.g. the demo's
    SDS at TUG's size, the control that separates "more rows" from "synthetic emotional rows").
    """
    augment = augment or {"sds_ratio": 0.5, "tug_ratio": 0.5, "ls_llm_p": 0.2}
    combos = {k: v for k, v in augment.items() if isinstance(v, dict)}
    augment = {k: v for k, v in augment.items() if not isinstance(v, dict)}
    all_corpora = list(corpora)
    out = [{"study": "modality", "setting": m, "model": m, "train_corpora": all_corpora}
           for m in ("audio_only", "text_only")]
    out += [{"study": "fusion", "setting": m, "model": m, "train_corpora": all_corpora} for m in fusion_models]
    for key, value in augment.items():
        if value:
            out.append({"study": "augmentation", "setting": f"+{key}={value}", "model": main_model,
                        "train_corpora": all_corpora, key: value})
    for label, ratios in combos.items():
        out.append({"study": "augmentation", "setting": label, "model": main_model, "train_corpora": all_corpora,
                    **ratios})
    if sum(bool(v) for v in augment.values()) > 1:
        out.append({"study": "augmentation", "setting": "+all", "model": main_model, "train_corpora": all_corpora,
                    **augment})
    if single_corpus and len(all_corpora) > 1:
        out += [{"study": "corpora", "setting": f"single: {c}", "model": main_model, "train_corpora": [c]}
                for c in all_corpora]
    return out
