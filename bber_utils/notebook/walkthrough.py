"""The model and the metrics, shown rather than told (notebook 06).

- ``example_batch(d_audio, d_text)``: a small padded batch with masks, the shape the trainer feeds.
- ``shape_trace(model, batch)``: every named submodule a forward pass goes through, with its output shape.
- ``FUSION_GLOSSARY``: one line per model name of ``bber_utils.models.MODEL_NAMES``.
- ``metrics_example()``: UAR, WAR, MF1, WF1 on a balanced and on an imbalanced toy test set, computed by
  ``bber_utils.train.metrics`` (the same code that scores every run).
- ``real_batch(cfg)``: real utterances of the run's corpora as the trainer batches them (``audio_pool`` applied),
  with their transcripts; ``audio_steps`` says how many frames pooling leaves.
- ``variant(name, trained)``: another fusion variant on the trained run's encoders; ``graph_nodes``,
  ``graph_edges``, ``gate_values`` and ``cross_attention`` show what the graph, the gate and the cross-modal
  attention do with one utterance.
- ``scan_code()``: the selective scan's reference code path; ``optimiser_table``: what trains the model.
- ``pooled_pca`` (02): utterances' mean features in 2-D; ``right_and_wrong`` (09): one right and one wrong clip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bber_utils.augment import ls_llm
from bber_utils.core.labels import CLASSES
from bber_utils.features.context import with_text_context
from bber_utils.features.text_encoders import words
from bber_utils.models.config import ModelConfig
from bber_utils.predict.inputs import predictions_table
from bber_utils.train import inputs
from bber_utils.train.config import TrainConfig
from bber_utils.train.dataset import EmotionDataset, collate
from bber_utils.train.loop import optimizer_param_groups
from bber_utils.train.metrics import score

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.

FUSION_GLOSSARY = {
    "audio_only": "Mamba encoder over the audio frames -> masked mean -> classifier head (stage 1, a baseline).",
    "text_only": "Mamba encoder over the text tokens -> masked mean -> classifier head (stage 1, a baseline).",
    "biformer": "cross-modal attention layers (audio queries text, text queries audio) -> masked mean per "
                "modality -> concatenation [a; t] -> head.",
    "bigraphformer": "BiFormer's cross-modal layers, then one small graph per sample (audio and text summary "
                     "nodes, every audio node joined to every text node) with graph attention -> head.",
    "bigatedformer": "BiFormer with a sigmoid gate instead of the concatenation: z*tanh(W_a a) + (1-z)*tanh(W_t t).",
    "bigatedgraphformer": "BiGraphFormer with the same gate over the graph's audio and text readouts.",
    "bimamba": "both sequences resampled to one time axis, concatenated per step, one more Mamba stack -> mean "
               "-> head.",
    "predictions_fusion": "no new features: learned per-class weights over the audio and text logits (late fusion).",
    "*_withprob": "the fusion model's logits mixed with the two unimodal logits by learned per-class weights "
                  "(the unimodal logits on train are out-of-fold).",
}


def glossary_table():
    """``FUSION_GLOSSARY`` as a one-column DataFrame indexed by model name."""

    return pd.DataFrame({"what it does": FUSION_GLOSSARY}).rename_axis("model")


def example_batch(d_audio: int, d_text: int, audio_frames: tuple[int, ...] = (48, 30),
                  text_tokens: tuple[int, ...] = (11, 6), seed: int = 0) -> dict[str, Any]:
    """A padded batch of ``len(audio_frames)`` utterances of different lengths, as the trainer builds it:
    ``audio (B, Ta, Da)``, ``audio_mask (B, Ta)`` (True = real frame), ``text (B, Tt, Dt)``, ``text_mask (B, Tt)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    B, Ta, Tt = len(audio_frames), max(audio_frames), max(text_tokens)
    audio_mask = torch.arange(Ta)[None, :] < torch.tensor(audio_frames)[:, None]
    text_mask = torch.arange(Tt)[None, :] < torch.tensor(text_tokens)[:, None]
    return {"audio": torch.randn(B, Ta, d_audio, generator=g) * audio_mask[..., None],
            "audio_mask": audio_mask,
            "text": torch.randn(B, Tt, d_text, generator=g) * text_mask[..., None],
            "text_mask": text_mask}


