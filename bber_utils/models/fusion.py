"""Bimodal fusion models: BiFormer, BiGatedFormer, BiMamba, PredictionsFusion and the *WithProb variants.

Every bimodal model holds two ``UnimodalClassifier``s (``audio_encoder``, ``text_encoder``; frozen by default)
and splits its forward pass in two, so that the trainer can cache the frozen encoders' outputs once:

    encode(batch)  -> dict(audio_seq (B, Ta, H), audio_mask (B, Ta), text_seq (B, Tt, H), text_mask (B, Tt),
                           audio_logits (B, C), text_logits (B, C))
    fuse(encoded)  -> logits (B, C)
    forward(batch) =  fuse(encode(batch))

``batch``: ``audio (B, Ta, Da)``, ``audio_mask (B, Ta) bool`` (True = real frame), ``text (B, Tt, Dt)``,
``text_mask (B, Tt)``, optionally precomputed out-of-fold ``audio_logits`` / ``text_logits (B, C)`` (used
instead of the encoders' heads when present). Any length >= 1; no fixed width anywhere.

Differences from the reference code (reference notes §3, §11) and the tests that show them
(tests/models/test_models.py): cross-attention takes keys AND values from the other modality; masks everywhere so an
utterance's logits do not depend on its batch; pooling is a masked mean (the reference's 95-step "temporal
profile" needed a fixed width and crashed below 95 frames); the gate is a sigmoid per feature, not a softmax
over features. No positional encoding is added: the causal Mamba encoders' outputs already carry the order
(the reference optionally added a sinusoidal one at every layer; it was off in its shipped config).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bber_utils.models.blocks import (ClassifierHead, CrossModalEncoder, GatedFusion, LogitMixer, align_by_resampling,
                                      check_mask)
from bber_utils.models.config import ModelConfig, as_model_config
from bber_utils.models.mamba import MambaStack, masked_mean
from bber_utils.models.unimodal import UnimodalClassifier

ENCODED_KEYS = ("audio_seq", "audio_mask", "text_seq", "text_mask", "audio_logits", "text_logits")


def _encoder_state(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Accept a ``UnimodalClassifier`` state dict or that of the registry's ``UnimodalModel`` wrapper."""
    prefix = "encoder."
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


