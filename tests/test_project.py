"""The project's own conventions: packaging, environment, profiles, notebooks, command line, CI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from bber_utils.cli import COMMANDS, build_parser
from bber_utils.core import cpu
from bber_utils.notebook.pipeline import list_notebooks

REPO = Path(__file__).resolve().parents[1]
EXPECTED_NOTEBOOKS = ["01_prepare_data", "02_extract_features", "03_sds", "04_tug", "05_ls_llm", "06_train",
                      "07_ablations", "08_results", "09_inference", "10_your_corpus"]


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
    """Each file holds what it changes; merged over the defaults, every profile gives every key."""
    from bber_utils.train.profiles import known_keys, load_profile

    for name in ("smoke", "demo", "paper"):
        assert set(yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())) <= known_keys()
        assert set(load_profile(name)) == known_keys()


def test_notebooks_exist_clean_and_parameterised():
    names = [p.stem for p in list_notebooks()]
    assert names == EXPECTED_NOTEBOOKS
    for path in list_notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code, f"{path.name} has no code"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
            f"{path.name} is stored with outputs; clear them (executed copies belong under runs/)")
        missing_ids = [i for i, c in enumerate(nb["cells"]) if not c.get("id")]
        assert not missing_ids, f"{path.name}: cells {missing_ids} have no id (nbformat warns on every read)"
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
    assert len(COMMANDS) == len(set(COMMANDS))


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme


def test_parameters_cells_are_parseable_by_papermill():
    """papermill skips (and warns about) a parameter line holding more than one '=', e.g. in its comment."""
    from bber_utils.core.papermill import declared_parameters

    for path in list_notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        for line in "".join(cell["source"]).splitlines():
            assert line.count("=") <= 1, f"{path.name}: parameter line {line!r} has more than one '='"
        assert {"profile", "workdir", "seed"} <= declared_parameters(path)


# ------------------------------------------------------------------------------------------ locked environment

def _lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """``{canonical name: (version, [sha256 hashes])}`` of a uv / pip-tools lock with hashes."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m:
            current = re.sub(r"[-_.]+", "-", m.group(1)).lower()
            entries[current] = (m.group(2), [])
        elif current and "--hash=sha256:" in line:
            entries[current][1].append(line.split("--hash=sha256:")[1].split()[0])
    return entries


def _check_lock(lock: Path, requirements: list[str]) -> None:
    from packaging.requirements import Requirement

    entries = _lock_entries(lock)
    assert entries, f"{lock} names no package"
    for name, (version, hashes) in entries.items():
        assert hashes and all(len(h) == 64 for h in hashes), f"{lock}: {name}=={version} has no sha256 hash"
    for spec in requirements:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in entries, f"{lock} lacks {name}, a requirement of pyproject.toml ({spec})"
        assert req.specifier.contains(entries[name][0], prereleases=True), (
            f"{lock}: {name}=={entries[name][0]} is outside pyproject's range {spec}")


def test_cpu_lock_satisfies_pyproject():
    project = _pyproject()["project"]
    lock = REPO / "requirements" / "cpu.lock"
    _check_lock(lock, project["dependencies"] + project["optional-dependencies"]["dev"])
    version = re.search(r"^TORCH_VERSION \?= (\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert _lock_entries(lock)["torch"][0] == f"{version}+cpu", "the CPU lock must pin the CPU build of torch"
    for extra in ("mamba-ssm", "causal-conv1d"):
        assert extra not in _lock_entries(lock), f"the CPU lock must not carry the cuda extra ({extra})"


def test_gpu_lock_satisfies_pyproject_with_the_cuda_extra():
    project = _pyproject()["project"]
    opt = project["optional-dependencies"]
    lock = REPO / "requirements" / "gpu.lock"
    _check_lock(lock, project["dependencies"] + opt["dev"] + opt["cuda"])
    cpu, gpu = _lock_entries(REPO / "requirements" / "cpu.lock"), _lock_entries(lock)
    assert "+" not in gpu["torch"][0] and gpu["torch"][0] == cpu["torch"][0].split("+")[0]
    differ = {n for n in cpu if n in gpu and cpu[n][0] != gpu[n][0]} - {"torch"}
    assert not differ, f"the two locks pin different versions of {sorted(differ)}"


def _make_dry_run(*args: str) -> str:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "-B", "setup", f"VIRTUAL_ENV={REPO}/.nonexistent-venv", *args],
                         cwd=REPO, capture_output=True, text=True)
    return out.stdout + out.stderr