def _shapes(x) -> str:
    import torch

    if isinstance(x, torch.Tensor):
        return "(" + ", ".join(map(str, x.shape)) + ")"
    if isinstance(x, dict):
        return ", ".join(f"{k} {_shapes(v)}" for k, v in x.items() if isinstance(v, torch.Tensor))
    if isinstance(x, (tuple, list)):
        return ", ".join(_shapes(v) for v in x if v is not None)
    return ""


_PLUMBING = {"Dropout", "Identity", "GELU", "ReLU", "Sequential", "SumAggregation", "LayerNorm", "RMSNorm"}


def shape_trace(model, batch: dict[str, Any], max_depth: int = 3):
    """Run ``model(batch)`` once (eval, no grad) and list, in call order, every submodule up to ``max_depth``
    dots deep with its class, output shape(s) and parameter count. -> DataFrame."""
    import torch

    rows, hooks = [], []
    for name, module in model.named_modules():
        inside_head = ".head." in f".{name}" and not name.endswith("head")
        if not name or name.count(".") >= max_depth or type(module).__name__ in _PLUMBING or inside_head:
            continue

        def hook(mod, args, out, name=name):
            rows.append({"module": name, "class": type(mod).__name__, "output": _shapes(out),
                         "parameters": sum(p.numel() for p in mod.parameters())})

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(batch)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows.append({"module": "(model)", "class": type(model).__name__, "output": _shapes(logits),
                 "parameters": sum(p.numel() for p in model.parameters())})
    return pd.DataFrame(rows)


def metrics_example():
    """The four metrics on two toy test sets of 10 clips (percent), to show when they agree and when not.

    balanced: every class equally often -> UAR = WAR and MF1 = WF1. imbalanced: 7 of 10 clips neutral and a
    model that says "neutral" to everything but one clip -> WAR and WF1 high, UAR and MF1 low (MELD's case).
    """

    n = len(CLASSES)
    y_bal = np.repeat(np.arange(n), 2)
    p_bal = y_bal.copy()
    p_bal[::3] = (p_bal[::3] + 1) % n  # a few mistakes
    neutral = CLASSES.index("neutral")
    y_imb = np.array([neutral] * 7 + [(neutral + 1) % n, (neutral + 2) % n, (neutral + 3) % n])
    p_imb = np.array([neutral] * 9 + [(neutral + 3) % n])
    rows = {}
    for name, (y, p) in {"balanced (2 clips per class)": (y_bal, p_bal),
                         "imbalanced (7 of 10 neutral)": (y_imb, p_imb)}.items():
        m = score(y, p)
        rows[name] = {k: round(100 * float(m[k]), 1) for k in ("uar", "war", "mf1", "wf1")}
    return pd.DataFrame(rows).T


# A few replies an LLM might give for one utterance whose true label is "sad" (written for this course, not
# taken from any model): what the LS-LLM parser reads and what the validator does with it.
EXAMPLE_REPLIES = [
    ("clean JSON", '{"neutral": 0.10, "happy": 0.02, "sad": 0.70, "anger": 0.03, "surprise": 0.02, '
                   '"fear": 0.08, "disgust": 0.05}'),
    ("percentages in prose", "Sad 65%, neutral 20%, fear 5%, disgust 4%, anger 3%, happy 2%, surprise 1%."),
    ("true label not highest", "neutral: 0.50, happy: 0.05, sad: 0.30, anger: 0.05, surprise: 0.03, "
                               "fear: 0.04, disgust: 0.03"),
    ("sum far from 1", "neutral=0.2, happy=0.1, sad=0.9, anger=0.1, surprise=0.1, fear=0.2, disgust=0.2"),
    ("a negative value", "neutral: 0.3, happy: -0.2, sad: 0.6, anger: 0.1, surprise: 0.1, fear: 0.05, "
                         "disgust: 0.05"),
    ("all equal", "neutral: 0.2, happy: 0.2, sad: 0.2, anger: 0.2, surprise: 0.2, fear: 0.2, disgust: 0.2"),
    ("no numbers", "I think the speaker sounds mostly sad, perhaps a little afraid."),
]


def validator_examples(true_label: str = "sad", policy: str = "swap"):
    """Each of ``EXAMPLE_REPLIES`` through ``ls_llm.parse_reply`` and ``ls_llm.validate_distribution``:
    the status (ok / repaired / rejected), the reason and the distribution that training would use."""

    rows = []
    for case, reply in EXAMPLE_REPLIES:
        dist, status, reason = ls_llm.validate_distribution(ls_llm.parse_reply(reply), true_label, policy)
        row = {"case": case, "reply": reply, "status": status, "reason": reason}
        row.update({c: (round(float(v), 3) if dist is not None else None)
                    for c, v in zip(CLASSES, dist if dist is not None else [None] * len(CLASSES))})
        rows.append(row)
    return pd.DataFrame(rows).set_index("case")


