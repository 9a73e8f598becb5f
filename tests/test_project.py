"""The project's own conventions: packaging, environment, profiles, notebooks, command line, CI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from bber_utils.cli import COMMAND_MODULES, build_parser
from bber_utils.pipeline import list_notebooks

REPO = Path(__file__).resolve().parents[1]
EXPECTED_NOTEBOOKS = ["01_prepare_data", "02_extract_features", "03_sds", "04_tug", "05_ls_llm", "06_train",
                      "07_ablations", "08_results", "09_inference"]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def test_environment_yml_says_what_pyproject_says():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    project = _pyproject()["project"]
    wanted = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    listed = {_norm(r) for r in pip_section if not r.startswith("-e")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    assert any(r.startswith("-e .") for r in pip_section), "environment.yml must install the package itself"
    py = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    assert project["requires-python"] == ">=" + py.split("=")[1]
    makefile_tools = re.search(r"^SYSTEM_TOOLS := (.*)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    for tool in makefile_tools:
        assert tool in deps, f"system tool {tool} from the Makefile is missing in environment.yml"


def test_cuda_extra_is_optional():
    project = _pyproject()["project"]
    cuda = {_norm(r).split(">")[0] for r in project["optional-dependencies"]["cuda"]}
    assert {"mamba-ssm", "causal-conv1d"} <= cuda
    assert not any(_norm(r).startswith(("mamba-ssm", "causal-conv1d")) for r in project["dependencies"])


def test_profiles_share_their_keys():
    keys = {}
    for name in ("smoke", "demo", "paper"):
        keys[name] = set(yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text()))
        assert {"profile", "workdir", "seed"} <= keys[name]
    assert keys["smoke"] == keys["demo"] == keys["paper"], (
        f"demo-only: {keys['demo'] - keys['smoke']}, smoke-only: {keys['smoke'] - keys['demo']}, "
        f"paper differs: {keys['paper'] ^ keys['demo']}")


def test_notebooks_exist_clean_and_parameterised():
    names = [p.stem for p in list_notebooks()]
    assert names == EXPECTED_NOTEBOOKS
    for path in list_notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code, f"{path.name} has no code"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
            f"{path.name} is stored with outputs; clear them (executed copies belong under runs/)")
        assert "parameters" in code[0].get("metadata", {}).get("tags", []), (
            f"{path.name}: the first code cell must be tagged 'parameters'")
        assert nb["cells"][0]["cell_type"] == "markdown", f"{path.name} must open with an explanation"
        params = "".join(code[0]["source"])
        for key in ("profile", "workdir", "seed"):
            assert re.search(rf"^{key}\s*=", params, re.M), f"{path.name}: parameters cell lacks {key}"


def test_cli_lists_every_subcommand():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    expected = {"reproduce", "prepare", "extract", "sds", "tug", "label", "train", "predict"}
    assert expected <= set(sub.choices), f"missing subcommands: {expected - set(sub.choices)}"
    out = subprocess.run([sys.executable, "-m", "bber_utils.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "reproduce" in out.stdout
    assert len(COMMAND_MODULES) == len(set(COMMAND_MODULES))


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme


def test_parameters_cells_are_parseable_by_papermill():
    """papermill skips (and warns about) a parameter line holding more than one '=', e.g. in its comment."""
    from bber_utils.pipeline import declared_parameters

    for path in list_notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        for line in "".join(cell["source"]).splitlines():
            assert line.count("=") <= 1, f"{path.name}: parameter line {line!r} has more than one '='"
        assert {"profile", "workdir", "seed"} <= declared_parameters(path)
