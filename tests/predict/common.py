"""Shared fakes of the prediction tests: a run folder holding a tiny trained-shape checkpoint whose input widths are
those of the offline encoders (log-mel, hashgram), test clips, and a payload that proves code ran."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SIZES = {"hidden_dim": 16, "num_heads": 2, "num_layers": 1, "mamba_layers": 1, "mamba_d_state": 4,
         "out_features": 16, "gated_dim": 8, "graph_heads": 1}
FEATURES = {"audio_encoder": "logmel", "text_encoder": "hashgram", "text_max_tokens": 95, "audio_pool": 1}


def make_run(root: Path, name: str = "biformer", seed: int = 0, metrics: dict | None = None, **sizes) -> Path:
    """``root/<name>/best.pt`` as the trainer writes it (weights of seed ``seed``) and, when given, ``metrics.json``."""
    import torch

    from bber_utils.features import build_audio_encoder, build_text_encoder
    from bber_utils.models import build_model
    from bber_utils.models.config import ModelConfig

    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    d_audio = build_audio_encoder("logmel").dim
    d_text = build_text_encoder("hashgram", max_tokens=95).dim
    cfg = ModelConfig.from_dict({**SIZES, **sizes, "model": name})
    torch.manual_seed(seed)
    model = build_model(name, cfg, d_audio, d_text)
    torch.save({"model": model.state_dict(), "model_name": name, "d_audio": d_audio, "d_text": d_text,
                "model_config": cfg.to_dict(), "features": FEATURES, "config": {}, "data": "0123456789abcdef"},
               run / "best.pt")
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run


def tone(path: Path, seconds: float, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * (200 + 30 * t) * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32),
             sr)
    return path


class Payload:
    """Unpickling or importing something built from this calls ``open(marker, "w")``: the marker proves code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_code(folder: Path, marker: Path) -> None:
    """Files a hostile model folder could hold: Python modules and a pickle, each creating ``marker`` if run."""
    import torch

    code = f"open({str(marker)!r}, 'w').close()\n"
    for name in ("__init__.py", "modeling.py", "bber_model.py", "configuration.py"):
        (folder / name).write_text(code, encoding="utf-8")
    torch.save({"evil": Payload(marker)}, folder / "pytorch_model.bin")
