"""Audio I/O: load any format as 16 kHz mono float32, crop/pad, concatenate, write atomically.

Waveforms are 1-D ``np.ndarray`` of float32 in [-1, 1], shape ``(N,)``.
soundfile reads wav/flac/ogg; anything else (mp4, mp3, m4a …) goes through ffmpeg.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from bber_utils.core.fileio import atomic_write

# Heavy libraries (scipy) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.

SAMPLE_RATE = 16_000
_SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"}


class AudioError(RuntimeError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def resample(wav: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling ``(N,) -> (N * sr_out / sr_in,)``."""
    if sr_in == sr_out or len(wav) == 0:
        return wav.astype(np.float32, copy=False)
    from scipy.signal import resample_poly  # scipy is imported here: importing this module stays fast

    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(wav, sr_out // g, sr_in // g).astype(np.float32)


def to_mono(wav: np.ndarray) -> np.ndarray:
    """``(N,)`` or ``(N, C)`` -> ``(N,)`` by averaging channels."""
    return wav if wav.ndim == 1 else wav.mean(axis=1)


def _decode_ffmpeg(path: Path, sr: int) -> np.ndarray:
    if shutil.which("ffmpeg") is None:
        raise AudioError(path, "ffmpeg is needed to read this format; install it (apt-get install ffmpeg)")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sr),
           "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(path, f"ffmpeg could not decode it ({msg[-1] if msg else 'no message'})")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE, start_s: float | None = None,
               end_s: float | None = None) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sr``, optionally the span [start_s, end_s) in seconds.

    Raises ``AudioError`` for a missing, unreadable, empty or non-finite file.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
        try:
            wav, sr_in = sf.read(str(path), dtype="float32", always_2d=False)
        except Exception as exc:  # soundfile raises several types for corrupt data
            raise AudioError(path, f"unreadable audio ({exc})") from exc
        wav = resample(to_mono(wav), sr_in, sr)
    else:
        wav = _decode_ffmpeg(path, sr)
    if start_s is not None and start_s > 0 or end_s is not None and np.isfinite(end_s):
        a = int(round((start_s or 0.0) * sr))
        b = len(wav) if end_s is None or not np.isfinite(end_s) else int(round(end_s * sr))
        wav = wav[a:b]
    if wav.size == 0:
        raise AudioError(path, "no audio samples")
    if not np.all(np.isfinite(wav)):
        raise AudioError(path, "audio contains NaN or infinite samples")
    return np.ascontiguousarray(wav, dtype=np.float32)


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the header (soundfile) or ffprobe; raises ``AudioError``."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
        try:
            info = sf.info(str(path))
        except Exception as exc:
            raise AudioError(path, f"unreadable audio header ({exc})") from exc
        return info.frames / float(info.samplerate)
    return len(_decode_ffmpeg(path, SAMPLE_RATE)) / SAMPLE_RATE


def crop_or_pad(wav: np.ndarray, n: int) -> np.ndarray:
    """Crop to the first ``n`` samples or right-pad with zeros to ``n``."""
    if len(wav) >= n:
        return wav[:n]
    return np.pad(wav, (0, n - len(wav)))


def concatenate(wavs: list[np.ndarray], gap_s: float = 0.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Join waveforms end to end, with an optional silence of ``gap_s`` between them."""
    gap = np.zeros(int(round(gap_s * sr)), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, w in enumerate(wavs):
        if i and len(gap):
            parts.append(gap)
        parts.append(np.asarray(w, dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def write_wav(path: str | os.PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write 16-bit PCM wav atomically (a temp file then rename), creating folders as needed."""

    return atomic_write(path, lambda tmp: sf.write(tmp, np.clip(wav, -1.0, 1.0), sr, subtype="PCM_16"),
                        suffix=".wav")