def convergence_table(histories: dict, caps: dict | None = None):
    """Per run (name -> history table): epochs run, best dev epoch, best dev mean, the gain of the best dev mean
    over the last five epochs (about 0: the curve has flattened) and, given ``caps`` (name -> max epochs), what
    ended it: early stopping (no dev gain for ``patience`` epochs, so the curve had converged) or the cap."""

    rows = {}
    for name, h in histories.items():
        if h is None or not len(h) or "dev_mean" not in h:
            continue
        best = h["dev_mean"].cummax()
        rows[name] = {"epochs run": len(h), "best dev epoch": int(h.loc[h["dev_mean"].idxmax(), "epoch"]),
                      "best dev mean": round(float(best.iloc[-1]), 3),
                      "gain in the last 5 epochs": round(float(best.iloc[-1] - best.iloc[max(len(h) - 6, 0)]), 3)}
        if caps and caps.get(name):
            rows[name]["ended by"] = ("the epoch cap" if len(h) >= int(caps[name])
                                      else f"early stopping (cap {int(caps[name])})")
    return pd.DataFrame(rows).T


# ------------------------------------------------------------------------------------------------------------
# The trained model on real utterances (notebook 06)
# ------------------------------------------------------------------------------------------------------------

FRAME_S = 0.02  # one log-mel / wav2vec2 frame: 20 ms (50 frames per second)


def real_batch(cfg: dict, split: str = "test", per_corpus: int = 1):
    """The first ``per_corpus`` utterances of each corpus of the run (``cfg``: notebook 06's parameters), batched
    exactly as the trainer batches them: features from the run's stores, ``audio_pool`` applied, padded, masks.
    -> ``(batch, rows)``: rows = the manifest rows (``utt_id``, ``corpus``, ``label``, ``text``) in batch order,
    plus ``audio frames`` (the store's) and ``audio steps`` / ``text steps`` (what the model reads)."""
    tc = TrainConfig.from_dict(cfg)
    splits = inputs.load_splits(inputs.resolve_corpora(tc.train_corpora, tc.workdir), tc.workdir)
    rows = splits[split].groupby("corpus", sort=False).head(per_corpus).reset_index(drop=True)
    audio, text = inputs.build_feature_stores(tc, rows)
    if tc.text_context:  # the same previous turns the trainer gives the text branch
        text = with_text_context(text, splits, tc.text_context, tc.text_context_mode)
    dataset = EmotionDataset(rows, audio, text, audio_pool=tc.audio_pool, name="walkthrough")
    items = [dataset[i] for i in range(len(dataset))]
    rows = dataset.manifest[["utt_id", "corpus", "label", "text"]].copy()
    rows["audio frames"] = [len(audio[u]) for u in rows["utt_id"]]
    rows["audio steps"] = [len(it["audio"]) for it in items]
    rows["text steps"] = [len(it["text"]) for it in items]
    return collate(items), rows


def audio_steps(rows, audio_pool: int):
    """Per utterance of ``real_batch``'s rows: its length in seconds, the frames of notebook 02 and the steps the
    audio encoder reads after averaging every ``audio_pool`` frames."""
    table = rows[["utt_id", "audio frames", "audio steps"]].copy()
    table.insert(1, "seconds", (table["audio frames"] * FRAME_S).round(2))
    table["audio_pool"] = int(audio_pool)
    table["seconds per step"] = round(FRAME_S * int(audio_pool), 3)
    return table.set_index("utt_id")


def variant(name: str, trained):
    """The fusion variant ``name`` at the trained model's sizes, on the trained model's two encoders (copied),
    its fusion layers at their initial weights (seeded). The trained model itself when it is that variant."""
    import torch

    from bber_utils.models import build_model

    if trained.__class__.__name__.lower() == name.replace("_", ""):
        return trained
    torch.manual_seed(0)
    cfg = trained.cfg.to_dict()
    model = build_model(name, {**cfg, "model": name}, trained.audio_encoder.d_in, trained.text_encoder.d_in)
    model.load_unimodal(trained.audio_encoder.state_dict(), trained.text_encoder.state_dict())
    return model.eval()


