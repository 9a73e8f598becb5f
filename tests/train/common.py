"""The trainer tests' fakes: a tiny model size, a feature store in memory with learnable features, a work folder
of manifests, and a training config on them."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from bber_utils.core.labels import CLASSES
from bber_utils.corpora.manifest import save_manifest


TINY = dict(hidden_dim=16, num_heads=2, num_layers=1, mamba_layers=1, mamba_d_state=4, mamba_d_conv=2,
            bimamba_layers=1, gated_dim=8, out_features=16, dropout=0.1, graph_heads=1)


class FakeStore(dict):
    """``store[utt_id] -> (T, D)`` with ``dim`` and ``path`` like a FeatureStore."""

    def __init__(self, data, dim, name):
        super().__init__(data)
        self.dim, self.path = dim, Path(f"/fake/{name}")


def features_for(ids, labels, dim, seed, modality):
    """Class-dependent means, so that the task is learnable; each modality sees only part of the classes well.
    An utterance's features depend on it alone (as a real store's do), not on the other rows asked for."""
    centers = np.random.default_rng(1 if modality == "audio" else 2).standard_normal((7, dim)) * 1.5
    out = {}
    for u, y in zip(ids, labels):
        rng = np.random.default_rng([seed, zlib.crc32(u.encode())])
        t = int(rng.integers(2, 9))
        out[u] = (centers[y] + rng.standard_normal((t, dim))).astype(np.float32)
    return out


def make_workdir(root: Path, corpora=("demo_en", "demo_ru"), per_class=(3, 1, 1)) -> Path:
    wd = root / "wd"
    for c in corpora:
        for split, n in zip(("train", "dev", "test"), per_class):
            rows = [{"utt_id": f"{c}-{split}-{k}_{i}", "corpus": c, "language": "en" if c.endswith("en") else "ru",
                     "split": split, "audio_path": "/nonexistent.wav", "start_s": 0.0, "end_s": np.nan,
                     "duration_s": 1.0, "text": "x", "label": lbl, "source": "original"}
                    for k, lbl in enumerate(CLASSES) for i in range(n)]
            save_manifest(pd.DataFrame(rows), wd / "manifests" / f"{c}_{split}.parquet")
    return wd


def tiny_config(wd, **kw):
    base = dict(workdir=str(wd), seed=3, device="cpu", model="biformer", epochs=3, unimodal_epochs=2,
                batch_size=8, lr=3e-3, patience=5, scheduler="cosine", warmup_ratio=0.1, progress=False, **TINY)
    base.update(kw)
    return base


def tone_wav(path: Path, freq: float, seconds: float = 0.3) -> None:
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)



def real_workdir(tmp_path: Path) -> Path:
    """One corpus with wavs and transcripts, as ``bber prepare`` leaves it."""
    wd = make_workdir(tmp_path, corpora=("demo_en",), per_class=(2, 1, 1))
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for split in ("train", "dev", "test"):
        path = wd / "manifests" / f"demo_en_{split}.parquet"
        df = pd.read_parquet(path)
        for i, row in df.iterrows():
            wav = wavs / f"{row['utt_id']}.wav"
            tone_wav(wav, 150 + 60 * CLASSES.index(row["label"]))
            df.loc[i, "audio_path"] = str(wav)
            df.loc[i, "text"] = f"{row['label']} words {i}"
        save_manifest(df, path)
    return wd
