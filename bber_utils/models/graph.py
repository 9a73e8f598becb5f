"""Graph fusion: BiGraphFormer and BiGatedGraphFormer (and their *WithProb variants).

After the cross-modal layers each sample gets its own small graph. Its nodes are the sample's audio summary and
text summary (masked means) and, when ``graph_segments`` = S > 0, also S segment means per modality. Every audio
node is joined to every text node in both directions, and each node has a self-loop (added by the GAT layers).
The per-sample graphs are batched the torch-geometric way: node ids of sample b are offset by b·N, exactly as
``torch_geometric.data.Batch.from_data_list`` does, so attention never crosses samples.

The reference joined only nodes 0 and 1 of the whole batch, so only the first sample mixed its audio and text
(reference notes §3.1, §11.2); tests/models/test_models.py checks that every sample mixes its own modalities and never
another sample's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bber_utils.models.blocks import segment_means
from bber_utils.models.config import ModelConfig
from bber_utils.models.fusion import BiFormer, WithProb
from bber_utils.models.mamba import masked_mean

# Heavy libraries (torch_geometric) are imported inside the functions that use them, so that importing this module,
# and `bber --help`, stays fast.


def sample_edge_index(num_audio: int, num_text: int) -> torch.Tensor:
    """(2, E) edges of one sample's graph: nodes ``0..num_audio-1`` are audio, the next ``num_text`` text;
    every audio–text pair, both directions (self-loops are left to the GAT layer)."""
    audio = torch.arange(num_audio)
    text = torch.arange(num_audio, num_audio + num_text)
    src = audio.repeat_interleave(num_text)
    dst = text.repeat(num_audio)
    return torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)


def batch_edge_index(edge_index: torch.Tensor, batch_size: int, num_nodes: int) -> torch.Tensor:
    """Disjoint union of ``batch_size`` copies of one sample's graph: copy b has its node ids offset by
    ``b·num_nodes``. (2, E) -> (2, batch_size·E)."""
    offsets = torch.arange(batch_size, device=edge_index.device) * num_nodes
    return (edge_index.unsqueeze(1) + offsets.view(1, -1, 1)).reshape(2, -1)


class ModalityGraph(nn.Module):
    """Two GAT layers (``gatv2`` or ``gat``) with a residual and LayerNorm over each sample's modality graph.

    ``forward(audio (B, Ta, H), audio_mask, text (B, Tt, H), text_mask)`` -> (audio (B, H), text (B, H)):
    the mean of each modality's node outputs.
    """

    def __init__(self, d_model: int, heads: int, conv: str, segments: int, dropout: float):
        super().__init__()
        from torch_geometric.nn import GATConv, GATv2Conv

        Conv = {"gatv2": GATv2Conv, "gat": GATConv}[conv]
        self.segments = segments
        self.nodes_per_modality = 1 + segments
        self.conv1 = Conv(d_model, d_model, heads=heads, concat=True, dropout=dropout)
        self.conv2 = Conv(d_model * heads, d_model, heads=1, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.register_buffer("edge_index", sample_edge_index(self.nodes_per_modality, self.nodes_per_modality),
                             persistent=False)

    def nodes(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, 1+S, H): the summary, then the S segment means."""
        summary = masked_mean(seq, mask).unsqueeze(1)
        if not self.segments:
            return summary
        return torch.cat([summary, segment_means(seq, mask, self.segments)], dim=1)

    def message_passing(self, nodes: torch.Tensor) -> torch.Tensor:
        """nodes (B, N, H) of B independent graphs -> (B, N, H)."""
        B, N, H = nodes.shape
        x = nodes.reshape(B * N, H)
        edges = batch_edge_index(self.edge_index, B, N)
        h = self.drop(F.elu(self.conv1(x, edges)))
        h = self.conv2(h, edges)
        return self.norm(x + self.drop(h)).view(B, N, H)

    def forward(self, audio, audio_mask, text, text_mask):
        nodes = torch.cat([self.nodes(audio, audio_mask), self.nodes(text, text_mask)], dim=1)
        out = self.message_passing(nodes)
        k = self.nodes_per_modality
        return out[:, :k].mean(dim=1), out[:, k:].mean(dim=1)


class BiGraphFormer(BiFormer):
    """BiFormer whose two modality vectors come out of a per-sample graph (``ModalityGraph``)."""

    def __init__(self, d_audio: int, d_text: int, cfg: ModelConfig | dict | None = None):
        super().__init__(d_audio, d_text, cfg)
        cfg = self.cfg
        self.graph = ModalityGraph(cfg.hidden_dim, cfg.graph_heads, cfg.graph_conv, cfg.graph_segments,
                                   cfg.dropout)

    def summaries(self, encoded: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        audio, text = self.cross_modal(encoded)
        return self.graph(audio, encoded["audio_mask"], text, encoded["text_mask"])


class BiGatedGraphFormer(BiGraphFormer):
    """BiGraphFormer whose graph outputs are mixed by a per-feature sigmoid gate."""

    gated = True


class BiGraphFormerWithProb(WithProb, BiGraphFormer):
    pass


class BiGatedGraphFormerWithProb(WithProb, BiGatedGraphFormer):
    pass
