"""The keyed, memory-mappable feature store, and ``ensure_features`` that fills it.

Layout of one store (one folder per encoder key)::

    <store_root>/<modality>-<encoder name>-<hash10>/
        key.json        every setting that changes the numbers; <hash10> is a hash of this JSON
        index.parquet   utt_id, shard, offset, length, content_hash, src_hash, src_size, src_mtime_ns
        shards/NNNNNN.npy   frames of many utterances stacked along time: (sum T, D) float32 | float16
        .lock           held while a process writes
        parts/III-of-NNN/   a shard process's own store (same layout), merged in by the next unsharded call

Every utterance is identified by ``utt_id`` and a hash of its input (the audio file's bytes and its
[start_s, end_s) span, or the text), so a changed file is re-extracted; a file whose size and mtime are
unchanged is not read again (``src_hash`` is reused). A shard is written to a temporary file,
fsync-ed and renamed before the index that points into it is replaced the same way, so a killed extraction
leaves a consistent store and the next call extracts only what is missing. Finished utterances are flushed
every ``flush_every`` utterances (512), every ``flush_mb`` (256 MB) and every ``flush_seconds`` (30 s), whichever
comes first, so a SIGKILL loses at most about 30 s of work. Only numpy arrays are stored, so a
store written on a GPU machine loads on any CPU machine.

Sharded extraction (one process per GPU or machine): ``ensure_features(..., shard=(i, n))`` handles only the
manifest rows at positions ``i, i + n, ...``, skips what the main store already holds, and writes into
``parts/i-of-n/`` under that part's own lock (no contention between shards). The next call without ``shard``
(or ``merge_parts``) moves every part's shards into the main store, updates its index and removes the part;
each step is atomic or repeatable, so a killed merge is finished by the next call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bber_utils.core.audio import AudioError, load_audio
from bber_utils.core.device import resolve_device
from bber_utils.core.fileio import atomic_write, check_writable, locked
from bber_utils.core.progress import tqdm
from bber_utils.features.audio_encoders import build_audio_encoder
from bber_utils.features.text_encoders import build_text_encoder

FEATURE_VERSION = 1
INDEX_COLUMNS = ["utt_id", "shard", "offset", "length", "content_hash", "src_hash", "src_size", "src_mtime_ns"]
MODALITIES = ("audio", "text")
FLUSH_SECONDS = 30.0
_clock = time.monotonic  # the flush timer (tests replace it with a fake clock)
STORE_DTYPES = ("float32", "float16")


class FeatureError(RuntimeError):
    """An utterance whose features cannot be computed; the message names the utt_id."""


# ----------------------------------------------------------------------------------------------- hashing
def short_hash(obj: Any, n: int = 10) -> str:
    """Hash of the canonical JSON of ``obj`` (sorted keys), ``n`` hex digits."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()[:n]


def file_hash(path: str | os.PathLike) -> str:
    """blake2b of a file's bytes, 32 hex digits."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def text_hash(text: str) -> str:
    return hashlib.blake2b(str(text).encode(), digest_size=16).hexdigest()


def store_dir_name(modality: str, key: dict) -> str:
    """``<modality>-<readable name>-<hash of the key without its name>``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(key.get("name", "encoder")))[-40:].strip("_.") or "encoder"
    return f"{modality}-{name}-{short_hash({k: v for k, v in key.items() if k != 'name'})}"


