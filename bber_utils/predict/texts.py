"""Text-only inference (no audio): ``predict_texts`` with a ``text_only``
checkpoint, with the dialogue context it was trained with.
"""

from __future__ import annotations

import os

import pandas as pd

from bber_utils.core.device import resolve_device
from bber_utils.core.labels import CLASSES
from bber_utils.predict import hub, predictor
from bber_utils.predict.checkpoint import CheckpointError, allowed_classes, checkpoint_encoders, masked_softmax
from bber_utils.train.dataset import pad_sequences

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


def predict_texts(checkpoint: str | os.PathLike, texts: list[str], contexts: list[list[str]] | None = None,
                  device: str = "auto", batch_size: int = 64, trust_remote_code: bool = False,
                  text_code_revision: str | None = None):
    """Text-only inference, no audio: a ``text_only`` model's probabilities for each transcript (a checkpoint, a
    run folder or a model folder of ``bber export``).

    ``contexts[i]``: the previous utterances of text i's dialogue, oldest first (used when the run was trained
    with ``text_context: k``; only the last k are read). ``trust_remote_code`` / ``text_code_revision``: as for
    ``Predictor``. Returns a DataFrame ``text, label, {class}...``.
    """
    import torch

    dev = resolve_device(device)
    model, meta = hub.load_trained(checkpoint, str(dev))
    if meta["model_name"] != "text_only":
        raise CheckpointError(f"{checkpoint}: predict_texts needs a text_only checkpoint, not {meta['model_name']!r}")
    settings = meta["settings"]
    _, encoder = checkpoint_encoders(checkpoint, settings, trust_remote_code, text_code_revision)
    contexts = contexts if contexts is not None else [[] for _ in texts]
    if len(contexts) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(contexts)} contexts")
    rows = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        feats = predictor.text_features(encoder, chunk, contexts[start:start + batch_size], int(settings["text_context"] or 0),
                              settings["text_context_mode"] or "steps")
        text, mask = pad_sequences(feats)
        batch = {"text": text.float().to(dev), "text_mask": mask.to(dev)}
        with torch.no_grad():
            probs = masked_softmax(model(batch), allowed_classes(meta.get("classes"))).cpu().numpy()
        for t, p in zip(chunk, probs):
            rows.append({"text": t, "label": CLASSES[int(p.argmax())], **dict(zip(CLASSES, p.round(6)))})
    return pd.DataFrame(rows)
