"""Rewrite environment.yml from pyproject.toml (run after changing dependencies; tests check they agree)."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
py = project["requires-python"].removeprefix(">=")
pip = project["dependencies"] + project["optional-dependencies"]["dev"]
lines = [
    "# Conda environment for BBER (conda-forge). Generated from pyproject.toml by tools/sync_environment.py;",
    "# tests/test_project.py checks that the two agree.",
    "#   conda env create -f environment.yml && conda activate bber",
    "# On a GPU machine add the CUDA kernels afterwards:  pip install -e '.[cuda]'",
    "name: bber",
    "channels:",
    "  - conda-forge",
    "dependencies:",
    f"  - python={py}",
    "  - espeak-ng",
    "  - ffmpeg",
    "  - pip",
    "  - pip:",
    *[f'      - "{r}"' for r in pip],
    "      - -e .[dev]",
]
(REPO / "environment.yml").write_text("\n".join(lines) + "\n")
print(f"environment.yml: {len(pip)} pip requirements")
