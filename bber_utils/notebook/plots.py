"""Figures of the results notebooks, one function each. Each returns the matplotlib Figure and, given
``save_to``, writes it there as PNG (150 dpi) so that it reads at a glance in the README.

PNGs are written without the software/date metadata, so the same numbers give byte-identical files (a rerun of
``make reproduce`` leaves ``git status`` clean unless a number changed). Every axis names its unit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from bber_utils.core.labels import CLASSES

# Heavy libraries (matplotlib, seaborn) are imported inside the functions that use them, so that importing this
# module, and `bber --help`, stays fast.

# No "Software: Matplotlib version …" (or any date) in the files: the bytes depend on the numbers only.
PNG_METADATA = {"Software": None}


def _finish(fig, save_to: str | os.PathLike | None):
    fig.tight_layout()
    if save_to is not None:
        save_to = Path(save_to)
        save_to.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=150, bbox_inches="tight", metadata=PNG_METADATA)
    return fig


def confusion_matrices(confusions: dict[str, list[list[int]]], title: str = "", normalize: bool = True,
                       save_to=None, classes: dict[str, list[str]] | None = None):
    """One heat map per entry (e.g. per corpus); rows = true class, columns = predicted class. ``classes``:
    ``{entry: its corpus's label set}``: that entry shows those classes only (a 7x7 matrix is cut to them);
    without it, a class that is neither in the split nor predicted is left out (the classes outside a corpus's
    label set are never predicted, so a corpus shows its own classes)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = max(len(confusions), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False)
    for ax, (name, cm) in zip(axes[0], confusions.items()):
        cm = np.asarray(cm, dtype=float)
        given = (classes or {}).get(name)
        names = [c for c in CLASSES if c in given] if given else list(CLASSES)
        if not given and cm.shape[0] == len(CLASSES) and cm.sum():
            names = [c for i, c in enumerate(CLASSES) if cm[i].sum() or cm[:, i].sum()]
        if len(names) < len(CLASSES) and cm.shape[0] == len(CLASSES):
            idx = [CLASSES.index(c) for c in names]
            cm = cm[np.ix_(idx, idx)]
        shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
        sns.heatmap(shown, ax=ax, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", vmin=0,
                    vmax=1 if normalize else None, cbar=False, xticklabels=names, yticklabels=names,
                    annot_kws={"size": 7})
        ax.set(title=name, xlabel="predicted class", ylabel="true class")
        ax.tick_params(axis="x", rotation=45)
    if title:
        fig.suptitle(title)
    return _finish(fig, save_to)


def metric_bars(summary, x: str, metric: str = "wf1", hue: str = "corpus", title: str = "", save_to=None):
    """Bars of ``metric`` (mean over seeds) per ``x``, one colour per ``hue``, with 95 % CI error bars."""
    import matplotlib.pyplot as plt

    table = summary.assign(_x=summary[x].astype(str), _h=summary[hue].astype(str))
    xs = list(dict.fromkeys(table["_x"]))
    means = 100 * table.pivot_table(index="_x", columns="_h", values=metric, dropna=False).reindex(xs)
    ci_col = f"{metric}_ci95"
    errs = (100 * table.pivot_table(index="_x", columns="_h", values=ci_col, dropna=False).reindex(xs)
            if ci_col in table else means * 0).fillna(0)
    hues = list(means.columns)
    width = 0.8 / max(len(hues), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(xs) + 2), 4))
    for j, h in enumerate(hues):
        ax.bar(np.arange(len(xs)) + (j - (len(hues) - 1) / 2) * width, means[h], width,
               yerr=errs[h] if h in errs and errs[h].any() else None, capsize=3, label=h)
    ax.set_xticks(np.arange(len(xs)), xs, rotation=30, ha="right")
    ax.set_ylabel(f"{metric.upper()} (%)")
    ax.set_xlabel(x)
    n = int(summary["n_seeds"].max()) if "n_seeds" in summary else 1
    ax.set_title(title or (f"{metric.upper()} by {x} (mean over {n} seeds, 95 % CI)" if n > 1
                           else f"{metric.upper()} by {x} (one seed)"))
    ax.legend(title=hue, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, save_to)


