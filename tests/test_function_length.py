"""Packages reshaped for newcomers keep short functions: none longer than 80 lines (issue 15's rule; a longer
one must be split into named steps)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGES = ["bber_utils/train", "bber_utils/augment/ls_llm"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_of_the_package_is_longer_than_80_lines(package):
    long = []
    for f in sorted((ROOT / package).glob("*.py")):
        for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80:
                long.append(f"{f.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert not long, long
