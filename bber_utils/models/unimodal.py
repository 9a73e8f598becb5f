"""The unimodal Mamba encoder-classifiers (the paper's audio-only and text-only models).

They are trained first; their encoders then feed every bimodal model (frozen by default), and their heads give
the unimodal logits that prediction fusion and the *_withprob models mix.
"""

from __future__ import annotations

import torch
from torch import nn

from bber_utils.models.blocks import ClassifierHead, check_mask
from bber_utils.models.config import ModelConfig, as_model_config
from bber_utils.models.mamba import MambaStack, masked_mean


class TimePooling(nn.Module):
    """``(B, L, H), mask (B, L)`` -> ``(B, H)``: the masked mean (``mean``, the paper's), the masked mean and
    standard deviation projected back to H (``stats``: statistics pooling, as in x-vectors), or a masked softmax
    over learned per-step scores (``attention``)."""

    def __init__(self, hidden: int, mode: str = "mean"):
        super().__init__()
        self.mode = mode
        if mode == "stats":
            self.proj = nn.Linear(2 * hidden, hidden)
        elif mode == "attention":
            self.score = nn.Linear(hidden, 1)

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return masked_mean(seq, mask)
        m = mask.unsqueeze(-1).to(seq.dtype)
        if self.mode == "attention":
            scores = self.score(seq).squeeze(-1).masked_fill(~mask, float("-inf"))
            return (torch.softmax(scores, dim=-1).unsqueeze(-1) * seq).sum(dim=1)
        mean = masked_mean(seq, mask)
        var = ((seq - mean.unsqueeze(1)) ** 2 * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return self.proj(torch.cat([mean, torch.sqrt(var + 1e-5)], dim=-1))


class UnimodalClassifier(nn.Module):
    """``Linear(d_in→H) → Dropout → MambaStack → pooling over time (masked mean) → head``.

    ``forward(x (B, L, d_in), mask (B, L) bool | None)`` -> dict(logits (B, C), seq (B, L, H), mask (B, L),
    pooled (B, H)); padded positions of ``seq`` are zero.
    """

    def __init__(self, d_in: int, cfg: ModelConfig | dict | None = None, **sizes):
        """``sizes``: ModelConfig keys overriding ``cfg``; ``d_model`` and ``n_layers`` (the names in
        docs/architecture.md) are accepted for ``hidden_dim`` and ``mamba_layers``."""
        super().__init__()
        aliases = {"d_model": "hidden_dim", "n_layers": "mamba_layers"}
        sizes = {aliases.get(k, k): v for k, v in sizes.items()}
        if isinstance(cfg, int):  # UnimodalClassifier(d_in, d_model, ...) as in docs/architecture.md
            sizes.setdefault("hidden_dim", cfg)
            cfg = None
        cfg = as_model_config(cfg)
        if sizes:
            cfg = ModelConfig.from_dict({**cfg.to_dict(), **sizes})
        self.d_in, self.d_model = int(d_in), cfg.hidden_dim
        self.proj = nn.Linear(self.d_in, cfg.hidden_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.mamba = MambaStack(cfg.hidden_dim, cfg.mamba_layers, d_state=cfg.mamba_d_state,
                                d_conv=cfg.mamba_d_conv, dropout=cfg.dropout)
        self.head = ClassifierHead(cfg.hidden_dim, cfg.out_features, cfg.num_classes, cfg.dropout)
        if cfg.pooling != "mean":  # only then: the paper's model keeps its state dict (and its numbers)
            self.pool = TimePooling(cfg.hidden_dim, cfg.pooling)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"expected features (B, L, {self.d_in}), got {tuple(x.shape)}")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        check_mask(mask, "mask")
        seq = self.mamba(self.drop(self.proj(x)), mask)
        pooled = self.pool(seq, mask) if hasattr(self, "pool") else masked_mean(seq, mask)
        return {"logits": self.head(pooled), "seq": seq, "mask": mask, "pooled": pooled}


class UnimodalModel(nn.Module):
    """Registry wrapper (``audio_only`` / ``text_only``): ``forward(batch) -> logits (B, C)`` reading
    ``batch[modality]`` and ``batch[modality + "_mask"]``. Its ``encoder`` is the ``UnimodalClassifier`` whose
    state dict a bimodal model's ``load_unimodal`` takes (the ``encoder.`` prefix is accepted too).
    """

    def __init__(self, modality: str, d_in: int, cfg: ModelConfig | dict | None = None):
        super().__init__()
        if modality not in ("audio", "text"):
            raise ValueError(f"modality must be 'audio' or 'text', got {modality!r}")
        self.modality = modality
        self.encoder = UnimodalClassifier(d_in, cfg)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(batch[self.modality], batch.get(f"{self.modality}_mask"))["logits"]