# ---------------------------------------------------------------------------------------------- store
class FeatureStore:
    """Read-only view of one keyed store: ``store[utt_id] -> np.ndarray (T, D) float32``.

    Shards are opened memory-mapped on first use. ``stats`` and ``skipped`` describe the last
    ``ensure_features`` call that returned this object.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        key_file = self.path / "key.json"
        if not key_file.exists():
            raise FileNotFoundError(f"not a feature store (no key.json): {self.path}")
        meta = json.loads(key_file.read_text(encoding="utf-8"))
        self.key: dict = meta["key"]
        self.dim: int = int(meta["dim"])
        self.modality: str = meta["modality"]
        self.dtype: str = meta["store_dtype"]
        self.index = _read_index(self.path)
        self._rows = {u: (s, o, n) for u, s, o, n in zip(self.index["utt_id"], self.index["shard"],
                                                         self.index["offset"], self.index["length"])}
        self._shards: dict[str, np.ndarray] = {}
        self.stats: dict[str, Any] = {}
        self.skipped = pd.DataFrame(columns=["utt_id", "reason"])

    def __getstate__(self) -> dict:
        """Pickled (to a second process) without its opened shards: they are memory-mapped again there."""
        return {**self.__dict__, "_shards": {}}

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"FeatureStore({self.path.name!r}, {len(self)} utterances, dim={self.dim}, {self.dtype})"

    @property
    def utt_ids(self) -> list[str]:
        return list(self._rows)

    def length(self, utt_id: str) -> int:
        """Number of frames / tokens T of ``utt_id`` without reading its data."""
        return int(self._rows[utt_id][2])

    def _shard(self, name: str) -> np.ndarray:
        arr = self._shards.get(name)
        if arr is None:
            arr = np.load(self.path / "shards" / name, mmap_mode="r", allow_pickle=False)
            self._shards[name] = arr
        return arr

    def __getitem__(self, utt_id: str) -> np.ndarray:
        try:
            shard, off, n = self._rows[utt_id]
        except KeyError:
            raise KeyError(f"{utt_id!r} is not in the feature store {self.path} "
                           f"(not extracted yet, or skipped: see store.skipped)") from None
        return np.array(self._shard(shard)[off:off + n], dtype=np.float32)

    def mean_pooled(self, utt_ids: Iterable[str]) -> np.ndarray:
        """Mean over time of each utterance: ``(n, D)`` float32 (for plots and quick probes)."""
        return np.stack([self[u].mean(axis=0) for u in utt_ids]) if utt_ids else np.zeros((0, self.dim),
                                                                                         np.float32)


def _read_index(path: Path) -> pd.DataFrame:
    f = path / "index.parquet"
    if not f.exists():
        ints = ("offset", "length", "src_size", "src_mtime_ns")
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ints else "object") for c in INDEX_COLUMNS})
    return pd.read_parquet(f)


def open_store(store_root: str | os.PathLike, modality: str, key: dict) -> FeatureStore | None:
    """The store for ``key`` under ``store_root`` if it has been created, else None."""
    p = Path(store_root) / store_dir_name(modality, key)
    return FeatureStore(p) if (p / "key.json").exists() else None


# ------------------------------------------------------------------------------------------- writing
@dataclass
class _Writer:
    """Buffers finished utterances and flushes them as one shard + a new index (atomically)."""

    path: Path
    store_dtype: str
    index: pd.DataFrame
    pending: list[tuple[str, np.ndarray, str, str, int, int]] = field(default_factory=list)
    pending_bytes: int = 0
    written: int = 0

    def add(self, utt_id: str, feats: np.ndarray, source: tuple[str, str, int, int]) -> None:
        """``source`` = (content_hash, src_hash, src_size, src_mtime_ns)."""
        self.pending.append((utt_id, feats, *source))
        self.pending_bytes += feats.nbytes

    def flush(self) -> None:
        if not self.pending:
            return
        shard_dir = self.path / "shards"
        shard_dir.mkdir(exist_ok=True)
        existing = [int(p.stem) for p in shard_dir.glob("*.npy") if p.stem.isdigit()]
        name = f"{max(existing, default=-1) + 1:06d}.npy"
        data = np.concatenate([f for _, f, *_ in self.pending]).astype(self.store_dtype, copy=False)
        atomic_write(shard_dir / name, lambda fo: np.save(fo, data, allow_pickle=False), fileobj=True, fsync=True)
        rows, off = [], 0
        for utt_id, f, h, src_h, size, mtime in self.pending:
            rows.append((utt_id, name, off, len(f), h, src_h, size, mtime))
            off += len(f)
        new = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        keep = self.index[~self.index["utt_id"].isin(new["utt_id"])]
        self.index = pd.concat([keep, new], ignore_index=True) if len(keep) else new
        index = self.index
        atomic_write(self.path / "index.parquet", lambda fo: index.to_parquet(fo, index=False), fileobj=True,
                     fsync=True)
        self.written += len(self.pending)
        self.pending, self.pending_bytes = [], 0


def check_shard(shard: Any) -> tuple[int, int] | None:
    """``(index, count)`` with ``0 <= index < count`` (``None`` or count 1: not sharded -> ``None``).

    Also accepts the string ``"I/N"`` (command line)."""
    if shard is None:
        return None
    if isinstance(shard, str):
        try:
            shard = tuple(int(v) for v in shard.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like INDEX/COUNT, e.g. 0/2 (got {shard!r})") from None
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (index, count), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard (index, count) needs count >= 1 and 0 <= index < count, got {shard!r}")
    return None if count == 1 else (index, count)


def part_dir(path: Path, shard: tuple[int, int]) -> Path:
    """Where shard ``(index, count)`` of the store at ``path`` writes."""
    return Path(path) / "parts" / f"{shard[0]:03d}-of-{shard[1]:03d}"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def merge_parts(path: str | os.PathLike) -> int:
    """Move the shard processes' parts (``parts/*``) into the store at ``path``; returns the rows merged.

    Call it with the store's writer lock held (``ensure_features`` does). A part is merged under its own lock,
    so a shard that is still writing is waited for. Order: the part's shard files are linked into ``shards/``
    under new numbers, the main index is replaced atomically, then the part is removed; if this is killed
    midway, the next merge does it again (the same rows, overriding themselves).
    """
    path = Path(path)
    parts_root = path / "parts"
    if not parts_root.is_dir():
        return 0
    merged = 0
    for part in sorted(p for p in parts_root.iterdir() if p.is_dir()):
        with locked(part / ".lock"):
            part_index = _read_index(part)
            if len(part_index):
                shard_dir = path / "shards"
                shard_dir.mkdir(exist_ok=True)
                next_no = max((int(p.stem) for p in shard_dir.glob("*.npy") if p.stem.isdigit()), default=-1) + 1
                renamed = {}
                for name in sorted(set(part_index["shard"])):
                    renamed[name] = f"{next_no:06d}.npy"
                    _link_or_copy(part / "shards" / name, shard_dir / renamed[name])
                    next_no += 1
                part_index = part_index.assign(shard=part_index["shard"].map(renamed))
                index = _read_index(path)
                keep = index[~index["utt_id"].isin(part_index["utt_id"])]
                index = pd.concat([keep, part_index], ignore_index=True) if len(keep) else part_index
                atomic_write(path / "index.parquet", lambda fo: index.to_parquet(fo, index=False), fileobj=True,
                             fsync=True)
                merged += len(part_index)
            shutil.rmtree(part)
    with contextlib.suppress(OSError):
        parts_root.rmdir()
    return merged


def _row_source(row: Any, modality: str, known: dict) -> tuple[str, str, int, int]:
    """(content_hash, src_hash, src_size, src_mtime_ns) of a row's input, reading the file only if its
    size or mtime differ from the index (``known``: utt_id -> the same tuple). Text: the text's hash."""
    if modality == "text":
        return text_hash(_load_input(row, "text", 0)), "", -1, -1
    st = os.stat(row.audio_path)
    old = known.get(row.utt_id)
    if old is not None and old[2] == st.st_size and old[3] == st.st_mtime_ns:
        src_h = old[1]
    else:
        src_h = file_hash(row.audio_path)
    start = float(row.start_s) if pd.notna(row.start_s) else 0.0
    end = f"{float(row.end_s):.4f}" if pd.notna(row.end_s) else "end"
    return text_hash(f"{src_h}|{start:.4f}|{end}"), src_h, st.st_size, st.st_mtime_ns


