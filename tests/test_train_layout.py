"""The trainer package's layout (issue 15): each file imports only the files below it, ``loop`` knows nothing of
corpora, folds or stages, the pure files import no torch, no function is longer than 80 lines, and the names the
project uses are still re-exported by ``bber_utils.train``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bber_utils" / "train"

# module -> the package's modules it may import (bottom-up; docs/architecture.md shows the same order)
ALLOWED = {
    "config": set(),
    "distributed": set(),
    "crossfit": set(),
    "runs": {"distributed"},
    "inputs": {"config", "distributed"},
    "loop": {"config", "distributed", "runs"},
    "unimodal": {"config", "distributed", "runs", "loop", "inputs", "crossfit"},
    "fusion": {"config", "distributed", "runs", "loop", "inputs"},
    "stages": {"config", "distributed", "runs", "loop", "inputs", "crossfit", "unimodal", "fusion"},
    "cli": {"config", "distributed", "stages"},
}
# module -> bber_utils packages (or third-party roots) it must not import, even lazily
FORBIDDEN = {
    "loop": {"corpora", "features", "augment", "context", "sklearn"},
    "crossfit": {"torch"},
    "config": {"torch"},
    "runs": {"corpora", "features", "augment"},
    "distributed": {"corpora", "features", "augment", "data", "models"},
}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules of this package, other modules: ``bber_utils`` sub-packages and third-party roots) imported
    anywhere in the file, also inside functions."""
    inside, outside = set(), set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Import):
            for a in n.names:
                parts = a.name.split(".")
                if parts[:2] == ["bber_utils", "train"] and len(parts) > 2:
                    inside.add(parts[2])
                else:
                    outside.add(parts[1] if parts[0] == "bber_utils" and len(parts) > 1 else parts[0])
        elif isinstance(n, ast.ImportFrom):
            mod = (n.module or "").split(".")
            if n.level == 1:
                inside.update(mod[:1] if n.module else {a.name for a in n.names})
            elif n.level == 2:
                outside.add(mod[0])
            elif mod[:2] == ["bber_utils", "train"]:
                inside.update(mod[2:3] or {a.name for a in n.names})
            else:
                outside.add(mod[1] if mod[0] == "bber_utils" and len(mod) > 1 else mod[0])
    return inside, outside


def test_every_module_of_the_package_is_in_the_layout():
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} == set(ALLOWED)


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_go_one_way(module):
    inside, outside = _imports(PACKAGE / f"{module}.py")
    assert inside <= ALLOWED[module], f"{module}.py imports {sorted(inside - ALLOWED[module])}"
    assert not outside & FORBIDDEN.get(module, set()), f"{module}.py imports {sorted(outside & FORBIDDEN[module])}"


def test_every_module_says_what_it_owns_and_must_not_import():
    for p in sorted(PACKAGE.glob("*.py")):
        doc = ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or ""
        assert doc, p.name
        if p.stem != "__init__":
            assert "Owns:" in doc and ("must not" in doc.lower()), p.name


def test_public_names_are_re_exported():
    import bber_utils.train as T

    for name in ("train", "TrainConfig", "RunResult", "load_run", "Interrupted", "CONTROL_KEYS", "MODEL_KEYS",
                 "AMP_MODES", "load_checkpoint", "save_checkpoint", "register_cli", "config_key_descriptions",
                 "config_keys_help", "optimizer_param_groups", "fold_assignment", "fold_training_rows", "fit",
                 "predict", "evaluate", "resolve_device", "dist_info", "destroy_process_group", "is_main_process"):
        assert hasattr(T, name), name
    assert set(T.__all__) <= set(dir(T))


def test_one_device_resolver_and_one_atomic_writer():
    """``device.resolve_device`` and ``fileio.atomic_write`` are the only definitions of their kind."""
    root = PACKAGE.parent
    defs = {}
    for f in root.rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(n, ast.FunctionDef) and ("resolve_device" in n.name or "atomic_write" in n.name):
                defs.setdefault(n.name, []).append(str(f.relative_to(root)))
    assert defs == {"resolve_device": ["device.py"], "atomic_write": ["fileio.py"],
                    "atomic_write_text": ["fileio.py"]}, defs
