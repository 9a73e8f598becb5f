"""The package's layout (docs/architecture.md): layers whose imports only go down, no import loop anywhere (also
through imports inside functions), the trainer's files in their order, one docstring per module, functions of at
most 80 lines, and one definition of the shared helpers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bber_utils"
# Bottom to top: a module may import its own layer and the layers below it, never one above.
LAYERS = ["core", "synthesis", "corpora", "features", "augment", "models", "train", "predict", "study", "notebook",
          "cli"]
# The trainer's files, bottom-up: each may import only the files named here (docs/architecture.md).
TRAIN_ALLOWED = {
    "config": set(),
    "distributed": set(),
    "crossfit": set(),
    "metrics": set(),
    "dataset": set(),
    "loss": set(),
    "samplers": {"dataset"},
    "runs": {"distributed", "metrics"},
    "inputs": {"config", "distributed", "dataset"},
    "loop": {"config", "distributed", "runs", "dataset", "samplers", "loss", "metrics"},
    "unimodal": {"config", "distributed", "runs", "loop", "inputs", "crossfit", "dataset"},
    "fusion": {"config", "distributed", "runs", "loop", "inputs", "dataset", "samplers"},
    "parallel_stage1": {"config", "distributed", "unimodal"},
    "stages": {"config", "distributed", "runs", "loop", "inputs", "crossfit", "unimodal", "parallel_stage1", "fusion",
               "dataset", "loss", "metrics"},
    "profiles": {"config"},
    "cli": {"config", "distributed", "stages", "profiles", "text_finetune"},
    "text_finetune": {"metrics"},
}
# Third-party roots a module must not import, even lazily: the pure files stay pure.
FORBIDDEN = {
    "bber_utils.train.loop": {"sklearn"},
    "bber_utils.train.crossfit": {"torch"},
    "bber_utils.train.config": {"torch"},
    "bber_utils.core.errors": {"torch", "pandas"},
    "bber_utils.augment.ls_llm.replies": {"torch"},
}
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``bber_utils`` module an import statement names, anywhere in the file (a name
    imported from a package counts as that package unless it is one of its modules)."""
    out = []
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names if a.name.startswith("bber_utils")]
        elif isinstance(n, ast.ImportFrom) and (n.module or "").startswith("bber_utils"):
            assert n.level == 0, f"{path}: relative import (use bber_utils.…)"
            subs = [f"{n.module}.{a.name}" for a in n.names if f"{n.module}.{a.name}" in MODULES]
            out += [(n.lineno, m) for m in subs] if len(subs) == len(n.names) else [(n.lineno, n.module)]
    return out


def _third_party(path: Path) -> set[str]:
    out = set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Import):
            out |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            out.add(n.module.split(".")[0])
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_is_in_a_layer():
    stray = [m for m in MODULES if m != "bber_utils" and _layer(m) is None]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_imports_never_go_up_a_layer():
    up = []
    for mod, path in MODULES.items():
        me = _layer(mod)
        for line, target in _imports(path):
            them = _layer(target)
            if me and them and LAYERS.index(them) > LAYERS.index(me):
                up.append(f"{path.relative_to(ROOT)}:{line} ({me}) imports {target} ({them})")
    assert not up, "\n".join(up)


def test_no_import_loop():
    """Every import counts, also inside functions: a loop hidden in a function is still a loop."""
    graph = {m: {t for _, t in _imports(p) if t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (loop := visit(t)):
                return loop
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (loop := visit(m)):
            pytest.fail("import loop: " + " -> ".join(loop))


@pytest.mark.parametrize("module", sorted(TRAIN_ALLOWED))
def test_the_trainers_files_import_only_the_files_below_them(module):
    inside = {t.split(".")[2] for _, t in _imports(PACKAGE / "train" / f"{module}.py")
              if t.startswith("bber_utils.train.")}
    assert inside <= TRAIN_ALLOWED[module], f"train/{module}.py imports {sorted(inside - TRAIN_ALLOWED[module])}"


def test_the_trainers_files_are_all_in_its_order():
    assert {p.stem for p in (PACKAGE / "train").glob("*.py")} - {"__init__"} == set(TRAIN_ALLOWED)


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_pure_files_import_no_heavy_library(module):
    found = _third_party(MODULES[module]) & FORBIDDEN[module]
    assert not found, f"{module} imports {sorted(found)}"


def test_every_module_has_a_docstring_and_the_trainers_say_what_they_own():
    missing = [m for m, p in MODULES.items() if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert not missing, f"no module docstring: {missing}"
    for p in sorted((PACKAGE / "train").glob("*.py")):
        doc = ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or ""
        if p.stem != "__init__":
            assert "Owns:" in doc and "must not" in doc.lower(), p.name


def test_no_function_is_longer_than_80_lines():
    long = []
    for m, p in MODULES.items():
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES:
                long.append(f"{p.relative_to(ROOT)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert not long, long


def test_one_device_resolver_and_one_atomic_writer():
    """``core.device.resolve_device`` and ``core.fileio.atomic_write`` are the only definitions of their kind."""
    defs: dict[str, list[str]] = {}
    for m, p in MODULES.items():
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, ast.FunctionDef) and ("resolve_device" in n.name or "atomic_write" in n.name):
                defs.setdefault(n.name, []).append(m)
    assert defs == {"resolve_device": ["bber_utils.core.device"], "atomic_write": ["bber_utils.core.fileio"],
                    "atomic_write_text": ["bber_utils.core.fileio"]}, defs


def test_the_trainers_public_names_are_re_exported():
    import bber_utils.train as T

    for name in ("train", "TrainConfig", "RunResult", "load_run", "Interrupted", "CONTROL_KEYS", "MODEL_KEYS",
                 "AMP_MODES", "load_checkpoint", "save_checkpoint", "register_cli", "config_key_descriptions",
                 "config_keys_help", "optimizer_param_groups", "fold_assignment", "fold_training_rows", "fit",
                 "predict", "evaluate", "resolve_device", "dist_info", "destroy_process_group", "is_main_process",
                 "load_profile", "stage1_key"):
        assert hasattr(T, name), name
    assert set(T.__all__) <= set(dir(T))


def test_tests_find_the_shared_material_in_one_place():
    """``../shared`` is named once (``tests.conftest.SHARED``): a test that builds its own path from its depth
    skips silently once the file moves (four did after the reshape, until this test)."""
    own = [p.relative_to(ROOT) for p in (ROOT / "tests").rglob("*.py")
           if p.name not in ("conftest.py", "test_layout.py") and '"shared"' in p.read_text(encoding="utf-8")]
    assert own == [], f"import SHARED from tests.conftest instead: {own}"
