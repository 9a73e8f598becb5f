"""The study's findings, computed from ``study.csv`` (notebook 07) rather than written by hand: each question of the
study as a comparison of two settings, per corpus, seed by seed, and the sentences of notebook 08's conclusions.

- ``study_comparisons(study)``: the questions the study can answer (fusion vs each modality, the other fusion
  types vs BiFormer, each augmentation vs BiFormer, TUG vs its equal-size SDS control).
- ``study_findings(study, n_test)``: one row per question and corpus (``experiments.compare_rows``: difference in
  points and test clips, seeds ahead, the paired 95 % interval, verdict).
- ``findings_markdown(findings)`` / ``conclusions_markdown(findings)``: the table and the sentences.
"""

from __future__ import annotations

import pandas as pd

from bber_utils.study.report import SETTING_NAMES, _setting_label, study_markdown
from bber_utils.study.stats import compare_rows

REFERENCE = ("fusion", "biformer")


def study_comparisons(study) -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    """``[(question, setting A, setting B)]`` (each a ``(study, setting)`` key of ``study``): A − B is reported."""
    keys = list(dict.fromkeys(zip(study["study"], study["setting"])))
    ref = REFERENCE if REFERENCE in keys else next((k for k in keys if k[0] == "fusion"), None)
    if ref is None:
        return []
    out = [("what fusion adds", ref, k) for k in keys if k[0] == "modality"]
    out += [("fusion types", k, ref) for k in keys if k[0] == "fusion" and k != ref]
    augment = [k for k in keys if k[0] == "augmentation"]
    out += [("what each augmentation adds", k, ref) for k in augment]
    tug = [k for k in augment if k[1].startswith("+tug_ratio=")]
    sds = [k for k in augment if k[1].startswith("+sds_ratio=")]
    if tug and sds:
        out.append(("synthetic emotional rows or just more rows", tug[0], sds[0]))
    return out


def study_findings(study, n_test: dict[str, int], metric: str = "war", clips: int = 3):
    """One row per question and corpus: ``question, comparison, corpus, diff_pts, diff_clips, diff_ci95,
    seeds_ahead, seeds_paired, verdict`` (A − B, percent points of ``metric``)."""

    keys = ["study", "setting", "corpus"]
    _check_one_row_per_setting(study, keys)
    rows = study.set_index(keys).sort_index()
    out = []
    for question, a, b in study_comparisons(study):
        for corpus in dict.fromkeys(study["corpus"]):
            if (*a, corpus) not in rows.index or (*b, corpus) not in rows.index:
                continue
            c = compare_rows(rows.loc[(*a, corpus)], rows.loc[(*b, corpus)], metric, n_test.get(corpus), clips)
            out.append({"question": question, "comparison": f"{_label(a)} − {_label(b)}", "corpus": corpus, **c})
    return pd.DataFrame(out, columns=["question", "comparison", "corpus", "diff_pts", "diff_clips", "diff_ci95",
                                      "seeds_ahead", "seeds_paired", "verdict"])


def _check_one_row_per_setting(study, keys: list[str]) -> None:
    """``ValueError`` naming the setting and the differing columns when ``study_table`` split a setting in two
    (its runs differ in a key the setting does not fix, e.g. runs from before a default changed)."""

    twice = study[study.duplicated(keys, keep=False)]
    if not len(twice):
        return
    first = tuple(twice.iloc[0][keys])
    part = twice[(twice[keys] == pd.Series(first, index=keys)).all(axis=1)]
    summary = ("n_seeds", "runs", "dev_mean", "dev_mean_std")
    differ = [c for c in part.columns if c not in keys and c not in summary
              and not c.startswith(("war", "uar", "wf1", "mf1", "mean")) and part[c].astype(str).nunique() > 1]
    raise ValueError(f"the study table has {len(part)} rows for {first[0]}/{first[1]} on {first[2]} "
                     f"({len(twice)} such rows in all): their runs differ in {', '.join(differ) or 'a key'}; "
                     "move the runs of the other setting out of the work folder's train/ and rerun the study")


def _label(key: tuple[str, str]) -> str:
    return _setting_label(*key) if key[0] == "augmentation" else SETTING_NAMES.get(key[1], key[1])


def _cell(r) -> str:
    """``+19.3 (3/3 seeds, ±24.4): verdict`` for one comparison and corpus."""
    seeds = f"{r.seeds_ahead}/{r.seeds_paired} seeds ahead" if r.seeds_paired else "seeds not paired"
    ci = "" if r.diff_ci95 != r.diff_ci95 else f", ±{r.diff_ci95:.1f}"
    return f"{r.diff_pts:+.1f} ({seeds}{ci}): {_verdict_words(r.verdict)}"


def _verdict_words(verdict: str) -> str:
    return {"better": "a finding", "worse": "a finding"}.get(verdict, f"not a finding ({verdict})")


def findings_markdown(findings) -> str:
    """The findings as a Markdown table: one row per comparison, one column per corpus."""
    if findings.empty:
        return ""
    corpora = list(dict.fromkeys(findings["corpus"]))
    lines = ["| question | difference (WAR points) | " + " | ".join(corpora) + " |",
             "|---|---|" + "---|" * len(corpora)]
    for (question, comparison), part in findings.groupby(["question", "comparison"], sort=False):
        by_corpus = {r.corpus: _cell(r) for r in part.itertuples(index=False)}
        lines.append(f"| {question} | {comparison} | " + " | ".join(by_corpus.get(c, "–") for c in corpora) + " |")
    return "\n".join(lines) + "\n"


def conclusions_markdown(findings) -> str:
    """Notebook 08's conclusions as sentences built from ``findings`` (one bullet per question)."""
    bullets = []
    for question, part in findings.groupby("question", sort=False):
        parts = []
        for comparison, rows in part.groupby("comparison", sort=False):
            per_corpus = "; ".join(f"{r.corpus} {r.diff_pts:+.1f} points, "
                                   f"{_seeds(r)}, {_verdict_words(r.verdict)}" for r in rows.itertuples(index=False))
            parts.append(f"{comparison}: {per_corpus}")
        bullets.append(f"- **{question[0].upper() + question[1:]}.** " + ". ".join(parts) + ".")
    return "\n".join(bullets) + "\n" if bullets else ""


def _seeds(r) -> str:
    return f"ahead on {r.seeds_ahead} of {r.seeds_paired} seeds" if r.seeds_paired else "seeds not paired"


def study_report(study, n_test: dict[str, int], synthetic: bool = True, findings=None) -> str:
    """The published Markdown (``figures/study_table.md`` and the README block): the study table, then the
    findings table (``findings``: ``study_findings``'s table when already computed) with how to read it."""

    report = study_markdown(study, n_test, synthetic=synthetic)
    table = findings_markdown(study_findings(study, n_test) if findings is None else findings)
    if table:
        report += ("\n**Findings**, seed by seed (`bber_utils.study.findings`): each cell is the difference in WAR points, "
                   "how many seeds it is ahead on, and the 95 % interval of the paired difference; a difference is "
                   "a finding only when it is at least 3 test clips and its interval excludes 0.\n\n" + table)
    return report
