"""bber_utils.models.blocks: the shared building blocks."""

import torch


def test_alignment_takes_the_joint_length_of_the_samples_not_the_padded_width():
    """A training batch padded wider than its longest sample aligns to max_b n_b, as before ONNX export existed
    (the shapes' width is taken while exporting only): BiMamba's reverse scan would otherwise start in padding."""
    from bber_utils.models.blocks import align_by_resampling

    audio, text = torch.randn(2, 12, 4), torch.randn(2, 9, 4)
    audio_mask = torch.arange(12)[None] < torch.tensor([[5], [3]])
    text_mask = torch.arange(9)[None] < torch.tensor([[2], [6]])
    a, t, mask = align_by_resampling(audio, audio_mask, text, text_mask)
    assert a.shape[1] == t.shape[1] == mask.shape[1] == 6 and mask.sum(1).tolist() == [5, 6]
