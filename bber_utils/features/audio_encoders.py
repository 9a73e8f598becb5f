"""Audio encoders: waveform (N,) at 16 kHz -> frame sequence (T_a, D) float32.

- ``LogMelEncoder`` ("logmel"): the offline default, log-mel filterbanks with a 25 ms window and a 20 ms hop,
  i.e. 50 frames/s and the same frame count as wav2vec2 (T = floor((N - 400) / 320) + 1 at 16 kHz).
- ``TransformersAudioEncoder``: any transformers audio model by hub id or local folder (the paper's is
  ``audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim``; also the encoder of a Whisper-style
  encoder-decoder), last hidden layer or a chosen one, batched with attention masks. The model is loaded on
  the first ``encode`` call only.

Both have ``.dim``, ``.key`` (everything that changes the numbers), ``.sample_rate`` and
``encode(list[(N,) float32]) -> list[(T, D) float32]``. Clips shorter than one window are zero-padded to one
window, so every clip gives at least one frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bber_utils.core.errors import ConfigError, check_model_spec
from bber_utils.features.model_source import model_key

# Heavy libraries (torch, transformers) are imported inside the functions that use them, so that importing this
# module, and `bber --help`, stays fast.

LOGMEL_VERSION = 1


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular filters on the HTK mel scale: ``(n_mels, n_fft // 2 + 1)`` float32."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / np.maximum(center - lower, 1e-9)
    down = (upper - freqs[None, :]) / np.maximum(upper - center, 1e-9)
    return np.clip(np.minimum(up, down), 0.0, None).astype(np.float32)


class LogMelEncoder:
    """Log-mel filterbank frames, ``(T, n_mels)``; numpy only (no JIT, no model)."""

    modality = "audio"
    uses_torch = False

    def __init__(self, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 20.0, n_fft: int = 512,
                 fmin: float = 20.0, fmax: float | None = None, normalize: str = "none",
                 sample_rate: int = 16000):
        if normalize not in ("none", "utterance"):
            raise ValueError(f"normalize must be 'none' or 'utterance', got {normalize!r}")
        self.sample_rate = int(sample_rate)
        self.win = int(round(win_ms * sample_rate / 1000))
        self.hop = int(round(hop_ms * sample_rate / 1000))
        self.n_fft = max(int(n_fft), self.win)
        self.normalize = normalize
        fmax = float(fmax) if fmax is not None else sample_rate / 2.0
        self.fbank = mel_filterbank(sample_rate, self.n_fft, int(n_mels), float(fmin), fmax)
        self.window = np.hanning(self.win + 1)[:-1].astype(np.float32)  # periodic Hann
        self.dim = int(n_mels)
        self.key = {"name": "logmel", "kind": "logmel", "version": LOGMEL_VERSION, "n_mels": self.dim,
                    "win": self.win, "hop": self.hop, "n_fft": self.n_fft, "fmin": float(fmin), "fmax": fmax,
                    "normalize": normalize, "sample_rate": self.sample_rate, "log_floor": 1e-6}

    def to(self, device: str) -> "LogMelEncoder":
        return self  # numpy: nothing to move

    def frames(self, wav: np.ndarray) -> np.ndarray:
        """``(N,)`` -> ``(T, n_mels)`` float32 with T = floor((max(N, win) - win) / hop) + 1."""
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if len(wav) < self.win:
            wav = np.pad(wav, (0, self.win - len(wav)))
        framed = np.lib.stride_tricks.sliding_window_view(wav, self.win)[:: self.hop] * self.window
        power = np.abs(np.fft.rfft(framed, n=self.n_fft, axis=1)) ** 2
        feats = np.log(power.astype(np.float32) @ self.fbank.T + 1e-6)
        if self.normalize == "utterance":
            feats = (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-5)
        return feats.astype(np.float32)

    def encode(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        return [self.frames(w) for w in batch]


class TransformersAudioEncoder:
    """Any transformers audio model (wav2vec2, HuBERT, WavLM, …) by hub id or local folder.

    ``layer``: None = last hidden state; an int picks ``hidden_states[layer]`` (0 = the input embeddings,
    negative counts from the end). Batches are zero-padded with an attention mask and each output is cut to
    its own valid frames, so an utterance's features do not depend on its batch. Models whose feature
    extractor does not return attention masks (group-norm wav2vec2-base style) are run one clip at a time
    for the same reason.
    """

    modality = "audio"
    uses_torch = True

    def __init__(self, model: str, layer: int | None = None, revision: str | None = None,
                 dtype: str = "float32", sample_rate: int = 16000, min_samples: int = 400,
                 max_seconds: float | None = None, trust_remote_code: bool = False):
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
        self.model_spec, self.revision, self.layer = str(model), revision, layer
        self.dtype, self.sample_rate = dtype, int(sample_rate)
        self.min_samples, self.max_seconds, self.trust_remote_code = int(min_samples), max_seconds, trust_remote_code
        self.device = "cpu"
        self._model = self._extractor = None
        self._dim: int | None = None
        self._fixed_window = False
        source = model_key(self.model_spec, revision)
        name = Path(self.model_spec).name if source["model"] == "local" else source["model"]
        self.key = {"name": name, "kind": "transformers-audio", **source, "layer": layer, "dtype": dtype,
                    "sample_rate": self.sample_rate, "min_samples": self.min_samples,
                    "max_seconds": max_seconds, "pooling": "none"}

    @property
    def dim(self) -> int:
        if self._dim is None:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(self.model_spec, revision=self.revision,
                                             trust_remote_code=self.trust_remote_code)
            self._dim = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model"))
        return self._dim

    def to(self, device: str) -> "TransformersAudioEncoder":
        self.device = device
        if self._model is not None:
            self._model.to(device)
        return self

    def _load(self) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModel

        self._extractor = AutoFeatureExtractor.from_pretrained(self.model_spec, revision=self.revision,
                                                               trust_remote_code=self.trust_remote_code)
        model = AutoModel.from_pretrained(self.model_spec, revision=self.revision,
                                          dtype=getattr(torch, self.dtype),
                                          trust_remote_code=self.trust_remote_code)
        self._dim = int(getattr(model.config, "hidden_size", None) or model.config.d_model)
        self._fixed_window = bool(getattr(model.config, "is_encoder_decoder", False))
        if self._fixed_window:  # Whisper-style: keep the encoder, fed 30 s log-mel windows
            model = model.get_encoder()
        self._model = model.eval().to(self.device)

    def _prepare(self, wav: np.ndarray) -> np.ndarray:
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if self.max_seconds:
            wav = wav[: int(self.max_seconds * self.sample_rate)]
        if len(wav) < self.min_samples:
            wav = np.pad(wav, (0, self.min_samples - len(wav)))
        return wav

    def _valid_frames(self, n_samples: list[int], n_frames: int) -> list[int]:
        import torch

        fn = getattr(self._model, "_get_feat_extract_output_lengths", None)
        if fn is not None:
            out = fn(torch.tensor(n_samples))
            return [max(1, min(n_frames, int(v))) for v in out]
        longest = max(n_samples)
        return [max(1, min(n_frames, int(round(n_frames * n / longest)))) for n in n_samples]

    def encode(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        if self._model is None:
            self._load()
        wavs = [self._prepare(w) for w in batch]
        if not getattr(self._extractor, "return_attention_mask", True) and len(wavs) > 1:
            return [f for w in wavs for f in self.encode([w])]
        if self._fixed_window:
            return self._encode_fixed_window(wavs)
        inputs = self._extractor(wavs, sampling_rate=self.sample_rate, padding=True, return_tensors="pt",
                                 return_attention_mask=True)
        inputs = {k: (v.to(self.device, dtype=self._model.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        if not getattr(self._extractor, "return_attention_mask", True):
            inputs.pop("attention_mask", None)
        with torch.inference_mode():
            out = self._model(**inputs, output_hidden_states=self.layer is not None)
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        hidden = hidden.float().cpu().numpy()
        lengths = self._valid_frames([len(w) for w in wavs], hidden.shape[1])
        return [np.ascontiguousarray(hidden[i, :n]) for i, n in enumerate(lengths)]

    def _encode_fixed_window(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Encoder of an encoder-decoder speech model (Whisper): every clip is padded to the model's fixed
        window (30 s), so the batch cannot change the result; frames beyond the clip are cut off."""
        import torch

        inputs = self._extractor(wavs, sampling_rate=self.sample_rate, return_tensors="pt")
        features = inputs["input_features"].to(self.device, dtype=self._model.dtype)
        with torch.inference_mode():
            out = self._model(features, output_hidden_states=self.layer is not None)
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        hidden = hidden.float().cpu().numpy()
        ratio = features.shape[-1] * getattr(self._extractor, "hop_length", 160) / hidden.shape[1]  # samples/frame
        return [np.ascontiguousarray(hidden[i, :max(1, min(hidden.shape[1], int(np.ceil(len(w) / ratio))))])
                for i, w in enumerate(wavs)]


def build_audio_encoder(spec: str = "logmel", **opts):
    """``"logmel"`` (options of ``LogMelEncoder``) or a hub id / local folder of a transformers audio model
    (options of ``TransformersAudioEncoder``: layer, revision, dtype, max_seconds, trust_remote_code).
    Options set to None are ignored, so callers can pass every parameter through."""
    opts = {k: v for k, v in opts.items() if v is not None}
    if spec in (None, "", "logmel"):
        if "layer" in opts:
            raise ConfigError("the logmel encoder has no layers; leave audio_layer unset (null)")
        return LogMelEncoder(**opts)

    check_model_spec(spec, ("logmel",), "audio encoder")  # a typo is not a hub id: fail before any download
    return TransformersAudioEncoder(str(spec), **opts)
