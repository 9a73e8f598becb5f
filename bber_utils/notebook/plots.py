"""The notebooks' figures, one function each (01-05: the data and the augmentations; 06: the model; 06-09: the
results). Each returns the matplotlib Figure and, given ``save_to``, writes it there as PNG (150 dpi) so that it
reads at a glance in the README. ``tag`` (``synthetic_tag(workdir)``: " — synthetic demo" on the built-in demo
corpus) is added to every title, so a figure taken out of its notebook still says what data it shows.

PNGs are written without the software/date metadata, so the same numbers give byte-identical files (a rerun of
``make reproduce`` leaves ``git status`` clean unless a number changed). Every axis names its unit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from bber_utils.corpora import available_corpora
from bber_utils.core.labels import CLASSES

# Heavy libraries (matplotlib, seaborn) are imported inside the functions that use them, so that importing this
# module, and `bber --help`, stays fast.

# No "Software: Matplotlib version …" (or any date) in the files: the bytes depend on the numbers only.
PNG_METADATA = {"Software": None}

SYNTHETIC_TAG = " — synthetic demo"


def synthetic_tag(workdir) -> str:
    """" — synthetic demo" when every corpus of ``workdir`` is the built-in demo corpus (``demo_*``), else ""."""
    names = available_corpora(workdir)
    return SYNTHETIC_TAG if names and all(n.startswith("demo") for n in names) else ""


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


def probability_bars(rows, title_col: str = "path", max_clips: int = 6, tag: str = "", save_to=None):
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
        ax.set_ylabel("probability (0-1)", fontsize=8)
        truth = row.get("true label")
        shown = f"predicted {row.get('label')}" + (f" · true {truth}" if isinstance(truth, str) else "")
        text = str(row.get("text", "") or "")
        text = text if len(text) <= 50 else text[:49].rstrip() + "…"
        ax.set_title(f"{Path(str(row[title_col])).name}: {shown}  “{text}”", fontsize=8, loc="left")
    axes[-1, 0].set_xticks(x, CLASSES, rotation=30)
    axes[-1, 0].set_xlabel("emotion class")
    axes[0, 0].legend(fontsize=7, ncol=3, loc="upper right")
    fig.suptitle(f"Audio-only, text-only and fused probabilities per clip{tag}", fontsize=10)
    return _finish(fig, save_to)


# ------------------------------------------------------------------------------------------------------------
# 01-05: the data and the augmentations
# ------------------------------------------------------------------------------------------------------------


def class_counts(counts, tag: str = "", save_to=None):
    """01: utterances per class (x) and per corpus (language) and split (bars). ``counts``: the table of
    ``corpora.counts_table`` (columns corpus, language, split and one per class)."""
    import matplotlib.pyplot as plt

    long = counts.melt(id_vars=["corpus", "language", "split"], value_vars=list(CLASSES), var_name="class",
                       value_name="utterances")
    long["set"] = long["corpus"] + " (" + long["language"] + ") " + long["split"]
    table = long.pivot_table(index="class", columns="set", values="utterances", sort=False)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    table.plot.bar(ax=ax, width=0.85, rot=0)
    ax.set(ylabel="utterances (count)", xlabel="emotion class",
           title=f"Utterances per class, corpus (language) and split{tag}")
    ax.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    return _finish(fig, save_to)


def durations(utterances, target_s: float = 4.0, tag: str = "", save_to=None):
    """01: a histogram of the utterance durations per corpus, with SDS's target length. ``utterances``: rows
    with ``corpus``, ``language`` and ``duration_s``."""
    import matplotlib.pyplot as plt

    groups = list(utterances.groupby("corpus", sort=False))
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5 * max(len(groups), 1), 3.4), squeeze=False)
    for ax, (corpus, df) in zip(axes[0], groups):
        ax.hist(df["duration_s"], bins=30, color="tab:blue")
        ax.axvline(target_s, color="tab:red", ls="--", label=f"SDS target {target_s:g} s")
        ax.set(title=f"{corpus} ({df['language'].iloc[0]}){tag}", xlabel="duration (s)",
               ylabel="utterances (count)")
        ax.legend(fontsize=8)
    return _finish(fig, save_to)


SEQUENCE_UNITS = {"audio frames": "audio frames per utterance (20 ms each)",
                  "text steps": "text steps per utterance (sentence vector + words)"}


def sequence_lengths(lengths, tag: str = "", save_to=None):
    """02: histograms of the sequence lengths (one column per modality, e.g. ``audio frames``, ``text steps``)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(lengths.columns), figsize=(5 * len(lengths.columns), 3.2), squeeze=False)
    for ax, col in zip(axes[0], lengths.columns):
        ax.hist(lengths[col], bins=30, color="tab:blue")
        ax.set(title=f"{col} per utterance{tag}", xlabel=SEQUENCE_UNITS.get(col, col), ylabel="utterances (count)")
    return _finish(fig, save_to)


