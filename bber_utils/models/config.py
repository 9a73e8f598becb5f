"""``ModelConfig``: the sizes of every model in the registry (the notebook-06 model parameters).

Plain dataclass, no torch import, so that the command line can read it for ``--help``.
Defaults are the paper's sizes (hidden 256, 16 heads, 5 cross layers, out 256, dropout 0.15, d_state 16,
conv kernel 6, 2 Mamba layers per unimodal encoder, 5 in BiMamba) and the reference's cross-modal layer
(attention + an H→H feed-forward, ``ff_expansion=1``; our earlier 4H feed-forward is ``ff_expansion=4``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

GRAPH_CONVS = ("gatv2", "gat")
POOLINGS = ("mean", "stats", "attention")
LATER_KEYS = {"pooling": "mean"}  # keys added after checkpoints were published, and their defaults


@dataclass
class ModelConfig:
    model: str = "biformer"        # registry name, see ``bber_utils.models.MODEL_NAMES``
    hidden_dim: int = 256          # H: width of the encoders' output sequences and of every fusion layer
    num_heads: int = 16            # attention heads in the cross-modal layers (H % num_heads == 0)
    num_layers: int = 5            # stacked cross-modal layers
    mamba_layers: int = 2          # Mamba layers in each unimodal encoder
    mamba_d_state: int = 16        # SSM state size N
    mamba_d_conv: int = 6          # depthwise causal conv kernel of each Mamba layer
    bimamba_layers: int = 5        # Mamba layers of BiMamba's fusion stack (added key; the paper uses 5)
    graph_heads: int = 2           # attention heads of the first graph layer
    graph_conv: str = "gatv2"      # "gatv2" | "gat"
    graph_segments: int = 0        # 0 = modality summaries only; S > 0 adds S segment nodes per modality
    gated_dim: int = 128           # G: width of the sigmoid-gated fusion
    out_features: int = 256        # O: hidden width of the classifier head
    dropout: float = 0.15
    norm_first: bool = False       # pre-norm (True) or post-norm (False) residuals in the cross layers
    ff_expansion: int = 1          # cross layers' feed-forward H→eH→H: 1 = the reference's layer, 4 = our
                                   # wider "ff4" variant, 0 = attention only (no feed-forward)
    freeze_encoders: bool = True   # bimodal models keep the pretrained unimodal encoders frozen
    num_classes: int = 7
    pooling: str = "mean"          # unimodal encoders' pooling over time: mean (the paper's masked mean) | stats
                                   # (mean and standard deviation, projected to H) | attention (learned weights)

    def __post_init__(self) -> None:
        problems = []
        for key in ("hidden_dim", "num_heads", "mamba_d_state", "mamba_d_conv", "graph_heads", "gated_dim",
                    "out_features", "num_classes"):
            if int(getattr(self, key)) < 1:
                problems.append(f"{key} must be >= 1 (got {getattr(self, key)!r})")
        for key in ("num_layers", "mamba_layers", "bimamba_layers", "graph_segments", "ff_expansion"):
            if int(getattr(self, key)) < 0:
                problems.append(f"{key} must be >= 0 (got {getattr(self, key)!r})")
        if self.num_heads >= 1 and self.hidden_dim % self.num_heads:
            problems.append(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        if self.graph_conv not in GRAPH_CONVS:
            problems.append(f"graph_conv must be one of {GRAPH_CONVS} (got {self.graph_conv!r})")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling must be one of {POOLINGS} (got {self.pooling!r})")
        if not 0.0 <= float(self.dropout) < 1.0:
            problems.append(f"dropout must be in [0, 1) (got {self.dropout!r})")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None = None, **overrides: Any) -> "ModelConfig":
        """Build from a profile / notebook parameter dict; keys that are not model keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in {**dict(d or {}), **overrides}.items() if k in names and v is not None}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every key; a key added later is left out at its default (``LATER_KEYS``), so the stored configuration
        of earlier checkpoints and caches still matches."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in LATER_KEYS or v != LATER_KEYS[k]}


def as_model_config(cfg: "ModelConfig | Mapping[str, Any] | None") -> ModelConfig:
    """Accept a ``ModelConfig``, a parameter dict or ``None`` (defaults)."""
    if isinstance(cfg, ModelConfig):
        return cfg
    return ModelConfig.from_dict(cfg or {})
