"""Building blocks shared by the fusion models: classifier head, cross-modal attention layers, sigmoid gate,
per-class logit mixer, and the masked sequence helpers (segment pooling, per-sample resampling).

Shapes: B batch, L / Ta / Tt sequence lengths, H hidden width. Masks are ``(B, L) bool`` with True = real frame.
Every helper uses each sample's own real length, so an utterance's output never depends on its batch.
"""

from __future__ import annotations

import torch
from torch import nn


def check_mask(mask: torch.Tensor, name: str) -> None:
    """Every sample needs at least one real frame (an empty sample has nothing to attend to or average)."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a (B, L) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    if torch.compiler.is_exporting():  # a graph cannot raise on its data: the caller checks (bber_utils.predict)
        return
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{name}: samples {empty} of the batch have no real frames (length 0)")


class ClassifierHead(nn.Module):
    """``Linear(d_in→O) → LayerNorm → GELU → Dropout → Linear(O→classes)``: (B, d_in) -> (B, classes)."""

    def __init__(self, d_in: int, out_features: int, num_classes: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, out_features), nn.LayerNorm(out_features), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(out_features, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FeedForward(nn.Module):
    """Position-wise ``Linear(H→eH) → GELU → Linear(eH→H)``, e = ``expansion`` (dropout is applied by the
    caller on the output, as in nanoGPT: dropout on a 4H-wide hidden layer costs a fifth of a CPU training step).
    e = 1 is the reference's feed-forward (``Linear H→H, GELU, Dropout, Linear H→H``), e = 4 the usual
    Transformer one."""

    def __init__(self, d_model: int, expansion: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, expansion * d_model), nn.GELU(),
                                 nn.Linear(expansion * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttentionBlock(nn.Module):
    """One direction of a cross-modal layer: the query modality attends over the *other* modality's keys AND
    values (so the other modality's content enters this stream), then a feed-forward ``H→eH→H``
    (e = ``ff_expansion``; 1 = the reference's layer, 4 = our wider variant, 0 = no feed-forward); residuals
    with pre-norm (``norm_first``) or post-norm. (B, Lq, H), (B, Lk, H), (B, Lk) -> (B, Lq, H).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float, norm_first: bool, ff_expansion: int = 1):
        super().__init__()
        self.norm_first = norm_first
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.ff = FeedForward(d_model, ff_expansion) if ff_expansion else None
        self.norm_attn = nn.LayerNorm(d_model)
        self.norm_context = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.norm_ff = nn.LayerNorm(d_model) if ff_expansion else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def _attend(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(query, context, context, key_padding_mask=~context_mask, need_weights=False)
        return self.drop(out)

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = query + self._attend(self.norm_attn(query), self.norm_context(context), context_mask)
            return x if self.ff is None else x + self.drop(self.ff(self.norm_ff(x)))
        x = self.norm_attn(query + self._attend(query, context, context_mask))
        return x if self.ff is None else self.norm_ff(x + self.drop(self.ff(x)))


class CrossModalLayer(nn.Module):
    """Audio attends over text and text over audio, both computed from the previous layer's states."""

    def __init__(self, d_model: int, num_heads: int, dropout: float, norm_first: bool, ff_expansion: int = 1):
        super().__init__()
        self.audio_from_text = CrossAttentionBlock(d_model, num_heads, dropout, norm_first, ff_expansion)
        self.text_from_audio = CrossAttentionBlock(d_model, num_heads, dropout, norm_first, ff_expansion)

    def forward(self, audio, audio_mask, text, text_mask):
        new_audio = self.audio_from_text(audio, text, text_mask)
        new_text = self.text_from_audio(text, audio, audio_mask)
        return new_audio, new_text


class CrossModalEncoder(nn.Module):
    """``num_layers`` stacked ``CrossModalLayer``s (+ a final LayerNorm per modality when pre-norm).
    audio (B, Ta, H), text (B, Tt, H) -> same shapes.
    """

    def __init__(self, d_model: int, num_heads: int, num_layers: int, dropout: float, norm_first: bool,
                 ff_expansion: int = 1):
        super().__init__()
        self.layers = nn.ModuleList(CrossModalLayer(d_model, num_heads, dropout, norm_first, ff_expansion)
                                    for _ in range(num_layers))
        self.final_audio_norm = nn.LayerNorm(d_model) if norm_first and num_layers else nn.Identity()
        self.final_text_norm = nn.LayerNorm(d_model) if norm_first and num_layers else nn.Identity()

    def forward(self, audio, audio_mask, text, text_mask):
        for layer in self.layers:
            audio, text = layer(audio, audio_mask, text, text_mask)
        return self.final_audio_norm(audio), self.final_text_norm(text)


class GatedFusion(nn.Module):
    """Sigmoid gate per feature: ``h_a = tanh(W_a a)``, ``h_t = tanh(W_t t)``, ``z = sigmoid(W_z [a; t])``,
    out = ``z·h_a + (1−z)·h_t``. (B, d_a), (B, d_t) -> (out (B, G), z (B, G)).

    The reference took a softmax over the G features, so every z was ≈ 1/G and the output ≈ h_t.
    """

    def __init__(self, d_audio: int, d_text: int, gated_dim: int, dropout: float):
        super().__init__()
        self.audio_proj = nn.Linear(d_audio, gated_dim)
        self.text_proj = nn.Linear(d_text, gated_dim)
        self.gate_proj = nn.Linear(d_audio + d_text, gated_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, audio: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_audio = self.drop(torch.tanh(self.audio_proj(audio)))
        h_text = self.drop(torch.tanh(self.text_proj(text)))
        z = torch.sigmoid(self.gate_proj(torch.cat([audio, text], dim=-1)))
        return z * h_audio + (1 - z) * h_text, z


class LogitMixer(nn.Module):
    """Learned per-class convex mixture of S logit sources: ``Σ_s softmax_s(W)[s, c] · logits_s[:, c]``.
    W (S, C) starts at zero (equal weights). list of S × (B, C) -> (B, C).
    """

    def __init__(self, num_sources: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_sources, num_classes))
        self.weight._no_weight_decay = True  # mixing logits, not a linear map: decay would pull to equal weights

    def source_weights(self) -> torch.Tensor:
        """(S, C): each class's weights over the sources, summing to 1."""
        return torch.softmax(self.weight, dim=0)

    def forward(self, sources: list[torch.Tensor]) -> torch.Tensor:
        if len(sources) != self.weight.shape[0]:
            raise ValueError(f"LogitMixer expects {self.weight.shape[0]} sources, got {len(sources)}")
        return (self.source_weights().unsqueeze(1) * torch.stack(sources)).sum(dim=0)


def segment_means(x: torch.Tensor, mask: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Masked mean over ``num_segments`` equal chunks of each sample's real frames.

    x (B, L, H), mask (B, L) -> (B, S, H). Chunk k of a sample with n real frames covers
    ``[floor(k·n/S), max(floor((k+1)·n/S), floor(k·n/S)+1))``, so a sample shorter than S repeats frames
    instead of producing empty chunks. Assumes right padding (real frames first).
    """
    lengths = mask.sum(dim=1, keepdim=True)                                        # (B, 1)
    k = torch.arange(num_segments, device=x.device).unsqueeze(0)                   # (1, S)
    starts = torch.div(k * lengths, num_segments, rounding_mode="floor")            # (B, S)
    ends = torch.maximum(torch.div((k + 1) * lengths, num_segments, rounding_mode="floor"), starts + 1)
    pos = torch.arange(x.shape[1], device=x.device).view(1, 1, -1)                 # (1, 1, L)
    member = (pos >= starts.unsqueeze(-1)) & (pos < ends.unsqueeze(-1))            # (B, S, L)
    weights = member.to(x.dtype)
    return weights @ x / weights.sum(dim=-1, keepdim=True)


def resample_to_lengths(x: torch.Tensor, lengths: torch.Tensor, new_lengths: torch.Tensor,
                        out_len: int) -> torch.Tensor:
    """Linearly resample each sample's first ``lengths[b]`` frames to ``new_lengths[b]`` frames.

    x (B, L, H), lengths (B,), new_lengths (B,) -> (B, out_len, H); frames past ``new_lengths[b]`` are zero.
    Uses half-pixel centres (as ``F.interpolate(..., align_corners=False)``) on the real frames only, so the
    padding of the batch never leaks in; when ``new_lengths == lengths`` it is the identity.
    """
    B, _, H = x.shape
    pos = torch.arange(out_len, device=x.device, dtype=x.dtype).unsqueeze(0)       # (1, T)
    scale = lengths.to(x.dtype).unsqueeze(1) / new_lengths.to(x.dtype).unsqueeze(1)
    src = ((pos + 0.5) * scale - 0.5).clamp(min=0)
    last = (lengths - 1).unsqueeze(1)
    lo = torch.minimum(src.floor().long(), last)
    hi = torch.minimum(lo + 1, last)
    frac = (src - lo.to(x.dtype)).clamp(0, 1).unsqueeze(-1)
    gather = lambda idx: torch.gather(x, 1, idx.unsqueeze(-1).expand(B, out_len, H))
    out = gather(lo) * (1 - frac) + gather(hi) * frac
    valid = (pos < new_lengths.unsqueeze(1)).unsqueeze(-1)
    return out * valid.to(x.dtype)


def align_by_resampling(audio: torch.Tensor, audio_mask: torch.Tensor, text: torch.Tensor,
                        text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Put both modalities on one time axis per sample: the shorter one is linearly resampled to the longer
    one's length (n_b = max(Ta_b, Tt_b)). -> audio (B, T, H), text (B, T, H), mask (B, T), T = max_b n_b. While
    exporting, T is the longer padded width max(Ta, Tt), read from the shapes rather than the masks' values so the
    graph takes any length: the same T for a batch each of whose modalities is padded to its longest sample (as
    ``predict`` pads it); a training batch padded wider keeps max_b n_b, so training is unchanged.
    """
    audio_len, text_len = audio_mask.sum(dim=1), text_mask.sum(dim=1)
    joint_len = torch.maximum(audio_len, text_len)
    out_len = max(audio.shape[1], text.shape[1]) if torch.compiler.is_exporting() else int(joint_len.max())
    mask = torch.arange(out_len, device=audio.device).unsqueeze(0) < joint_len.unsqueeze(1)
    return (resample_to_lengths(audio, audio_len, joint_len, out_len),
            resample_to_lengths(text, text_len, joint_len, out_len), mask)