def feature_frames(frames, title: str = "", tag: str = "", save_to=None):
    """02: one utterance's audio features as an image, time (x) by feature (y); log-mel bands when 80 wide."""
    import matplotlib.pyplot as plt

    mel = frames.shape[1] == 80
    fig, ax = plt.subplots(figsize=(10, 3))
    image = ax.imshow(np.asarray(frames).T, origin="lower", aspect="auto", cmap="magma")
    fig.colorbar(image, ax=ax, label="log mel energy (log power)" if mel else "feature value (encoder units)")
    ax.set(title=f"{title}: {frames.shape[0]} frames × {frames.shape[1]}{tag}", xlabel="frame (20 ms each)",
           ylabel="mel band (low to high pitch)" if mel else "feature (index)")
    return _finish(fig, save_to)


def pca_scatter(coords, tag: str = "", save_to=None):
    """02: the pooled features in 2-D (``walkthrough.pooled_pca``), one row per modality, coloured by emotion
    (left) and by language (right); the axes give each component's share of the variance."""
    import matplotlib.pyplot as plt

    modalities = list(dict.fromkeys(coords["modality"]))
    fig, axes = plt.subplots(len(modalities), 2, figsize=(11, 4.5 * len(modalities)), squeeze=False)
    for r, modality in enumerate(modalities):
        part = coords[coords["modality"] == modality]
        for c, (by, values) in enumerate([("label", CLASSES), ("language", sorted(part["language"].unique()))]):
            ax = axes[r, c]
            for v in values:
                m = (part[by] == v).to_numpy()
                ax.scatter(part["pc1"][m], part["pc2"][m], s=10, alpha=0.7, label=v)
            ax.set(title=f"{modality} features ({part['encoder'].iloc[0]}), by {by}{tag}", xticks=[], yticks=[],
                   xlabel=f"PC1 ({part['pc1_share'].iloc[0]:.0%} of variance)",
                   ylabel=f"PC2 ({part['pc2_share'].iloc[0]:.0%} of variance)")
            ax.legend(fontsize=7, markerscale=1.5)
    return _finish(fig, save_to)


def sds_durations(augmented: dict, target_s: float = 4.0, max_s: float = 8.0, tag: str = "", save_to=None):
    """03: per corpus, the durations of the original train rows and of the SDS-merged rows added to them."""
    import matplotlib.pyplot as plt

    n = max(len(augmented), 1)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.4), squeeze=False)
    for ax, (corpus, df) in zip(axes[0], augmented.items()):
        bins = np.linspace(0, max(df["duration_s"].max(), max_s), 30)
        ax.hist(df.loc[df["source"] != "sds", "duration_s"], bins=bins, alpha=0.6, label="original (kept)")
        ax.hist(df.loc[df["source"] == "sds", "duration_s"], bins=bins, alpha=0.6, label="SDS merged (added)")
        ax.axvline(target_s, color="tab:red", ls="--", lw=1, label=f"target {target_s:g} s")
        ax.set(title=f"{corpus}{tag}", xlabel="duration (s)", ylabel="train utterances (count)")
        ax.legend(fontsize=8)
    return _finish(fig, save_to)


def waveform(wav, sample_rate: int, boundaries_s=(), title: str = "", tag: str = "", save_to=None):
    """03: a waveform over time, with dashed lines where each component of an SDS merge starts."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 2.6))
    ax.plot(np.arange(len(wav)) / sample_rate, wav, lw=0.4)
    for start in boundaries_s:
        ax.axvline(start, color="tab:red", ls="--")
    ax.set(xlabel="time (s)", ylabel="amplitude (full scale = 1)", title=f"{title}{tag}")
    return _finish(fig, save_to)


def tug_corpus(synthetic, tag: str = "", save_to=None):
    """04: the synthetic corpus - mean duration per emotion and language (left), words per utterance (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    synthetic.pivot_table(index="label", columns="language", values="duration_s", aggfunc="mean").reindex(
        list(CLASSES)).plot.bar(ax=axes[0], rot=30)
    axes[0].set(title=f"mean duration per emotion{tag}", ylabel="mean duration (s)", xlabel="emotion class")
    words = synthetic["text"].str.split().str.len()
    for lang in sorted(synthetic["language"].unique()):
        axes[1].hist(words[synthetic["language"] == lang], bins=range(4, 22), alpha=0.6, label=lang)
    axes[1].set(title=f"words per utterance{tag}", xlabel="words per utterance (count)",
                ylabel="utterances (count)")
    axes[1].legend()
    return _finish(fig, save_to)


def mean_soft_labels(mean, backend: str = "", tag: str = "", save_to=None):
    """05: the mean soft label (columns) of each true class (rows), as a heat map with the values written in."""
    import matplotlib.pyplot as plt

    values = mean.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(6.8, 5.2))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1)
    ax.set(xticks=range(len(CLASSES)), xticklabels=CLASSES, yticks=range(len(CLASSES)), yticklabels=CLASSES,
           xlabel="class of the soft label", ylabel="true class",
           title=f"Mean soft label per true class ({backend}){tag}")
    ax.tick_params(axis="x", rotation=45)
    for i, j in np.ndindex(values.shape):
        if np.isfinite(values[i, j]):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="w" if values[i, j] < 0.5 else "k")
    fig.colorbar(image, ax=ax, label="mean probability (0-1)")
    return _finish(fig, save_to)