def _load_input(row: Any, modality: str, sample_rate: int):
    """A row's text, or its audio span as float32 ``(N,)`` (an empty clip gives ``(0,)``)."""
    if modality == "text":
        return "" if row.text is None or (isinstance(row.text, float) and np.isnan(row.text)) else str(row.text)

    start = float(row.start_s) if pd.notna(row.start_s) else None
    end = float(row.end_s) if pd.notna(row.end_s) else None
    try:
        return load_audio(row.audio_path, sr=sample_rate, start_s=start, end_s=end)
    except AudioError as exc:
        if exc.reason == "no audio samples":
            return np.zeros(0, dtype=np.float32)  # an empty clip: the encoder pads it to one frame
        raise


def ensure_features(manifest_df: pd.DataFrame, modality: str, encoder, store_root: str | os.PathLike,
                    batch_size: int = 16, device: str = "auto", store_dtype: str = "float32",
                    on_error: str = "skip", flush_every: int = 512, flush_mb: float = 256.0,
                    progress: bool = True, desc: str | None = None, shard: Any = None,
                    flush_seconds: float = FLUSH_SECONDS) -> FeatureStore:
    """Extract the features of every manifest row that the store lacks; return the read-only store.

    ``encoder``: an encoder object (``.key``, ``.dim``, ``.encode(list) -> list[(T, D)]``) or a spec string
    for ``build_audio_encoder`` / ``build_text_encoder``. The encoder's model is loaded only if something is
    missing. Rows are processed in length-sorted batches; finished rows are flushed every ``flush_every``
    utterances, ``flush_mb`` or ``flush_seconds`` (whichever first) and also when an exception stops the run, so
    a rerun resumes.
    ``on_error``: ``"skip"`` counts unreadable or non-finite inputs in ``store.skipped`` (with a warning),
    ``"raise"`` raises ``FeatureError`` naming the utt_id.
    ``shard=(index, count)`` (or ``"index/count"``): only the rows at positions ``index, index + count, ...``,
    written to this shard's own part of the store; the returned store is that part. A later call without
    ``shard`` merges every part into the store first (see the module docstring).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, got {store_dtype!r}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if int(flush_every) < 1 or float(flush_seconds) <= 0:
        raise ValueError(f"flush_every must be >= 1 and flush_seconds > 0 (got {flush_every}, {flush_seconds})")
    if isinstance(encoder, str):
        encoder = (build_audio_encoder if modality == "audio" else build_text_encoder)(encoder)
    if getattr(encoder, "modality", modality) != modality:
        raise ValueError(f"a {encoder.modality} encoder cannot extract {modality} features")
    needed = ["utt_id", "text"] if modality == "text" else ["utt_id", "audio_path", "start_s", "end_s"]
    missing_cols = [c for c in needed if c not in manifest_df.columns]
    if missing_cols:
        raise ValueError(f"manifest lacks columns {missing_cols} needed for {modality} features")
    if manifest_df["utt_id"].duplicated().any():
        dup = manifest_df.loc[manifest_df["utt_id"].duplicated(), "utt_id"].iloc[0]
        raise ValueError(f"manifest has duplicate utt_id {dup!r}")
    shard = check_shard(shard)
    if shard is not None:
        manifest_df = manifest_df.iloc[shard[0]::shard[1]]

    t0 = time.perf_counter()
    key = {**encoder.key, "modality": modality, "store_dtype": store_dtype, "feature_version": FEATURE_VERSION}
    main_path = Path(store_root) / store_dir_name(modality, key)
    path = main_path if shard is None else part_dir(main_path, shard)  # where this call writes
    skipped: list[tuple[str, str]] = []
    if shard is None and _complete(manifest_df, modality, main_path, skipped):  # nothing to write: no write lock
        return _result(path, manifest_df, modality, skipped, 0, 0, len(skipped), t0)
    skipped.clear()
    check_writable(path, f"some {modality} features are not in the store yet; make it writable or choose "
                         "another --workdir")
    path.mkdir(parents=True, exist_ok=True)
    with locked(path / ".lock"):
        for folder in {main_path, path}:
            if not (folder / "key.json").exists():
                meta = {"key": key, "modality": modality, "store_dtype": store_dtype, "dim": int(encoder.dim)}
                blob = json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False).encode()
                atomic_write(folder / "key.json", lambda fo: fo.write(blob), fileobj=True, fsync=True)
        if shard is None:
            merge_parts(path)
        index = _read_index(path)
        known = _known(_read_index(main_path), index) if shard is not None else _known(index)  # a shard skips
        todo = _todo(manifest_df, modality, known, skipped)                                  # the main rows
        n_unreadable = len(skipped)
        writer = _Writer(path, store_dtype, index)
        if todo:
            units = getattr(encoder, "keeping_units_in", None)  # e5 word/window vectors for later processes
            with units(main_path / "units") if units else contextlib.nullcontext():
                _extract(todo, modality, encoder, writer, batch_size, device, on_error, flush_every,
                         flush_mb * 2**20, skipped, progress, desc or f"{modality} {key.get('name', '')}",
                         flush_seconds)
    return _result(path, manifest_df, modality, skipped, writer.written, len(todo), n_unreadable, t0)


def _known(*indexes: pd.DataFrame) -> dict[str, tuple[str, str, int, int]]:
    """``utt_id -> (content_hash, src_hash, src_size, src_mtime_ns)`` of the stores' indexes (later ones win)."""
    known = {}
    for idx in indexes:
        known.update({u: (str(h), str(sh), int(sz), int(mt)) for u, h, sh, sz, mt in
                      zip(idx["utt_id"], idx["content_hash"], idx["src_hash"], idx["src_size"],
                          idx["src_mtime_ns"])})
    return known


