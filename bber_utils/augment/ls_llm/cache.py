"""LS-LLM cache: one append-only JSON-lines file of answers per (backend, model, prompt version, mode, settings).

Owns :class:`LabelCache` (resume after an interruption, shard parts and their merge), :func:`open_for_writing`
(one writer per cache file: concurrent runs wait, then reuse the answers) and :func:`request_key`.
Knows nothing of parsing, validation or tables; imports no torch and no pandas.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

from bber_utils.augment.ls_llm.labellers import Labeller, LabelRequest
from bber_utils.core.fileio import locked


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-")[:60] or "x"


def request_key(r: LabelRequest) -> str:
    """``utt_id`` + a hash of what the prompt depends on (text and true label)."""
    h = hashlib.sha1(f"{r.text}\x1f{r.label}".encode("utf-8")).hexdigest()[:16]
    return f"{r.utt_id}|{h}"


class LabelCache:
    """Append-only JSON-lines cache of one (backend, model, prompt version, mode, decoding settings).

    Each line: ``key, utt_id, backend, model, prompt_version, mode, settings, raw, values, status, reason``. A line cut
    short by an interrupted run is skipped (and counted in ``.bad_lines``).
    """

    def __init__(self, cache_dir: str | os.PathLike, labeller: Labeller, shard: tuple[int, int] | None = None,
                 load: bool = True):
        ident = json.dumps([labeller.backend, labeller.model, labeller.prompt_version, labeller.mode,
                            labeller.settings])
        h = hashlib.sha1(ident.encode()).hexdigest()[:10]
        name = f"{_slug(labeller.backend)}__{_slug(Path(labeller.model).name or labeller.model)}__{labeller.mode}__{h}"
        self.path = Path(cache_dir) / f"{name}.jsonl"  # the main cache
        # where this process appends: the main cache, or its shard's own part (no two writers on one file)
        self.write_path = self.path if shard is None else self.path.with_name(
            f"{name}.part-{shard[0]:03d}-of-{shard[1]:03d}.jsonl")
        self.provenance = dict(backend=labeller.backend, model=labeller.model,
                               prompt_version=labeller.prompt_version, mode=labeller.mode)
        self.settings = labeller.settings
        self.entries: dict[str, dict] = {}
        self.bad_lines = 0
        if load:
            self.load()

    def load(self) -> None:
        """(Re)read the main cache and every shard part into ``entries``."""
        self.entries, self.bad_lines = {}, 0
        for path in [p for p in (self.path, *self.part_paths()) if p.exists()]:  # what every shard finished
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        e = json.loads(line)
                        self.entries[e["key"]] = e
                    except (ValueError, KeyError, TypeError):
                        self.bad_lines += 1

    def part_paths(self) -> list[Path]:
        """The shard parts of this cache (``<cache>.part-I-of-N.jsonl``)."""
        if not self.path.parent.is_dir():
            return []
        return sorted(self.path.parent.glob(f"{self.path.stem}.part-*-of-*.jsonl"))

    def merge_parts(self) -> int:
        """Append every shard part to the main cache (fsync-ed), then remove the parts; returns lines merged.

        Killed midway, the next merge appends a part again: repeated lines of a key are harmless (last wins)."""
        merged = 0
        for part in self.part_paths():
            with locked(_lock_path(part), waiting=f"bber label: waiting for the shard writing {part.name}"):
                if not part.exists():  # merged by another run meanwhile
                    continue
                lines = [line for line in part.read_text(encoding="utf-8").splitlines(keepends=True)
                         if line.strip()]
                if lines and not lines[-1].endswith("\n"):
                    lines = lines[:-1]  # a line cut short by a killed shard: dropped (asked again next time)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.writelines(lines)
                    f.flush()
                    os.fsync(f.fileno())
                part.unlink()
                _lock_path(part).unlink(missing_ok=True)  # the part is gone (a rerun of its shard makes a new one)
                merged += len(lines)
        return merged

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def add(self, items: list[dict]) -> None:
        """Append entries and flush them to disk (so an interruption loses at most the batch in flight)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.write_path, "a", encoding="utf-8") as f:
            for e in items:
                e = {**e, **self.provenance, "settings": self.settings}
                self.entries[e["key"]] = e
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _lock_path(cache_file: Path) -> Path:
    """``.<name>.lock`` beside a cache file or shard part: held by the one run that appends to it."""
    return cache_file.with_name(f".{cache_file.stem}.lock")


@contextlib.contextmanager
def open_for_writing(cache_dir: str | os.PathLike, labeller: Labeller, shard: tuple[int, int] | None = None):
    """The cache (``shard``: its part) loaded under its writer lock, which is held until the block ends: a second
    run over the same cache waits for the first (saying so on stderr), then finds the first one's answers cached
    and asks only what is still missing, so two ``bber label`` at once ask each utterance once. A call without
    ``shard`` merges the shard parts first (each under its part's lock)."""
    cache = LabelCache(cache_dir, labeller, shard, load=False)
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    with locked(_lock_path(cache.write_path), waiting=f"bber label: another run is labelling into "
                                                      f"{cache.write_path}; waiting for it (its answers are reused)"):
        if shard is None:
            cache.merge_parts()
        cache.load()
        yield cache