def soft_label_entropy(entropy, corpus, tag: str = "", save_to=None):
    """05: histograms of the soft labels' entropy per corpus (``corpus``: a Series aligned with ``entropy``),
    with the entropy of the uniform distribution (ln 7) for scale."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, part in entropy.groupby(corpus, sort=False):
        ax.hist(part, bins=20, range=(0, np.log(len(CLASSES))), alpha=0.6, label=name)
    ax.axvline(np.log(len(CLASSES)), color="k", ls="--", lw=1, label="uniform (ln 7)")
    ax.set(xlabel="entropy of the soft label (nats)", ylabel="train utterances (count)",
           title=f"How soft are the soft labels?{tag}")
    ax.legend(fontsize=8)
    return _finish(fig, save_to)


def soft_label_examples(rows, tag: str = "", save_to=None):
    """05: a few soft labels as bars over the classes, the true class in red (``rows``: ``utt_id``, ``label``
    and one column per class)."""
    import matplotlib.pyplot as plt

    n = max(len(rows), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.3), sharey=True, squeeze=False)
    for ax, (_, row) in zip(axes[0], rows.iterrows()):
        ax.bar(range(len(CLASSES)), [row[c] for c in CLASSES],
               color=["tab:red" if c == row["label"] else "tab:gray" for c in CLASSES])
        ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=60, fontsize=8)
        ax.set_title(f"{row['utt_id']}\ntrue: {row['label']}", fontsize=8)
        ax.set_xlabel("class")
    axes[0, 0].set_ylabel("probability (0-1)")
    fig.suptitle(f"Soft labels of a few train utterances{tag}", fontsize=10)
    return _finish(fig, save_to)


# ------------------------------------------------------------------------------------------------------------
# 06: the model
# ------------------------------------------------------------------------------------------------------------

# The architecture figure's boxes: (x, y, label, colour); x, y = the box's centre in a 12 x 7 canvas.
ARCHITECTURE_BOXES = {
    "audio_in": (1.2, 5.6, "audio features\n(B, Ta, Da)\nlog-mel / wav2vec2", "#dbe9f6"),
    "text_in": (1.2, 1.4, "text features\n(B, Tt, Dt)\ne5-words / jina", "#fde5cf"),
    "audio_enc": (3.9, 5.6, "audio encoder\nLinear → Mamba stack\n(B, Ta, H)", "#9ecae1"),
    "text_enc": (3.9, 1.4, "text encoder\nLinear → Mamba stack\n(B, Tt, H)", "#fdae6b"),
    "audio_head": (3.9, 3.5, "unimodal heads\naudio-only, text-only\nlogits (B, 7) → WithProb", "#eeeeee"),
    "cross": (6.6, 3.5, "cross-modal layers\naudio queries text\ntext queries audio", "#c7e9c0"),
    "pool": (9.1, 3.5, "fusion\nmasked means →\n[a; t] | graph | gate", "#dadaeb"),
    "head": (11.6, 3.5, "head\nLinear → LN → GELU\n→ Linear: (B, 7)", "#fcbba1"),
}
ARCHITECTURE_ARROWS = [("audio_in", "audio_enc"), ("text_in", "text_enc"), ("audio_enc", "cross"),
                       ("text_enc", "cross"), ("audio_enc", "audio_head"), ("text_enc", "audio_head"),
                       ("cross", "pool"), ("pool", "head")]


def architecture(title: str = "BBER: two Mamba encoders (stage 1), cross-modal fusion and a head (stage 2)",
                 save_to=None, close: bool = False):
    """The model as a block diagram: the audio and text features, the two unimodal Mamba encoders (trained first,
    then frozen) with their own heads, the cross-modal layers, the fusion (concatenation, graph or gate) and the
    classifier head, with the shape each passes on (B utterances, T steps, H hidden width). ``close``: only write
    it (a notebook cell then does not show it again)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12.5, 5.2))
    for x, y, label, colour in ARCHITECTURE_BOXES.values():
        ax.add_patch(FancyBboxPatch((x - 0.95, y - 0.7), 1.9, 1.4, boxstyle="round,pad=0.05", fc=colour,
                                    ec="0.3", lw=1))
        ax.text(x, y, label, ha="center", va="center", fontsize=8.5)
    for a, b in ARCHITECTURE_ARROWS:
        (xa, ya, *_), (xb, yb, *_) = ARCHITECTURE_BOXES[a], ARCHITECTURE_BOXES[b]
        dx, dy = xb - xa, yb - ya
        start = (xa + 0.95 * np.sign(dx), ya) if abs(dx) > 0.1 else (xa, ya + 0.7 * np.sign(dy))
        end = (xb - 0.95 * np.sign(dx), yb) if abs(dx) > 0.1 else (xb, yb - 0.7 * np.sign(dy))
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="0.3", lw=1.2))
    ax.add_patch(plt.Rectangle((2.75, 0.45), 2.3, 6.1, fill=False, ls="--", ec="tab:blue", lw=1))
    ax.text(3.9, 6.75, "stage 1: trained first, then frozen", ha="center", fontsize=8, color="tab:blue")
    ax.add_patch(plt.Rectangle((5.45, 2.45), 7.25, 2.1, fill=False, ls="--", ec="tab:green", lw=1))
    ax.text(9.1, 4.75, "stage 2: the fusion model", ha="center", fontsize=8, color="tab:green")
    ax.set(xlim=(0, 12.8), ylim=(0.2, 7.1), title=title)
    ax.axis("off")
    _finish(fig, save_to)
    if close:
        plt.close(fig)
    return fig