def findings_forest(findings, clips_pts: dict[str, float] | None = None, title: str = "", save_to=None):
    """The study's findings (``findings.study_findings``) as a forest plot: per comparison and corpus the
    difference in WAR points with its 95 % interval (seed by seed where paired), a line at 0 and, from
    ``clips_pts`` ({corpus: points of 3 test clips}), the band a difference must leave to count."""
    import matplotlib.pyplot as plt

    comparisons = list(dict.fromkeys(findings["comparison"]))
    corpora = list(dict.fromkeys(findings["corpus"]))
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(comparisons) + 1.4))
    step = 0.8 / max(len(corpora), 1)
    for j, corpus in enumerate(corpora):
        part = findings[findings["corpus"] == corpus].set_index("comparison").reindex(comparisons)
        y = np.arange(len(comparisons)) + (j - (len(corpora) - 1) / 2) * step
        err = part["diff_ci95"].fillna(0).to_numpy()
        ax.errorbar(part["diff_pts"], y, xerr=err, fmt="o", capsize=3, label=corpus, color=f"C{j}")
    band = max((clips_pts or {}).values(), default=0)
    if band:
        ax.axvspan(-band, band, color="0.85", zorder=0, label="within 3 test clips")
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(np.arange(len(comparisons)), comparisons)
    ax.invert_yaxis()
    ax.set_xlabel("difference in WAR (percentage points), 95 % interval")
    ax.set_title(title or "Findings: each difference with its interval")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, save_to)


def ratio_curves(trials, ratio: str, score: str = "dev_score", group: str | None = None, title: str = "",
                 save_to=None):
    """Dev score against an augmentation ratio (one line per ``group``, e.g. corpus)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    groups = [(None, trials)] if group is None else list(trials.groupby(group))
    for name, part in groups:
        part = part.groupby(ratio, as_index=False)[score].mean().sort_values(ratio)
        ax.plot(part[ratio], 100 * part[score], marker="o", label=name)
    ax.set(xlabel=f"{ratio} (share of train size)", ylabel="dev mean of UAR/WAR/MF1/WF1 (%)",
           title=title or f"{ratio} search (dev)")
    if group is not None:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, save_to)


AXIS_LABELS = {"train_loss": "train loss (cross-entropy, nats)",
               "dev_mean": "dev mean of UAR/WAR/MF1/WF1 (0-1)"}


def learning_curves(history, columns: Iterable[str] = ("train_loss", "dev_mean"), title: str = "",
                    best_epoch: int | None = None, save_to=None):
    """Per-epoch curves from a run's history table (one panel per column present); the best-dev epoch (the
    checkpoint that is scored; default: the epoch of the highest ``dev_mean``) is marked on every panel."""
    import matplotlib.pyplot as plt

    cols = [c for c in columns if c in history.columns]
    if best_epoch is None and "dev_mean" in history.columns and len(history):
        best_epoch = int(history.loc[history["dev_mean"].idxmax(), "epoch"])
    fig, axes = plt.subplots(1, max(len(cols), 1), figsize=(4.5 * max(len(cols), 1), 3.3), squeeze=False)
    for ax, col in zip(axes[0], cols):
        ax.plot(history["epoch"], history[col], marker=".")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:red", ls="--", lw=1, label=f"best dev epoch ({best_epoch})")
            ax.legend(fontsize=7)
        ax.set(xlabel="epoch", ylabel=AXIS_LABELS.get(col, col), title=col)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _finish(fig, save_to)


def probability_bars(rows, title_col: str = "path", max_clips: int = 6, save_to=None):
    """Per clip, the audio-only, text-only and fused probabilities over the seven classes as grouped bars.

    ``rows``: the table of ``predict.predictions_table`` (columns ``{fused,audio,text}_{class}``).
    """
    import matplotlib.pyplot as plt

    rows = rows[rows["error"].isna()].head(max_clips) if "error" in rows else rows.head(max_clips)
    n = max(len(rows), 1)
    fig, axes = plt.subplots(n, 1, figsize=(7.5, 2.1 * n), squeeze=False, sharex=True)
    x = np.arange(len(CLASSES))
    for ax, (_, row) in zip(axes[:, 0], rows.iterrows()):
        for j, (src, colour) in enumerate((("audio", "tab:blue"), ("text", "tab:orange"), ("fused", "tab:green"))):
            vals = [row.get(f"{src}_{c}") for c in CLASSES]
            if all(v is not None and v == v for v in vals):
                ax.bar(x + (j - 1) * 0.27, vals, 0.27, label=src, color=colour)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability", fontsize=8)
        truth = row.get("true label")
        shown = f"predicted {row.get('label')}" + (f" · true {truth}" if isinstance(truth, str) else "")
        ax.set_title(f"{Path(str(row[title_col])).name}: {shown}  “{str(row.get('text', ''))[:50]}”",
                     fontsize=8, loc="left")
    axes[-1, 0].set_xticks(x, CLASSES, rotation=30)
    axes[-1, 0].set_xlabel("emotion class")
    axes[0, 0].legend(fontsize=7, ncol=3, loc="upper right")
    return _finish(fig, save_to)