class BimodalModel(nn.Module):
    """Base class: the two unimodal encoders, ``encode``, ``forward``, freezing and loading. Subclasses
    implement ``fuse(encoded) -> logits (B, C)``.
    """

    def __init__(self, d_audio: int, d_text: int, cfg: ModelConfig | dict | None = None):
        super().__init__()
        self.cfg = cfg = as_model_config(cfg)
        self.audio_encoder = UnimodalClassifier(d_audio, cfg)
        self.text_encoder = UnimodalClassifier(d_text, cfg)
        self.encoders_frozen = False
        self.freeze_encoders(cfg.freeze_encoders)

    # --- encoders -----------------------------------------------------------------------------------------
    def freeze_encoders(self, flag: bool = True) -> "BimodalModel":
        """Frozen encoders get no gradients and stay in eval mode (no dropout) even when the model trains."""
        self.encoders_frozen = bool(flag)
        self.audio_encoder.requires_grad_(not flag)
        self.text_encoder.requires_grad_(not flag)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "BimodalModel":
        super().train(mode)
        if self.encoders_frozen:
            self.audio_encoder.eval()
            self.text_encoder.eval()
        return self

    def load_unimodal(self, audio_state_dict: dict, text_state_dict: dict) -> "BimodalModel":
        """Load pretrained unimodal classifiers (strict: sizes must match this model's config)."""
        for name, encoder, state in (("audio", self.audio_encoder, audio_state_dict),
                                     ("text", self.text_encoder, text_state_dict)):
            try:
                encoder.load_state_dict(_encoder_state(state))
            except RuntimeError as err:
                raise ValueError(f"the {name} state dict does not fit this model's {name} encoder: {err}") from err
        return self

    def fusion_parameters(self) -> list[nn.Parameter]:
        """The parameters outside the two encoders."""
        encoder_ids = {id(p) for enc in (self.audio_encoder, self.text_encoder) for p in enc.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder_ids]

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run both encoders (without autograd when frozen); see the module docstring for the keys."""
        for key in ("audio", "text"):
            if key not in batch:
                raise KeyError(f"batch has no {key!r} (keys: {sorted(batch)})")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoders_frozen):
            audio = self.audio_encoder(batch["audio"], batch.get("audio_mask"))
            text = self.text_encoder(batch["text"], batch.get("text_mask"))
        audio_logits, text_logits = batch.get("audio_logits"), batch.get("text_logits")
        return {"audio_seq": audio["seq"], "audio_mask": audio["mask"],
                "text_seq": text["seq"], "text_mask": text["mask"],
                "audio_logits": audio["logits"] if audio_logits is None else audio_logits,
                "text_logits": text["logits"] if text_logits is None else text_logits}

    def fuse(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fuse(self.encode(batch))


class BiFormer(BimodalModel):
    """Stacked cross-modal layers over the encoders' sequences -> masked mean per modality -> [a; t] -> head.
    Subclasses change ``summaries`` (graph models) or set ``gated`` (sigmoid gate instead of concatenation).
    """

    gated = False

    def __init__(self, d_audio: int, d_text: int, cfg: ModelConfig | dict | None = None):
        super().__init__(d_audio, d_text, cfg)
        cfg, H = self.cfg, self.cfg.hidden_dim
        self.cross = CrossModalEncoder(H, cfg.num_heads, cfg.num_layers, cfg.dropout, cfg.norm_first,
                                       cfg.ff_expansion)
        self.gate = GatedFusion(H, H, cfg.gated_dim, cfg.dropout) if self.gated else None
        head_in = cfg.gated_dim if self.gated else 2 * H
        self.head = ClassifierHead(head_in, cfg.out_features, cfg.num_classes, cfg.dropout)

    def cross_modal(self, encoded: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> audio (B, Ta, H), text (B, Tt, H) after the cross-modal layers."""
        check_mask(encoded["audio_mask"], "audio_mask")
        check_mask(encoded["text_mask"], "text_mask")
        return self.cross(encoded["audio_seq"], encoded["audio_mask"], encoded["text_seq"], encoded["text_mask"])

    def summaries(self, encoded: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> one vector per modality, (B, H) each."""
        audio, text = self.cross_modal(encoded)
        return masked_mean(audio, encoded["audio_mask"]), masked_mean(text, encoded["text_mask"])

    def combine(self, audio: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, H), (B, H) -> the head's input: [a; t] (B, 2H) or the gated mix (B, G)."""
        if self.gate is None:
            return torch.cat([audio, text], dim=-1)
        return self.gate(audio, text)[0]

    def fuse(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.combine(*self.summaries(encoded)))


class BiGatedFormer(BiFormer):
    """BiFormer whose two modality vectors are mixed by a per-feature sigmoid gate (``GatedFusion``)."""

    gated = True


class BiMamba(BimodalModel):
    """Both modalities on one time axis, ``[a; t] → Linear(2H→H) → LayerNorm → Dropout → MambaStack →
    masked mean → head``.

    Alignment (our choice): per sample, the shorter sequence is linearly resampled to the longer one's length
    (``align_by_resampling``), so every time step sees both modalities and nothing of the other samples'
    padding. The reference interpolated the zero-padded batch to 95 steps, mixing padding into short clips.
    """

    def __init__(self, d_audio: int, d_text: int, cfg: ModelConfig | dict | None = None):
        super().__init__(d_audio, d_text, cfg)
        cfg, H = self.cfg, self.cfg.hidden_dim
        self.mix_in = nn.Sequential(nn.Linear(2 * H, H), nn.LayerNorm(H), nn.Dropout(cfg.dropout))
        self.mamba = MambaStack(H, cfg.bimamba_layers, d_state=cfg.mamba_d_state, d_conv=cfg.mamba_d_conv,
                                dropout=cfg.dropout)
        self.head = ClassifierHead(H, cfg.out_features, cfg.num_classes, cfg.dropout)

    def fuse(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        check_mask(encoded["audio_mask"], "audio_mask")
        check_mask(encoded["text_mask"], "text_mask")
        audio, text, mask = align_by_resampling(encoded["audio_seq"], encoded["audio_mask"],
                                                encoded["text_seq"], encoded["text_mask"])
        x = self.mamba(self.mix_in(torch.cat([audio, text], dim=-1)), mask)
        return self.head(masked_mean(x, mask))


class PredictionsFusion(BimodalModel):
    """Learned per-class weights over the audio and text logits (softmax over the 2 sources)."""

    def __init__(self, d_audio: int, d_text: int, cfg: ModelConfig | dict | None = None):
        super().__init__(d_audio, d_text, cfg)
        self.mix = LogitMixer(2, self.cfg.num_classes)

    def fuse(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mix([encoded["audio_logits"], encoded["text_logits"]])


class WithProb:
    """Mixin: the fusion logits mixed with the audio and text logits by learned per-class weights over the 3
    sources. Use as ``class XWithProb(WithProb, X)``.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prob_mix = LogitMixer(3, self.cfg.num_classes)

    def fuse(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        fused = super().fuse(encoded)
        return self.prob_mix([encoded["audio_logits"], encoded["text_logits"], fused])


class BiFormerWithProb(WithProb, BiFormer):
    pass


class BiGatedFormerWithProb(WithProb, BiGatedFormer):
    pass


class BiMambaWithProb(WithProb, BiMamba):
    pass
