"""Identify a transformers model by what fixes its numbers: a local folder's content hash, or a hub id and
the commit it resolves to. Used in the feature-store key; no model is loaded here."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{40}$")


def is_local(spec: str) -> bool:
    return Path(os.path.expanduser(str(spec))).is_dir()


@functools.lru_cache(maxsize=32)
def _folder_hash(folder: str, stamp: tuple) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def folder_hash(folder: str | os.PathLike) -> str:
    """blake2b of every file (name + bytes) directly inside ``folder``: config, weights, tokenizer, …

    Memoised in-process by the files' sizes and mtimes, so a large checkpoint is read once per process.
    """
    folder = str(Path(os.path.expanduser(str(folder))).resolve())
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(folder).iterdir())
                  if p.is_file())
    return _folder_hash(folder, stamp)


def hub_commit(model_id: str, revision: str | None) -> str | None:
    """The commit a hub ``revision`` (default ``main``) points to, from the local hub cache; None if unknown
    (e.g. not downloaded yet: the key then records the revision name)."""
    rev = revision or "main"
    if _SHA.match(rev):
        return rev
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except Exception:  # pragma: no cover - huggingface_hub always comes with transformers
        return None
    ref = Path(HF_HUB_CACHE) / f"models--{model_id.replace('/', '--')}" / "refs" / rev
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


def model_key(spec: str, revision: str | None = None) -> dict:
    """``{"model": ..., "revision": ..., "commit": ...}`` for a hub id, ``{"model": ..., "content_hash": ...}``
    for a local folder (its path is not part of the key: a moved checkpoint keeps its features)."""
    if is_local(spec):
        return {"model": "local", "content_hash": folder_hash(spec)}
    commit = hub_commit(spec, revision)
    if commit is None and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False"):
        # Not in the cache yet: resolve once, on the network (the model will be downloaded anyway).
        try:
            from huggingface_hub import HfApi

            commit = HfApi().model_info(spec, revision=revision, timeout=10).sha
        except Exception:
            commit = None
    return {"model": spec, "revision": revision or "main", "commit": commit}