def _todo(manifest_df: pd.DataFrame, modality: str, known: dict, skipped: list,
          first_only: bool = False) -> list[tuple[Any, tuple[str, str, int, int]]]:
    """The rows to extract: no entry, or an entry whose input hash changed (``first_only``: stop at the first).
    A row whose file cannot be read is appended to ``skipped`` instead."""
    todo = []
    for row in manifest_df.itertuples(index=False):
        old = known.get(row.utt_id)
        if old is None and first_only:
            return [(row, None)]
        try:
            source = _row_source(row, modality, known)
        except OSError as exc:
            skipped.append((row.utt_id, f"cannot read {row.audio_path}: {exc.strerror or exc}"))
            continue
        if old is None or old[0] != source[0]:
            todo.append((row, source))
            if first_only:
                break
    return todo


def _complete(manifest_df: pd.DataFrame, modality: str, path: Path, skipped: list) -> bool:
    """True when the store at ``path`` holds every row of ``manifest_df`` (unreadable ones go to ``skipped``) and
    no shard part waits to be merged; read under a shared lock where ``.lock`` can be opened, so nothing is
    written (a complete store in a read-only folder can be read)."""
    if not (path / "key.json").exists() or (path / "parts").is_dir():
        return False
    with locked(path / ".lock", shared=True):
        return not _todo(manifest_df, modality, _known(_read_index(path)), skipped, first_only=True)


