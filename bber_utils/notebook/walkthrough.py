"""The model and the metrics, shown rather than told (notebook 06).

- ``example_batch(d_audio, d_text)``: a small padded batch with masks, the shape the trainer feeds.
- ``shape_trace(model, batch)``: every named submodule a forward pass goes through, with its output shape.
- ``FUSION_GLOSSARY``: one line per model name of ``bber_utils.models.MODEL_NAMES``.
- ``metrics_example()``: UAR, WAR, MF1, WF1 on a balanced and on an imbalanced toy test set, computed by
  ``bber_utils.train.metrics`` (the same code that scores every run).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bber_utils.augment import ls_llm
from bber_utils.core.labels import CLASSES
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
        row = {"case": case, "reply": reply if len(reply) < 70 else reply[:67] + "...", "status": status,
               "reason": reason}
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