def test_make_installs_from_the_lock_by_default_and_from_ranges_with_lock_0():
    locked = _make_dry_run()
    assert "--require-hashes -r $lock" in locked and "requirements/cpu.lock" in locked
    assert "--no-deps -e ." in locked and "'.[dev]'" not in locked
    ranges = _make_dry_run("LOCK=0")
    assert "-e '.[dev]'" in ranges and "--require-hashes" not in ranges
    assert re.search(r"^lock:", (REPO / "Makefile").read_text(), re.M), "make lock regenerates the locks"


# ---------------------------------------------------------------------------------------------------- Binder

def test_binder_files_agree_with_the_lock_and_the_makefile():
    binder = REPO / "binder"
    tools = re.search(r"^SYSTEM_TOOLS := (.*)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    assert (binder / "apt.txt").read_text().split() == tools
    lines = [ln.strip() for ln in (binder / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert "-r ../requirements/cpu.lock" in lines, "Binder must install the reference lock"
    assert any(ln.startswith("--find-links") and "pytorch" in ln for ln in lines), "torch+cpu is not on PyPI"
    py = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert (binder / "runtime.txt").read_text().strip() == f"python-{py}"
    post = binder / "postBuild"
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    text = post.read_text()
    assert "pip install --no-deps -e ." in text and "ipykernel install" in text and "--name bber" in text
    assert "binder_notebooks.py" in text
    start = binder / "start"
    assert start.stat().st_mode & 0o111, "start must be executable"
    assert 'exec python -m bber_utils.core.cpu "$@"' in start.read_text(), "Lab's kernels must run pinned"
    readme = (REPO / "README.md").read_text()
    assert re.search(r"mybinder\.org/v2/gh/\S+\?urlpath=lab/tree/notebooks", readme), "no Binder badge"


def test_binder_notebooks_get_the_smoke_parameters(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import binder_notebooks

    written = binder_notebooks.prepare("smoke", tmp_path)
    from bber_utils.train.profiles import load_profile

    smoke = load_profile("smoke")
    assert [p.name for p in written] == [p.name for p in list_notebooks()]
    for path in written:
        nb = json.loads(path.read_text())
        cells = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        assert len(cells) == 1, f"{path.name}: no injected parameters cell"
        src = "".join(cells[0]["source"])
        assert 'profile = "smoke"' in src and f'workdir = "{smoke["workdir"]}"' in src
        assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "nothing is run"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BBER_TEST_BINDER") != "1",
                    reason="slow (installs the lock into a fresh venv, minutes, network): set BBER_TEST_BINDER=1")
def test_binder_postbuild_in_a_fresh_venv(tmp_path):
    """What Binder does, without Docker: a fresh venv, binder/requirements.txt, postBuild, a smoke notebook."""
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv}/bin{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    run = lambda *a, **kw: subprocess.run(list(a), cwd=clone, env=env, check=True, **kw)  # noqa: E731
    local = os.environ.get("PIP_FIND_LINKS")
    if local:  # pip's own wheelhouse holds torch's CPU build (as `make` uses it): PyTorch's page may be unreachable
        req = clone / "binder" / "requirements.txt"
        req.write_text(re.sub(r"^--find-links .*$", f"--find-links {local}", req.read_text(), flags=re.M))
    run("python", "-m", "pip", "install", "-q", "-r", "binder/requirements.txt")  # its -r paths: from the file
    run("bash", "binder/postBuild")
    # binder/start wraps the server (and so its kernels): papermill's kernel here runs pinned like Lab's
    run("bash", "binder/start", "python", "-m", "papermill", "--no-progress-bar", "notebooks/01_prepare_data.ipynb",
        str(tmp_path / "01.ipynb"))
    assert (clone / "runs" / "smoke" / "manifests").is_dir()
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    capability = run("bash", "binder/start", "python", "-c", probe, capture_output=True, text=True).stdout.strip()
    assert capability == ("AVX2" if cpu.pinnable()[0] else capability)


def test_progress_bars_come_from_the_package_helper():
    """``tqdm.auto`` saves a widget bar stuck at 0 % in executed notebooks; ``bber_utils.core.progress`` gives a text
    bar there whose last state (100 %, final counts) is what the notebook keeps."""
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "bber_utils").rglob("*.py")
                 if p.name != "progress.py" and "tqdm.auto" in p.read_text(encoding="utf-8")]
    assert not offenders, offenders
