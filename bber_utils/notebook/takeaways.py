"""The notebooks' takeaways, computed from the run they sit under: each function reads the table or history the
cell above shows and returns the sentence (Markdown), so the text cannot contradict the output it describes.

01 ``class_balance``, ``short_utterances``; 02 ``sequence_lengths``, ``pca_structure``; 03 ``sds_effect``,
``sds_class_shares``; 04 ``tug_lengths``; 05 ``soft_label_diagonal``, ``soft_label_entropy``,
``true_class_highest``; 06 ``audio_pooling``, ``attention_focus``, ``gate_split``, ``learning_curve``,
``fusion_gain``, ``largest_confusions``;
08 ``paper_comparison``, ``real_text``; 09 ``fusion_behaviour``, ``right_and_wrong``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from bber_utils.core.labels import CLASSES

FRAME_S = 0.02  # one audio frame of notebook 02: 20 ms
UNSURE = 0.5    # a modality is "unsure" about a clip when its top probability is below this


def takeaway(text: str) -> str:
    """``*Takeaway: text*`` (the notebooks' one format)."""
    return f"*Takeaway: {text}*"


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


# ------------------------------------------------------------------------------------------------------------ 01
def class_balance(counts: pd.DataFrame) -> str:
    """From ``corpora.counts_table``: whether every class has the same count within each corpus and split."""
    per_set = counts.set_index(["corpus", "split"])[list(CLASSES)]
    if (per_set.nunique(axis=1) == 1).all():
        sizes = ", ".join(f"{s} {int(n)}" for s, n in per_set.iloc[:, 0].groupby(level="split", sort=False).max()
                          .items())
        return takeaway(f"every class has the same number of utterances within each corpus and split ({sizes} "
                        "per class): the set is balanced, so UAR equals WAR and MF1 equals WF1 on it (notebook 06).")
    lo, hi = per_set.min(axis=1), per_set.max(axis=1)
    worst = (hi / lo.clip(lower=1)).idxmax()
    row = per_set.loc[worst]
    return takeaway(f"the classes are not balanced: in {worst[0]} {worst[1]} from {int(row.min())} "
                    f"({row.idxmin()}) to {int(row.max())} ({row.idxmax()}) utterances, so the macro metrics (UAR, "
                    "MF1) and the weighted ones (WAR, WF1) will differ (notebook 06).")


def short_utterances(utterances: pd.DataFrame, target_s: float = 4.0, split: str = "train") -> str:
    """Share of the ``split`` utterances shorter than SDS's target, per corpus."""
    part = utterances[utterances["split"] == split]
    shares = part.groupby("corpus", sort=False)["duration_s"].agg(lambda d: (d < target_s).mean())
    counts = part.groupby("corpus", sort=False)["duration_s"].agg(lambda d: int((d < target_s).sum()))
    sizes = part.groupby("corpus", sort=False).size()
    said = "; ".join(f"{c}: {_pct(shares[c])} ({counts[c]} of {sizes[c]})" for c in shares.index)
    return takeaway(f"{said} of the {split} utterances are shorter than SDS's {target_s:g} s target — those are "
                    "the ones SDS (notebook 03) can extend.")


# ------------------------------------------------------------------------------------------------------------ 02
def sequence_lengths(lengths: pd.DataFrame) -> str:
    """From the ``audio frames`` / ``text steps`` per utterance: the medians and their ratio."""
    frames, steps = lengths["audio frames"].median(), lengths["text steps"].median()
    return takeaway(f"the median utterance is {frames:.0f} audio frames ({frames * FRAME_S:.1f} s) but "
                    f"{steps:.0f} text steps, {frames / max(steps, 1):.0f} times fewer: the two sequences that "
                    "the cross-modal layers of notebook 06 align have very different lengths.")


def _eta_squared(values: np.ndarray, groups: pd.Series) -> float:
    """Share of the variance of ``values`` (n, k) explained by the group means (between / total)."""
    values = np.asarray(values, dtype=float)
    total = ((values - values.mean(axis=0)) ** 2).sum()
    between = sum(len(idx) * ((values[idx].mean(axis=0) - values.mean(axis=0)) ** 2).sum()
                  for idx in groups.reset_index(drop=True).groupby(groups.to_numpy()).indices.values())
    return float(between / total) if total > 0 else 0.0


def pca_structure(coords: pd.DataFrame) -> str:
    """From ``walkthrough.pooled_pca``: how much of each 2-D map the emotion explains, and of the first component
    the language (eta squared: between-group over total variance)."""
    parts = []
    for modality, part in coords.groupby("modality", sort=False):
        xy = part[["pc1", "pc2"]].to_numpy()
        emotion = _eta_squared(xy, part["label"])
        language = _eta_squared(part[["pc1"]].to_numpy(), part["language"])
        parts.append(f"{modality}: emotion {_pct(emotion)} of the map's spread, language {_pct(language)} of PC1")
    return takeaway("; ".join(parts) + ". A share well below 100 % means the classes overlap in two dimensions "
                    "— the classifiers have to learn the rest from all the dimensions.")


# ------------------------------------------------------------------------------------------------------------ 03
def sds_effect(augmented: dict, target_s: float = 4.0) -> str:
    """From ``apply_sds_to_workdir``'s tables: what SDS added, how long the merges are, and what happened to the
    short end (SDS in ``add`` mode keeps the originals)."""
    parts = []
    for corpus, df in augmented.items():
        merged = df.loc[df["source"] == "sds", "duration_s"]
        original = df.loc[df["source"] != "sds", "duration_s"]
        if not len(merged):
            parts.append(f"{corpus}: nothing merged")
            continue
        parts.append(f"{corpus}: {len(merged)} merged rows of {merged.min():.1f}–{merged.max():.1f} s (median "
                     f"{merged.median():.1f} s) added to {len(original)} originals; rows under {target_s:g} s "
                     f"{_pct((original < target_s).mean())} before, {_pct((df['duration_s'] < target_s).mean())} "
                     "after")
    mode = {str(df.attrs.get("sds", {}).get("mode", "add")) for df in augmented.values()}
    kept = ("The originals stay (mode `add`), so the short end is still there: SDS adds longer examples of the "
            "same emotions, it does not remove the short ones." if mode == {"add"} else
            "In mode `replace` the selected originals are swapped for their merges.")
    return takeaway("; ".join(parts) + ". " + kept)


def sds_class_shares(augmented: dict) -> str:
    """Which classes the merged rows come from most and least often, per corpus."""
    parts = []
    for corpus, df in augmented.items():
        share = df.loc[df["source"] == "sds", "label"].value_counts(normalize=True).reindex(list(CLASSES)).fillna(0)
        if share.sum() == 0:
            continue
        parts.append(f"{corpus}: most often {share.idxmax()} ({_pct(share.max())}), least often {share.idxmin()} "
                     f"({_pct(share.min())})")
    even = _pct(1 / len(CLASSES))
    return takeaway("; ".join(parts) + f" of the merged rows (an even spread would be {even} each): the classes "
                    "spoken faster have more short utterances to extend.")


# ------------------------------------------------------------------------------------------------------------ 04
def tug_lengths(synthetic: pd.DataFrame) -> str:
    """From the synthetic corpus: the spread of the mean duration over emotions and the words per utterance."""
    parts = []
    for lang, df in synthetic.groupby("language", sort=False):
        mean = df.groupby("label")["duration_s"].mean()
        words = df["text"].str.split().str.len()
        parts.append(f"{lang}: mean duration from {mean.min():.1f} s ({mean.idxmin()}) to {mean.max():.1f} s "
                     f"({mean.idxmax()}), {int(words.min())}–{int(words.max())} words")
    return takeaway("; ".join(parts) + ". The figure shows lengths only: how each emotion is worded is in the "
                    "templates above, how it sounds in the players below.")


# ------------------------------------------------------------------------------------------------------------ 05
def soft_label_diagonal(mean: pd.DataFrame) -> str:
    """From ``ls_llm.mean_by_true_class``: the mass each class keeps on itself and its largest other share."""
    values = mean.reindex(index=list(CLASSES), columns=list(CLASSES)).to_numpy(dtype=float)
    diag = pd.Series(np.diag(values), index=list(CLASSES)).dropna()
    if diag.empty:
        return takeaway("no usable soft label: nothing to show.")
    off = values.copy()
    np.fill_diagonal(off, -np.inf)
    i, j = np.unravel_index(np.nanargmax(off), off.shape)
    most = "most of its" if diag.min() > 0.5 else "between " + f"{diag.min():.2f} and {diag.max():.2f} of its"
    return takeaway(f"each class keeps {most} mass on itself (from {diag.min():.2f} for {diag.idxmin()} to "
                    f"{diag.max():.2f} for {diag.idxmax()}); the largest share given to another class is "
                    f"{CLASSES[i]} → {CLASSES[j]} ({off[i, j]:.2f}). Those off-diagonal shares are what LS-LLM adds "
                    "over a one-hot label.")


def soft_label_entropy(entropy: pd.Series) -> str:
    """From ``ls_llm.entropy``: the mean entropy against the one-hot (0) and uniform (ln 7) ends."""
    if entropy.empty:
        return takeaway("no usable soft label: nothing to show.")
    top, m = math.log(len(CLASSES)), float(entropy.mean())
    where = "nearer one-hot" if m < top / 2 else "nearer uniform"
    return takeaway(f"the mean entropy is {m:.2f} nats (range {entropy.min():.2f}–{entropy.max():.2f}), between a "
                    f"one-hot label (0) and a uniform one (ln 7 = {top:.2f}), {where}.")


def true_class_highest(table: pd.DataFrame, usable_statuses) -> str:
    """Over the usable soft labels: in how many is the true class the highest value."""
    usable = table[table["status"].isin(usable_statuses)]
    if usable.empty:
        return takeaway("no usable soft label: nothing to show.")
    top = usable[list(CLASSES)].to_numpy(dtype=float).argmax(axis=1)
    hits = int((np.array(CLASSES)[top] == usable["label"].to_numpy()).sum())
    said = "in every one" if hits == len(usable) else f"in {hits}"
    return takeaway(f"the true class (red) has the highest value {said} of the {len(usable)} usable soft labels "
                    "(the validator makes sure of it); the other bars are the backend's guess of the mix.")


# ------------------------------------------------------------------------------------------------------------ 06
def audio_pooling(rows: pd.DataFrame, audio_pool: int) -> str:
    """From ``walkthrough.real_batch``'s rows: frames in the store vs the steps the audio encoder reads."""
    parts = [f"{r['utt_id']}: {r['audio frames']} frames ({r['audio frames'] * FRAME_S:.1f} s) → "
             f"{r['audio steps']} steps" for _, r in rows.iterrows()]
    return takeaway(f"notebook 02 stores 50 frames per second (about 200 for a 4 s utterance); with `audio_pool` = "
                    f"{audio_pool} the trainer averages every {audio_pool} frames, so the audio encoder reads "
                    f"{50 / audio_pool:g} steps per second ({'; '.join(parts)}): a {audio_pool}× shorter scan.")


def learning_curve(history: pd.DataFrame, best_epoch: int, cap: int | None = None, name: str = "the run") -> str:
    """From a run's ``history.csv``: the best dev epoch and what train loss and dev mean did after it."""
    h = history.set_index("epoch")
    best = h.loc[best_epoch]
    end = h.iloc[-1]
    said = f"{name}: best dev mean {best['dev_mean']:.3f} at epoch {best_epoch}"
    if h.index[-1] == best_epoch:
        said += ", the last epoch run: the dev mean was still rising when the run ended"
    else:
        said += (f"; after it train loss goes from {best['train_loss']:.2f} to {end['train_loss']:.2f} while the "
                 f"dev mean goes to {end['dev_mean']:.3f} (epoch {int(h.index[-1])})")
        if end["train_loss"] < best["train_loss"] and end["dev_mean"] < best["dev_mean"]:
            said += " — the model goes on fitting the train rows but gets worse on dev: overfitting"
    if cap:
        ran = len(h)
        said += (f". Early stopping ended it after {ran} of {cap} epochs" if ran < cap
                 else f". It ran all {cap} epochs")
    return takeaway(said + f"; the checkpoint scored is epoch {best_epoch}'s.")


def fusion_gain(histories: dict[str, pd.DataFrame], fusion: str) -> str:
    """From the histories of the fusion run and its unimodal baselines: best dev means side by side."""
    best = {n: float(h["dev_mean"].max()) for n, h in histories.items() if h is not None and len(h)}
    others = {n: v for n, v in best.items() if n != fusion}
    if fusion not in best or not others:
        return takeaway("no unimodal baseline to compare with.")
    ahead = all(best[fusion] > v for v in others.values())
    listed = ", ".join(f"{n} {v:.3f}" for n, v in others.items())
    return takeaway(f"best dev mean: {fusion} {best[fusion]:.3f} against {listed}: the fusion model is "
                    f"{'ahead of' if ahead else 'not ahead of'} both unimodal encoders it starts from.")


def attention_focus(weights, labels: list[str]) -> str:
    """From ``walkthrough.cross_attention``: the text steps the audio steps attend to most, on average, against
    an even spread (1 / number of text steps)."""
    mean = np.asarray(weights, dtype=float).mean(axis=0)
    order = np.argsort(mean)[::-1][:2]
    top = ", ".join(f"'{labels[k]}' ({mean[k]:.2f})" for k in order)
    return takeaway(f"each row is one audio step's attention over the {len(labels)} text steps (it sums to 1; an "
                    f"even spread would give {1 / len(labels):.2f} each). Averaged over the audio steps, the most "
                    f"attended are {top}.")


def gate_split(z, trained: bool) -> str:
    """From ``walkthrough.gate_values``: how the gate splits the fused features between audio and text."""
    z = np.asarray(z, dtype=float)
    state = ("These values were learned in training." if trained else "These are the gate's values at "
             "initialisation: this run did not train a gated model.")
    return takeaway(f"the gate takes on average {_pct(z.mean())} of each feature from audio; "
                    f"{int((z > 0.5).sum())} of {len(z)} features lean to audio (z > 0.5), the others to text. {state}")


DESIGNED_PAIRS = {frozenset({"anger", "happy"}), frozenset({"sad", "disgust"})}


def largest_confusions(confusions: dict[str, list[list[int]]], top: int = 3) -> str:
    """From per-corpus confusion matrices (rows true, columns predicted): the ``top`` largest off-diagonal rates
    per corpus, and whether the pairs the demo corpus makes alike (anger/happy, sad/disgust) are among them."""
    parts, designed = [], 0
    for corpus, cm in confusions.items():
        cm = np.asarray(cm, dtype=float)
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        np.fill_diagonal(rates, 0)
        order = np.argsort(rates, axis=None)[::-1][:top]
        cells = [np.unravel_index(k, rates.shape) for k in order if rates.flat[k] > 0]
        designed += sum(frozenset({CLASSES[i], CLASSES[j]}) in DESIGNED_PAIRS for i, j in cells)
        parts.append(f"{corpus}: " + ", ".join(f"{CLASSES[i]} → {CLASSES[j]} {rates[i, j]:.2f}" for i, j in cells))
    if designed:
        note = (f"{designed} of them {'is a pair' if designed == 1 else 'are pairs'} the demo voices alike "
                "(anger/happy, sad/disgust)")
    else:
        note = "none of them is a pair the demo voices alike (anger/happy, sad/disgust)"
    return takeaway("the largest confusions (share of a true class predicted as another) are " + "; ".join(parts)
                    + f" — {note}.")


# ------------------------------------------------------------------------------------------------------------ 08
def paper_comparison(paper: pd.DataFrame) -> str | None:
    """None when the paper table has at least one number of ours; else the sentence that replaces it."""
    ours = [c for c in paper.columns if str(c).startswith("ours")]
    if ours and paper[ours].notna().any().any():
        return None
    names = {"meld": "MELD", "resd": "RESD"}
    reported = "; ".join(f"{r['setting']}: {names.get(r['corpus'], r['corpus'])} {str(r['metric']).upper()} "
                         f"{r['paper (reported)']:g}" for _, r in paper.iterrows())
    corpora = " or ".join(dict.fromkeys(names.get(c, c) for c in paper["corpus"]))
    return (f"No run of this work folder trained on {corpora}, so none of our numbers can stand beside the paper's "
            f"reported ones ({reported}; percent, test sets): the demo profile trains on its own synthetic corpus. "
            "The paper profile (`bber reproduce --profile paper`) fills this table.")


def _markdown_table(text: str) -> pd.DataFrame:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    rows = [r for r in rows if not all(re.fullmatch(r":?-+:?", c) for c in r)]
    return pd.DataFrame(rows[1:], columns=rows[0]) if rows else pd.DataFrame()


def _number(cell: str) -> float:
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", str(cell))
    return float(m.group(1)) if m else math.nan


def real_text(table_markdown: str) -> str:
    """From the real-text benchmark's table (MELD texts, dev): the best WF1 against the majority baseline, and
    the UAR of that row against the best UAR."""
    table = _markdown_table(table_markdown)
    if table.empty or not {"WF1", "UAR"} <= set(table.columns):
        return takeaway("the real-text table has no WF1 and UAR columns to read.")
    wf1, uar = table["WF1"].map(_number), table["UAR"].map(_number)
    best = wf1.idxmax()
    name = " ".join(str(table.loc[best, c]) for c in ("step", "encoder", "variant") if c in table
                    and str(table.loc[best, c]) not in ("-", ""))
    majority = table.index[table["step"].eq("majority")] if "step" in table else []
    base, why = "", ""
    if len(majority):
        m = majority[0]
        base = (f", {wf1[best] - wf1[m]:.1f} points above always answering the majority class "
                f"(WF1 {wf1[m]:.1f})")
        if "WAR" in table:
            why = f" (the majority class alone is {_number(table.loc[m, 'WAR']):.1f} % of the dev clips)"
    return takeaway(f"on real MELD text the best WF1 is {wf1[best]:.1f} ({name}){base}; its UAR is "
                    f"{uar[best]:.1f} and the best UAR of any row {uar.max():.1f}: the weighted score follows the "
                    f"frequent classes{why}, while the rare ones stay hard.")


# ------------------------------------------------------------------------------------------------------------ 09
def _top(row, source: str) -> tuple[str, float]:
    probs = {c: row.get(f"{source}_{c}") for c in CLASSES}
    if any(v is None or v != v for v in probs.values()):
        return "", math.nan
    label = max(probs, key=probs.get)
    return label, float(probs[label])


def fusion_behaviour(table: pd.DataFrame) -> str:
    """From ``predict.predictions_table``: per clip, whether the fused answer is the more confident modality's,
    and what the fusion did where both modalities were unsure (top probability under 0.5)."""
    rows = table[table["error"].isna()] if "error" in table else table
    follows, unsure, confident = 0, [], 0
    for i, (_, row) in enumerate(rows.iterrows(), 1):
        (a, pa), (t, pt), (f, pf) = _top(row, "audio"), _top(row, "text"), _top(row, "fused")
        if not f or not a or not t:
            continue
        follows += f == (a if pa >= pt else t)
        if max(pa, pt) < UNSURE:
            unsure.append(f"clip {i}: audio {pa:.2f}, text {pt:.2f}, fused {f} {pf:.2f}")
            confident += pf >= UNSURE
    if not len(rows):
        return takeaway("no clip was predicted.")
    said = f"on {follows} of {len(rows)} clips the fused answer is the answer of the more confident modality"
    if unsure:
        said += (f"; both modalities were unsure (top probability under {UNSURE:g}) on {len(unsure)} clip(s) ("
                 + "; ".join(unsure) + f"), and the fusion was confident anyway on {confident} of them")
        if confident:
            said += ": it reads the two encoders' sequences, not their top probabilities"
    return takeaway(said + ".")


def right_and_wrong(table: pd.DataFrame) -> str:
    """From the predictions with a ``true label``: one right and one wrong clip, or why there is none."""
    rows = table[table["error"].isna()] if "error" in table else table
    rows = rows[rows["true label"].notna()]
    right = rows[rows["label"] == rows["true label"]]
    wrong = rows[rows["label"] != rows["true label"]]
    said = f"{len(right)} of {len(rows)} clips right"
    if len(wrong):
        w = wrong.iloc[0]
        (a, pa), (t, pt) = _top(w, "audio"), _top(w, "text")
        article = "an" if str(w["true label"])[:1] in "aeiou" else "a"
        said += (f"; the wrong one shown is {article} {w['true label']} clip called {w['label']}: audio said {a} "
                 f"({pa:.2f}), text {t} ({pt:.2f})")
    return takeaway(said + ".")
