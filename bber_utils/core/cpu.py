"""The CPU code paths every result is computed on: ``pin()`` sets them, before torch (and numpy) load, so that a
seed gives the same bytes on every x86-64 CPU with AVX2 (Intel since Haswell, 2013; AMD since Zen, 2017), whatever
the machine's own best instruction set. docs/environment.md says what is pinned, what cannot be, and what to
expect elsewhere.

What ``pin()`` sets (``PINNED``; each library reads its variable once, when it loads or first computes):

* ATen (torch's CPU kernels): ``ATEN_CPU_CAPABILITY=avx2`` — otherwise AVX-512 machines take other kernels
  (other reduction orders and exp/log approximations) than AVX2 machines;
* oneDNN (torch's convolutions): ``ONEDNN_MAX_CPU_ISA=AVX2`` (and its old name ``DNNL_MAX_CPU_ISA``);
* MKL (torch's matrix products and FFTs): ``MKL_CBWR=COMPATIBLE`` — MKL's ``AVX2`` branch holds on Intel CPUs
  only (elsewhere MKL falls back to its automatic dispatch), the ``COMPATIBLE`` branch on every x86-64 CPU;
* numpy's dispatched loops: ``NPY_ENABLE_CPU_FEATURES`` = the AVX2 level, and OpenBLAS (numpy's and scipy's
  matrix products): ``OPENBLAS_CORETYPE=Haswell``;
* the thread counts: ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` = ``BBER_CPU_THREADS``
  (default 2; a reduction split over another number of threads adds in another order). Training itself runs
  on ``num_threads`` torch threads (``TrainConfig``).

``BBER_CPU_PIN=0`` leaves the machine's own code paths (faster on AVX-512 machines; numbers then differ from the
table's in the last bits, which early stopping can amplify). A CPU without AVX2 and FMA, or not x86-64 (ARM),
keeps its own paths: ``pin()`` then sets only ``MKL_CBWR`` and the thread counts, and ``state()`` says why.

Entry points call ``pin()`` first: ``bber`` (``bber_utils/cli.py``, also the study's ``bber train`` children),
the notebook kernels papermill starts (``core.papermill.run_notebook``; kernels inherit the environment), the
test suite (``tests/conftest.py``), and ``python -m bber_utils.core.cpu CMD`` runs any command pinned
(``make lab``, Binder's ``binder/start``: JupyterLab's kernels inherit the pinned environment).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import warnings
from importlib import metadata

SWITCH = "BBER_CPU_PIN"        # 0 / off / false / no: keep the machine's own code paths
THREADS = "BBER_CPU_THREADS"   # threads of the CPU libraries (OpenMP, MKL, OpenBLAS)
DEFAULT_THREADS = 2
ISA = "avx2"
REQUIRED_FLAGS = ("avx2", "fma")   # what ATen's AVX2 kernels are compiled for
# numpy >= 2.4 names its x86 levels (X86_V3 = AVX2, FMA3, BMI...); older numpy names each feature
_NUMPY_AVX2_OLD = "SSE SSE2 SSE3 SSSE3 SSE41 POPCNT SSE42 AVX F16C FMA3 AVX2"


def _numpy_features() -> str:
    """The value of ``NPY_ENABLE_CPU_FEATURES`` that stops numpy at AVX2 (read from its version, not importing
    it: numpy reads the variable when it loads)."""
    try:
        major, minor = (int(x) for x in re.findall(r"\d+", metadata.version("numpy"))[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return "X86_V3"
    return "X86_V3" if (major, minor) >= (2, 4) else _NUMPY_AVX2_OLD


def threads() -> int:
    """``BBER_CPU_THREADS`` (default 2): the thread count of the CPU libraries."""
    try:
        return max(1, int(os.environ.get(THREADS, DEFAULT_THREADS)))
    except ValueError:
        return DEFAULT_THREADS


def thread_settings() -> dict[str, str]:
    n = str(threads())
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def isa_settings() -> dict[str, str]:
    """The instruction-set variables ``pin()`` sets on an x86-64 CPU with AVX2."""
    return {
        "ATEN_CPU_CAPABILITY": ISA,
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "DNNL_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "COMPATIBLE",
        "NPY_ENABLE_CPU_FEATURES": _numpy_features(),
        "OPENBLAS_CORETYPE": "Haswell",
    }


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (lower case; Linux ``/proc/cpuinfo``, macOS ``sysctl``), None when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                 capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return {f.lower() for f in out.split()} or None
    return None


def switched_off() -> bool:
    """``BBER_CPU_PIN`` is 0 / off / false / no."""
    return os.environ.get(SWITCH, "1").strip().lower() in ("0", "off", "false", "no")


def pinnable() -> tuple[bool, str]:
    """``(True, "")`` on an x86-64 CPU with AVX2 and FMA, the pin not switched off; else ``(False, why)``."""
    if switched_off():
        return False, f"{SWITCH}={os.environ[SWITCH]}: the machine's own code paths"
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return False, f"not an x86-64 CPU ({machine}): its own code paths"
    flags = cpu_flags()
    if flags is None:
        return False, "the CPU's features are unknown: its own code paths"
    missing = [f for f in REQUIRED_FLAGS if f not in flags]
    if missing:
        return False, f"the CPU lacks {', '.join(missing)}: its own code paths"
    return True, ""


def pinned_environment() -> dict[str, str]:
    """The variables ``pin()`` sets here: the instruction sets where pinnable and the thread counts; switched off,
    only ``MKL_CBWR`` (kept if set, else COMPATIBLE: the same maths for a seed on this machine, as before)."""
    if switched_off():
        return {"MKL_CBWR": os.environ.get("MKL_CBWR", "COMPATIBLE")}
    ok, _ = pinnable()
    return {**(isa_settings() if ok else {"MKL_CBWR": "COMPATIBLE"}), **thread_settings()}


def pin(warn: bool = True) -> dict[str, str]:
    """Set the pinned variables in ``os.environ`` (children inherit them) and return them. Called by every entry
    point before torch and numpy load; if one of them already has, says so in one warning line (this process
    keeps the code paths it started with; its children are pinned) unless ``warn`` is False (a process that only
    starts children, such as papermill's driver)."""
    env = pinned_environment()
    late = [m for m in ("torch", "numpy") if m in sys.modules]
    changed = [k for k, v in env.items() if os.environ.get(k) != v]
    os.environ.update(env)
    if warn and late and changed:
        warnings.warn(f"bber: {' and '.join(late)} loaded before the CPU pin: this process keeps the machine's own "
                      f"code paths (its children are pinned); start it with `python -m bber_utils.core.cpu ...`",
                      RuntimeWarning, stacklevel=2)
    return env


def state() -> dict[str, object]:
    """What this process runs on (JSON-able, for the provenance): whether the pin applies here (``pinnable``, and
    why not), whether this process runs pinned (``pinned``: the variables set, and torch on AVX2 when loaded), the
    variables, and what torch and numpy chose (when loaded)."""
    ok, why = pinnable()
    names = [*isa_settings(), *thread_settings(), SWITCH, THREADS]
    out: dict[str, object] = {"pinnable": ok, "reason": why or None,
                              "variables": {k: os.environ[k] for k in names if k in os.environ}}
    pinned = ok and all(os.environ.get(k) == v for k, v in pinned_environment().items())
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch_capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch_threads"] = [torch.get_num_threads(), torch.get_num_interop_threads()]
        pinned = pinned and out["torch_capability"] == ISA.upper()
    if "numpy" in sys.modules:
        try:
            from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

            out["numpy_dispatch"] = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
        except ImportError:
            pass
    out["pinned"] = pinned
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bber_utils.core.cpu [CMD ...]``: run CMD with the pinned environment (print it without CMD)."""
    argv = sys.argv[1:] if argv is None else argv
    env = pin()
    if not argv:
        ok, why = pinnable()
        print("\n".join(f"{k}={v}" for k, v in env.items()) + ("" if ok else f"\n# not pinned: {why}"))
        return 0
    os.execvp(argv[0], argv)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
