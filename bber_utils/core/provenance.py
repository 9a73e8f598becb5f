"""The environment a result was produced in: written into every run's ``metrics.json``, next to the
``bber reproduce`` summary and into the executed notebooks' metadata; ``bber results --env A B`` compares two.

``environment()`` returns a JSON-able dict: Python, torch (with CUDA / cuDNN and thread counts), espeak-ng and
ffmpeg, CPU and GPU model, the git commit and whether the tree was dirty, the lock file's SHA-256 and every
installed package whose version differs from it (``lock_differences``), the versions of the project's direct
dependencies (``packages``), and the pinned CPU code paths (``cpu_pin``: ``bber_utils.core.cpu.state``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from bber_utils.core import cpu
from bber_utils.core.paths import REPO_ROOT, workdir_path

LOCK_DIR = REPO_ROOT / "requirements"


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    """stdout of ``cmd`` (stripped), or None when it is missing or fails."""
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def tool_version(tool: str) -> str | None:
    """``espeak-ng`` -> ``"1.51"``, ``ffmpeg`` -> ``"5.1.9-0+deb12u1"``; None when the tool is not installed."""
    out = _run([tool, "-version" if tool in ("ffmpeg", "ffprobe") else "--version"])
    if not out:
        return None
    first = out.splitlines()[0]
    m = re.search(r"version\s+(\S+)", first) or re.search(r":\s*(\d[\w.+~-]*)", first)
    return m.group(1) if m else first[:80]


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}``; dirty = tracked files changed since the commit."""
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo) if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a ``name==version`` lock file (hash and comment lines ignored)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if m:
            pins[_canon(m.group(1))] = m.group(2)
    return pins


def installed_versions() -> dict[str, str]:
    """``{canonical name: version}`` of every distribution importable by this interpreter."""
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            out.setdefault(_canon(name), dist.version)
    return out


def lock_for_this_machine() -> Path:
    """``requirements/gpu.lock`` when torch was built with CUDA, else ``requirements/cpu.lock``."""
    cuda = None
    try:
        import torch

        cuda = torch.version.cuda
    except ImportError:
        pass
    return LOCK_DIR / ("gpu.lock" if cuda else "cpu.lock")


def lock_differences(lock: Path, installed: dict[str, str] | None = None) -> dict[str, dict[str, str | None]]:
    """Packages whose installed version is not the locked one: ``{name: {"lock": v, "installed": v or None}}``
    (None: locked but not installed). Installed packages the lock does not name are not listed."""
    installed = installed_versions() if installed is None else installed
    return {name: {"lock": version, "installed": installed.get(name)}
            for name, version in sorted(read_lock(lock).items()) if installed.get(name) != version}


def _direct_dependencies() -> list[str]:
    try:
        project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, ValueError):
        return []
    return [_canon(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in project.get("dependencies", [])]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"version": None}
    info: dict[str, Any] = {
        "version": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads(),
        "gpus": [],
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict[str, Any]:
    """The parts that cannot change within a process (tool versions, packages, lock)."""
    installed = installed_versions()
    lock = lock_for_this_machine()
    lock_info: dict[str, Any] = {"file": str(lock.relative_to(REPO_ROOT)), "sha256": None, "differences": None}
    if lock.exists():
        lock_info["sha256"] = hashlib.sha256(lock.read_bytes()).hexdigest()
        lock_info["differences"] = lock_differences(lock, installed)
    return {
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "espeak_ng": tool_version("espeak-ng"), "ffmpeg": tool_version("ffmpeg"),
        "lock": lock_info,
        "packages": {n: installed.get(n) for n in _direct_dependencies()},
    }


def environment() -> dict[str, Any]:
    """Everything above, with the thread counts and git state as they are now (JSON-able)."""
    env = dict(_static_environment())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    env["cpus_usable"] = usable
    env["threads_env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR")
                          if k in os.environ}
    env["torch"] = _torch_info()
    env["cpu_pin"] = cpu.state()  # the pinned CPU code paths and what torch and numpy chose (after torch loads)
    env["git"] = git_state()
    env["executable"] = sys.executable
    return env


# ------------------------------------------------------------------------------------------- comparing

def flatten(env: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"torch": {"version": "2.13"}}`` -> ``{"torch.version": "2.13"}``; lists joined with ', '."""
    out: dict[str, str] = {}
    for key, value in env.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, list):
            out[name] = ", ".join(map(str, value)) or "-"
        else:
            out[name] = "-" if value is None or value == {} else str(value)
    return out


def run_environment(run: str | os.PathLike, workdir: str | os.PathLike = "runs/demo") -> tuple[str, dict]:
    """The environment recorded by a run: ``run`` is a run name under ``<workdir>/train``, a run folder, a
    ``metrics.json``, an executed notebook or a reproduce ``environment.json``. Raises ValueError naming the
    file when none is recorded."""

    p = Path(run)
    candidates = [p, p / "metrics.json", workdir_path(workdir) / "train" / str(run) / "metrics.json"]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise ValueError(f"no run {run!r}: looked for {', '.join(str(c) for c in candidates[1:])}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from exc
    if path.suffix == ".ipynb":
        doc = doc.get("metadata", {}).get("bber", {})
    env = doc.get("environment") if isinstance(doc, dict) else None
    if env is None and isinstance(doc, dict) and "python" in doc and "torch" in doc:
        env = doc  # an environment.json
    if not isinstance(env, dict):
        raise ValueError(f"{path}: records no environment (a run from before provenance was recorded)")
    return str(path), env


def compare(env_a: dict[str, Any], env_b: dict[str, Any], only_differences: bool = False):
    """Two environments side by side: a DataFrame ``key | a | b | same`` (one row per flattened key)."""

    a, b = flatten(env_a), flatten(env_b)
    rows = [{"key": k, "a": a.get(k, "-"), "b": b.get(k, "-"), "same": a.get(k, "-") == b.get(k, "-")}
            for k in sorted(set(a) | set(b))]
    df = pd.DataFrame(rows, columns=["key", "a", "b", "same"])
    return df[~df["same"]] if only_differences else df
