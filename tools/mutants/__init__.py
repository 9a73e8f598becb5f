"""Mutation check: each mutant re-introduces a bug (a reference behaviour or a fixed defect) at run time and
names the tests that must fail under it. ``python -m tools.mutants`` (or ``make mutants``) runs them all.

Every ``tools/mutants/m_<area>.py`` exposes ``MUTANTS: list[Mutant]``; ``all_mutants()`` collects them.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from .base import Mutant

__all__ = ["Mutant", "all_mutants", "get_mutant"]


def all_mutants() -> list[Mutant]:
    """Every mutant of every ``m_*.py`` module, in module then list order; names must be unique."""
    found: list[Mutant] = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("m_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.extend(getattr(module, "MUTANTS", []))
    names = [m.name for m in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate mutant names: {dupes}")
    return found


def get_mutant(name: str) -> Mutant:
    for m in all_mutants():
        if m.name == name:
            return m
    raise KeyError(f"no mutant {name!r}; known: {', '.join(m.name for m in all_mutants())}")
