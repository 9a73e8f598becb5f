"""pytest plugin: ``-p tools.mutants.plugin`` with ``BBER_MUTANT=<name>`` applies that mutant before collection
(so that ``from x import f`` at a test module's top binds the mutated ``f``) and undoes it at the end."""

from __future__ import annotations

import os

import pytest

_PATCH: pytest.MonkeyPatch | None = None


def pytest_configure(config):
    global _PATCH
    name = os.environ.get("BBER_MUTANT")
    if not name:
        return
    from . import get_mutant

    mutant = get_mutant(name)
    _PATCH = pytest.MonkeyPatch()
    mutant.apply(_PATCH)
    config.stash[_KEY] = name


def pytest_report_header(config):
    name = config.stash.get(_KEY, None)
    return [f"mutant applied: {name}"] if name else []


def pytest_unconfigure(config):
    global _PATCH
    if _PATCH is not None:
        _PATCH.undo()
        _PATCH = None


_KEY = pytest.StashKey[str]()