def graph_nodes(model) -> pd.DataFrame:
    """The nodes of one utterance's graph in a graph model: id, modality and what each node summarises."""
    k = model.graph.nodes_per_modality
    rows = []
    for i in range(2 * k):
        modality = "audio" if i < k else "text"
        j = i % k
        rows.append({"node": i, "modality": modality,
                     "summarises": f"mean of all {modality} steps" if j == 0 else f"mean of {modality} segment {j}"})
    return pd.DataFrame(rows).set_index("node")


def graph_edges(model) -> pd.DataFrame:
    """The directed edges of one utterance's graph (self-loops, added by the attention layers, included)."""
    edges = model.graph.edge_index.tolist()
    n = 2 * model.graph.nodes_per_modality
    pairs = list(zip(*edges)) + [(i, i) for i in range(n)]
    kind = {True: "audio ↔ text", False: "self-loop"}
    return pd.DataFrame([{"from": a, "to": b, "edge": kind[a != b]} for a, b in pairs])


def gate_values(model, batch, index: int = 0):
    """The gate ``z`` of a gated model for utterance ``index`` of ``batch``: one value per fused feature, the
    share that comes from audio (1 - z from text). -> numpy (G,)."""
    import torch

    captured = {}
    hook = model.gate.register_forward_hook(lambda mod, args, out: captured.update(z=out[1]))
    try:
        with torch.no_grad():
            model.eval()(batch)
    finally:
        hook.remove()
    return captured["z"][index].numpy()


def text_step_labels(text: str, n_steps: int, encoder: str = "e5-words") -> list[str]:
    """What each text step is: for ``e5-words`` the sentence vector then one step per word; else step numbers."""
    units = words(text)
    if encoder == "e5-words" and n_steps == len(units) + 1:
        return ["(sentence)"] + units
    if encoder == "hashgram" and n_steps == len(units):
        return units
    return [f"step {i}" for i in range(n_steps)]


def cross_attention(model, batch, index: int = 0, layer: int = 0):
    """How much each audio step of utterance ``index`` attends to each text step in cross-modal layer ``layer``
    ("audio queries text"), averaged over the heads. -> numpy (audio steps, text steps), rows summing to 1."""
    import torch

    enc = model.encode(batch)
    audio, text = enc["audio_seq"], enc["text_seq"]
    a_mask, t_mask = enc["audio_mask"], enc["text_mask"]
    with torch.no_grad():
        for i, cross_layer in enumerate(model.cross.layers):
            block = cross_layer.audio_from_text
            query, context = ((block.norm_attn(audio), block.norm_context(text)) if block.norm_first
                              else (audio, text))
            if i == layer:
                _, weights = block.attn(query, context, context, key_padding_mask=~t_mask, need_weights=True,
                                        average_attn_weights=True)
                return weights[index, : int(a_mask[index].sum()), : int(t_mask[index].sum())].numpy()
            audio, text = cross_layer(audio, a_mask, text, t_mask)
    raise ValueError(f"the model has {len(model.cross.layers)} cross-modal layer(s); no layer {layer}")


def scan_code() -> str:
    """The selective scan's reference loop (``models.mamba._sequential_steps``) and which implementation
    ``impl="auto"`` runs on this machine's CPU, as Markdown."""
    import inspect

    import torch

    from bber_utils.models import mamba

    source = inspect.getsource(mamba._sequential_steps)
    picked = mamba._auto_impl(torch.zeros(1, 1, 1))
    return (f"```python\n{source}```\n\nOn this CPU `selective_scan(..., impl=\"auto\")` runs `{picked}`: "
            + ("the same recurrence and its backward compiled into one kernel per direction "
               "(`models/scan_kernels.py`), which keeps the state of a block of channels in a small buffer "
               "instead of writing (batch x time x channels x state) tensors"
               if picked == "fused" else "the same recurrence over chunks of time steps")
            + " (checked against the loop above in tests/models/; timings in benchmarks/mamba.md).")


