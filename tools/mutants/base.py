"""The ``Mutant`` record: one re-introduced bug, applied at run time by monkeypatching (no file is edited)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    import pytest


@dataclass(frozen=True)
class Mutant:
    name: str                 # short id, e.g. "ref-argmax-soft-labels"
    claim: str                # the README row or defect it re-introduces, one line
    tests: tuple[str, ...]    # pytest node ids / files relative to the repo root that must FAIL under it
    apply: Callable[["pytest.MonkeyPatch"], None]  # re-introduces the bad behaviour (monkeypatch only)
