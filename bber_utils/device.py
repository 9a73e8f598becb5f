"""The one device resolver: what ``device="auto"`` (or ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) means, for the
trainer, inference, feature extraction, ASR and the local LLM backends.

Imports torch lazily; nothing from ``bber_utils``.
"""

from __future__ import annotations


def resolve_device(spec=None, allow_mps: bool = False):
    """``torch.device`` for ``spec``: ``None`` / ``""`` / ``"auto"`` -> ``cuda`` when available, else ``mps`` when
    ``allow_mps`` and available (feature extraction), else ``cpu``; any other spec as given. A CUDA spec without
    CUDA is a clear ``RuntimeError`` here, not a crash deep inside the first ``.to(device)``."""
    import torch

    if spec in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if allow_mps and mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={spec!r} but CUDA is not available; use device=auto or cpu")
    return dev
