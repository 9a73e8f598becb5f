"""Models: Mamba encoders, unimodal classifiers, cross-modal fusion and the model registry.

``build_model(name, cfg, d_audio, d_text)`` builds any model of ``MODEL_NAMES``; every model's
``forward(batch) -> logits (B, 7)``. ``parameter_table(cfg, d_audio, d_text)`` counts each model's parameters,
split into encoders and fusion. Importing this package does not import torch (the command line reads it).

| name | class | module |
|---|---|---|
| audio_only, text_only | UnimodalModel (the unimodal Mamba encoder-classifiers) | unimodal.py |
| biformer, bigatedformer, bimamba, predictions_fusion (+ *_withprob) | BiFormer, ... | fusion.py |
| bigraphformer, bigatedgraphformer (+ *_withprob) | BiGraphFormer, BiGatedGraphFormer | graph.py |
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import pandas as pd

from bber_utils.models.config import GRAPH_CONVS, ModelConfig, as_model_config

# name -> (module, class). Order: unimodal baselines, fusion models, then the *_withprob variants.
_REGISTRY: dict[str, tuple[str, str]] = {
    "audio_only": ("unimodal", "UnimodalModel"),
    "text_only": ("unimodal", "UnimodalModel"),
    "biformer": ("fusion", "BiFormer"),
    "bigraphformer": ("graph", "BiGraphFormer"),
    "bigatedformer": ("fusion", "BiGatedFormer"),
    "bigatedgraphformer": ("graph", "BiGatedGraphFormer"),
    "bimamba": ("fusion", "BiMamba"),
    "predictions_fusion": ("fusion", "PredictionsFusion"),
    "biformer_withprob": ("fusion", "BiFormerWithProb"),
    "bigraphformer_withprob": ("graph", "BiGraphFormerWithProb"),
    "bigatedformer_withprob": ("fusion", "BiGatedFormerWithProb"),
    "bigatedgraphformer_withprob": ("graph", "BiGatedGraphFormerWithProb"),
    "bimamba_withprob": ("fusion", "BiMambaWithProb"),
}
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
UNIMODAL_NAMES: tuple[str, ...] = ("audio_only", "text_only")
BIMODAL_NAMES: tuple[str, ...] = tuple(n for n in MODEL_NAMES if n not in UNIMODAL_NAMES)


def model_class(name: str) -> type:
    """The class behind a registry name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def build_model(name: str | None, cfg: ModelConfig | Mapping[str, Any] | None, d_audio: int, d_text: int):
    """Build registry model ``name`` (``None``: ``cfg.model``) for audio features of width ``d_audio`` and text
    features of width ``d_text``. -> ``nn.Module`` with ``forward(batch) -> logits (B, num_classes)``."""
    cfg = as_model_config(cfg)
    name = name or cfg.model
    cls = model_class(name)
    if name == "audio_only":
        return cls("audio", d_audio, cfg)
    if name == "text_only":
        return cls("text", d_text, cfg)
    return cls(d_audio, d_text, cfg)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_table(cfg: ModelConfig | Mapping[str, Any] | None = None, d_audio: int = 1024,
                    d_text: int = 1024, names: tuple[str, ...] = MODEL_NAMES):
    """Parameter counts of each model -> DataFrame indexed by model with columns ``encoders`` (the two
    unimodal Mamba encoder-classifiers; for audio_only / text_only, its one classifier), ``fusion`` (everything
    else: what trains when the encoders are frozen) and ``total``. Defaults: the paper's sizes."""

    cfg = as_model_config(cfg)
    rows = []
    for name in names:
        model = build_model(name, cfg, d_audio, d_text)
        total = count_parameters(model)
        if name in UNIMODAL_NAMES:
            encoders = total
        else:
            encoders = count_parameters(model.audio_encoder) + count_parameters(model.text_encoder)
        rows.append({"model": name, "encoders": encoders, "fusion": total - encoders, "total": total})
        del model
    return pd.DataFrame(rows).set_index("model")


__all__ = ["MODEL_NAMES", "UNIMODAL_NAMES", "BIMODAL_NAMES", "GRAPH_CONVS", "ModelConfig", "as_model_config",
           "build_model", "model_class", "count_parameters", "parameter_table"]
