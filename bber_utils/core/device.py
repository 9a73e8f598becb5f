"""The one device resolver: what ``device="auto"`` (or ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) means, for the
trainer, inference, feature extraction, ASR and the local LLM backends.

Imports torch lazily; nothing from ``bber_utils`` but ``errors`` (a bad spec is a ``ConfigError``: one line).
"""

from __future__ import annotations

from bber_utils.core.errors import ConfigError

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(spec=None, allow_mps: bool = False):
    """``torch.device`` for ``spec``: ``None`` / ``""`` / ``"auto"`` -> ``cuda`` when available, else ``mps`` when
    ``allow_mps`` and available (feature extraction), else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as
    given. Anything else (``gpu``), or a device this machine lacks (``cuda`` without CUDA, ``cuda:3`` with two
    GPUs, ``mps`` off a Mac), is a one-line ``ConfigError`` here, not a crash deep inside the first ``.to``."""
    import torch

    if spec in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if allow_mps and mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {spec!r} is not a device: use {DEVICE_CHOICES}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={spec!r} but CUDA is not available on this machine; use device=auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device={spec!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise ConfigError(f"device={spec!r} but MPS (Apple GPU) is not available on this machine; use device=auto "
                          f"or cpu")
    return dev