def cross_attention(weights, text_labels, seconds_per_step: float, title: str = "", tag: str = "",
                    save_to=None):
    """One utterance's cross-modal attention "audio queries text": each audio step (y, in seconds from the start)
    against each text step (x, the words), colour = attention weight (each row sums to 1)."""
    import matplotlib.pyplot as plt

    weights = np.asarray(weights)
    fig, ax = plt.subplots(figsize=(min(2 + 0.55 * weights.shape[1], 12), 4.6))
    image = ax.imshow(weights, aspect="auto", cmap="viridis", vmin=0, origin="lower",
                      extent=(-0.5, weights.shape[1] - 0.5, 0, weights.shape[0] * seconds_per_step))
    ax.set_xticks(range(weights.shape[1]), text_labels, rotation=45, ha="right", fontsize=8)
    ax.set(xlabel="text step (the word each key and value comes from)",
           ylabel=f"audio step: time (s), {seconds_per_step:g} s each", title=f"{title}{tag}")
    fig.colorbar(image, ax=ax, label="attention weight (0-1, rows sum to 1)")
    return _finish(fig, save_to)


def gate_values(z, title: str = "", tag: str = "", save_to=None):
    """A gated model's gate for one utterance: per fused feature, the share taken from audio (z; 1 - z from
    text), sorted, with the even split at 0.5."""
    import matplotlib.pyplot as plt

    z = np.sort(np.asarray(z, dtype=float))
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(np.arange(len(z)), z, color=np.where(z >= 0.5, "tab:blue", "tab:orange"))
    ax.axhline(0.5, color="0.3", ls="--", lw=1, label="even split")
    ax.set(ylim=(0, 1), xlabel="fused feature (sorted by z)", ylabel="z: share from audio (0-1)",
           title=f"{title}{tag}")
    ax.legend(fontsize=8)
    return _finish(fig, save_to)


def modality_graph(nodes, edges, title: str = "", tag: str = "", save_to=None):
    """One utterance's graph in a graph model: audio nodes left, text nodes right, the audio–text edges
    (``walkthrough.graph_nodes`` / ``graph_edges``); every node also attends to itself."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    pos = {}
    for modality, x in (("audio", 0.0), ("text", 1.0)):
        ids = list(nodes.index[nodes["modality"] == modality])
        for k, node in enumerate(ids):
            pos[node] = (x, -k)
    for a, b in zip(edges["from"], edges["to"]):
        if a == b:
            continue
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.plot([x0, x1], [y0, y1], color="0.6", lw=1, zorder=0)
    for node, (x, y) in pos.items():
        colour = "tab:blue" if nodes.loc[node, "modality"] == "audio" else "tab:orange"
        ax.scatter([x], [y], s=900, color=colour, zorder=1)
        ax.text(x, y, str(node), ha="center", va="center", color="w", fontsize=10, zorder=2)
        ax.text(x + (-0.12 if x == 0 else 0.12), y, nodes.loc[node, "summarises"], fontsize=8, va="center",
                ha="right" if x == 0 else "left")
    lowest = min(y for _, y in pos.values())
    ax.set(xlim=(-1.2, 2.2), ylim=(lowest - 0.8, 0.8), title=f"{title}{tag}")
    ax.axis("off")
    return _finish(fig, save_to)