def _result(path: Path, manifest_df: pd.DataFrame, modality: str, skipped: list, written: int, n_todo: int,
            n_unreadable: int, t0: float) -> FeatureStore:
    """The store at ``path`` with ``stats`` and ``skipped`` of this call (skipped rows also warned about)."""
    if skipped:
        shown = "; ".join(f"{u}: {r}" for u, r in skipped[:3])
        warnings.warn(f"{len(skipped)} utterance(s) skipped for {modality} features ({shown}"
                      f"{' …' if len(skipped) > 3 else ''}); see store.skipped", stacklevel=3)
    store = FeatureStore(path)
    store.skipped = pd.DataFrame(skipped, columns=["utt_id", "reason"])
    store.stats = {"requested": len(manifest_df), "extracted": written,
                   "cached": len(manifest_df) - n_todo - n_unreadable, "skipped": len(skipped),
                   "seconds": time.perf_counter() - t0}
    return store


def _extract(todo, modality, encoder, writer: _Writer, batch_size, device, on_error, flush_every, flush_bytes,
             skipped, progress, desc, flush_seconds: float = FLUSH_SECONDS) -> None:
    if getattr(encoder, "uses_torch", True):  # numpy encoders need no device (and no torch import)

        encoder.to(str(resolve_device(device, allow_mps=True)))
    sr = getattr(encoder, "sample_rate", 16000)

    def length(item) -> float:
        row = item[0]
        if modality == "text":
            return len(str(row.text or ""))
        d = getattr(row, "duration_s", float("nan"))
        return float(d) if pd.notna(d) else 0.0

    todo = sorted(todo, key=length, reverse=True)  # length-sorted batches: little padding
    bar = tqdm(total=len(todo), desc=desc, unit="utt", disable=not progress, leave=False)
    last_flush = _clock()
    try:
        for b in range(0, len(todo), batch_size):
            chunk = todo[b:b + batch_size]
            inputs, keep = [], []
            for item in chunk:
                row = item[0]
                try:
                    x = _load_input(row, modality, sr)
                    if modality == "audio" and not np.all(np.isfinite(x)):
                        raise FeatureError(f"{row.utt_id}: audio contains NaN or infinite samples")
                except Exception as exc:  # AudioError, FeatureError: a bad input, not a bad program
                    if on_error == "raise":
                        raise FeatureError(f"{row.utt_id}: {exc}") from exc
                    skipped.append((row.utt_id, str(exc)))
                    continue
                inputs.append(x)
                keep.append(item)
            if inputs:
                feats = encoder.encode(inputs)
                if len(feats) != len(inputs):
                    raise FeatureError(f"encoder returned {len(feats)} outputs for {len(inputs)} inputs")
                for (row, source), f in zip(keep, feats):
                    f = np.asarray(f, dtype=np.float32)
                    if f.ndim != 2 or f.shape[0] < 1 or f.shape[1] != encoder.dim:
                        raise FeatureError(f"{row.utt_id}: encoder gave shape {f.shape}, expected (T>=1, "
                                           f"{encoder.dim})")
                    if not np.all(np.isfinite(f)):
                        if on_error == "raise":
                            raise FeatureError(f"{row.utt_id}: encoder produced NaN/inf features")
                        skipped.append((row.utt_id, "encoder produced NaN/inf features"))
                        continue
                    writer.add(row.utt_id, f, source)
            bar.update(len(chunk))
            if (len(writer.pending) >= flush_every or writer.pending_bytes >= flush_bytes
                    or (writer.pending and _clock() - last_flush >= flush_seconds)):
                writer.flush()
                last_flush = _clock()
    finally:
        writer.flush()  # keep whatever finished, also when interrupted
        bar.close()