def optimiser_table(model, cfg: dict) -> pd.DataFrame:
    """What trains ``model`` with notebook 06's parameters: the optimiser and its two parameter groups (counted
    from ``train.loop.optimizer_param_groups``), the schedule, the loss and the stopping rule."""
    tc = TrainConfig.from_dict(cfg)
    groups = optimizer_param_groups(model, tc.weight_decay)
    counts = [sum(p.numel() for p in g["params"]) for g in groups]
    rows = {
        "optimiser": f"AdamW (torch.optim.AdamW), learning rate {tc.lr:g}",
        "weight decay": f"{tc.weight_decay:g} on {counts[0]:,} weights (matrices, kernels); 0 on {counts[1]:,} "
                        "biases, norm scales and Mamba's A_log, D",
        "schedule": {"cosine": f"linear warm-up over the first {100 * tc.warmup_ratio:g} % of the steps, then "
                               "cosine decay to 1 % of the rate, per step",
                     "plateau": "rate halved after 2 epochs without a better dev mean",
                     "none": "constant rate"}.get(tc.scheduler, tc.scheduler),
        "loss": "cross-entropy with soft targets (one-hot, smoothed or LS-LLM), weighted per class",
        "batches": f"{tc.batch_size} utterances" + (", each corpus drawn equally often per epoch"
                                                     if tc.balanced_sampling else ", shuffled"),
        "stopping": f"at most {tc.epochs} epochs; stop after {tc.patience} without a better dev mean; the best "
                    "dev epoch's weights are kept",
    }
    return pd.DataFrame({"how the fusion stage trains": rows})


# ------------------------------------------------------------------------------------------------------------
# 02 and 09
# ------------------------------------------------------------------------------------------------------------


def pooled_pca(stores: dict, sample, seed: int = 0):
    """Each utterance of ``sample`` (``utt_id``, ``label``, ``language``) as its mean feature vector per modality
    (``stores``: name -> FeatureStore), standardised and projected on two principal components.
    -> DataFrame: modality, encoder, utt_id, label, language, pc1, pc2, pc1_share, pc2_share."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    frames = []
    for modality, store in stores.items():
        pooled = StandardScaler().fit_transform(store.mean_pooled(sample["utt_id"].tolist()))
        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(pooled)
        frames.append(pd.DataFrame({"modality": modality, "encoder": store.key.get("name"),
                                    "utt_id": sample["utt_id"].to_numpy(), "label": sample["label"].to_numpy(),
                                    "language": sample["language"].to_numpy(), "pc1": xy[:, 0], "pc2": xy[:, 1],
                                    "pc1_share": pca.explained_variance_ratio_[0],
                                    "pc2_share": pca.explained_variance_ratio_[1]}))
    return pd.concat(frames, ignore_index=True)


def right_and_wrong(predictor, clips, chunk: int = 8, limit: int = 64):
    """Predict ``clips`` (``audio_path``, ``text``, ``label``; optional ``context``) in chunks of ``chunk`` until
    one is right and one is wrong (at most ``limit``). -> ``(pair, checked)``: the first right and the first
    wrong prediction (``predict.predictions_table`` rows with ``true label``; fewer rows when none was wrong or
    right), and every prediction made."""
    tables = []
    for start in range(0, min(len(clips), limit), chunk):
        part = clips.iloc[start:start + chunk]
        contexts = list(part["context"]) if "context" in part else None
        table = predictions_table(predictor.predict(list(part["audio_path"]), list(part["text"]),
                                                            contexts=contexts))
        table.insert(1, "true label", list(part["label"]))
        tables.append(table)
        checked = pd.concat(tables, ignore_index=True)
        ok = checked[checked["error"].isna()]
        if (ok["label"] == ok["true label"]).any() and (ok["label"] != ok["true label"]).any():
            break
    checked = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    ok = checked[checked["error"].isna()] if len(checked) else checked
    pair = pd.concat([ok[ok["label"] == ok["true label"]].head(1), ok[ok["label"] != ok["true label"]].head(1)])
    return pair, checked


def config_table(cfg: dict) -> pd.DataFrame:
    """The keys where notebook 06's run differs from ``TrainConfig``'s defaults (the paper's values), with both
    values: what this run changes, not every key (``bber train --help`` lists them all)."""
    ours, paper = TrainConfig.from_dict(cfg).to_dict(), TrainConfig().to_dict()
    sizes = ModelConfig().to_dict()  # a model key left at None takes ModelConfig's (the paper's) size
    paper = {k: sizes.get(k) if v is None and k in sizes else v for k, v in paper.items()}
    ours = {k: sizes.get(k) if v is None and k in sizes else v for k, v in ours.items()}
    rows = {k: {"this run": str(v), "default (the paper's)": str(paper.get(k))}
            for k, v in ours.items() if v != paper.get(k)}
    return pd.DataFrame(rows).T.rename_axis("key")
