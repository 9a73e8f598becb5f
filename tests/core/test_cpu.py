"""bber_utils.core.cpu: the pinned CPU code paths — what is set where, that every entry point sets it before torch
and numpy load, and that it makes the smoke BiFormer's checkpoints the same under two CPU capabilities."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bber_utils.core import cpu

REPO = Path(__file__).resolve().parents[2]
NEEDS_AVX2 = pytest.mark.skipif(not cpu.pinnable()[0], reason=f"nothing to pin here: {cpu.pinnable()[1]}")
PROBE = ("import json, torch; from bber_utils.core import cpu; torch.zeros(1).sum(); "
         "print(json.dumps(cpu.state()))")


@pytest.mark.parametrize("flags, machine, switch, expect", [
    ({"avx2", "fma", "sse2"}, "x86_64", None, "isa"),
    ({"avx", "sse2"}, "x86_64", None, "threads"),           # no AVX2: ATen's avx2 kernels would not run
    ({"avx2", "fma"}, "aarch64", None, "threads"),         # ARM: x86 settings mean nothing
    ({"avx2", "fma"}, "x86_64", "0", "off"),
])
def test_what_is_pinned_depends_on_the_cpu_and_the_switch(monkeypatch, flags, machine, switch, expect):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    monkeypatch.setattr(cpu.platform, "machine", lambda: machine)
    if switch is None:
        monkeypatch.delenv(cpu.SWITCH, raising=False)
    else:
        monkeypatch.setenv(cpu.SWITCH, switch)
    monkeypatch.setenv(cpu.THREADS, "3")
    env = cpu.pinned_environment()
    assert env["MKL_CBWR"] == "COMPATIBLE"  # MKL's AVX2 branch holds on Intel CPUs only
    if expect == "isa":
        assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
        assert env["OPENBLAS_CORETYPE"] == "Haswell" and "NPY_ENABLE_CPU_FEATURES" in env
    else:
        assert "ATEN_CPU_CAPABILITY" not in env and "ONEDNN_MAX_CPU_ISA" not in env
    if expect == "off":
        assert set(env) == {"MKL_CBWR"}
    else:
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "3"


def test_pin_after_torch_loaded_says_so_in_one_warning(monkeypatch):
    import torch  # noqa: F401

    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # so that the pin has something to change
    with pytest.warns(RuntimeWarning, match="loaded before the CPU pin") as caught:
        cpu.pin()
    assert len(caught) == 1 and "\n" not in str(caught[0].message)


@NEEDS_AVX2
def test_the_bber_command_pins_before_numpy_and_torch_load():
    """``bber`` (bber_utils/cli.py, also the study's ``bber train`` children): importing it pins the environment
    before anything loads numpy; torch loaded afterwards runs on AVX2, whatever the environment said."""
    code = "import bber_utils.cli, sys; assert 'torch' not in sys.modules; " + PROBE
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], cwd=REPO, check=True,
                         capture_output=True, text=True, env=_bench().bare_env(ATEN_CPU_CAPABILITY="default"))
    state = json.loads(out.stdout)
    assert state["pinned"] and state["torch_capability"] == "AVX2", state
    assert "X86_V4" not in state.get("numpy_dispatch", []), state  # numpy stops at the AVX2 level too


@NEEDS_AVX2
def test_the_study_children_run_the_pinned_bber_command():
    from bber_utils.study import runner

    assert runner._train_command(Path("p.yaml"))[1:3] == ["-m", "bber_utils.cli"]


@NEEDS_AVX2
def test_a_notebook_kernel_started_by_papermill_runs_pinned(tmp_path, monkeypatch):
    import nbformat

    from bber_utils.core.papermill import run_notebook

    for k in cpu.pinned_environment():
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("out = None", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(PROBE.replace("print(", "open(out, 'w').write("))]
    nbformat.write(nb, str(tmp_path / "probe.ipynb"))
    run_notebook(tmp_path / "probe.ipynb", tmp_path / "probe.out.ipynb", {"out": str(tmp_path / "state.json")})
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["pinned"] and state["torch_capability"] == "AVX2", state


# ------------------------------------------------------------------------------- the proof on the smoke BiFormer

def _bench():
    """benchmarks/cpu_pin.py (its smoke work folder and training helpers)."""
    spec = importlib.util.spec_from_file_location("cpu_pin_bench", REPO / "benchmarks" / "cpu_pin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@NEEDS_AVX2
@pytest.mark.slow
def test_the_smoke_biformer_is_the_same_under_two_cpu_capabilities_only_when_pinned(tmp_path):
    """Two CPUs simulated on this one: ATen's kernels for a CPU without SIMD (``default``) and for AVX2, each
    training the smoke BiFormer (stage 1's audio and text encoders, then the fusion model) in a child process.
    Pinned (the default), both take the AVX2 paths and every tensor of every checkpoint is identical; with
    ``BBER_CPU_PIN=0`` the same two runs differ (by about 1e-6 in stage 1 and 1e-4 in the fusion model)."""
    b = _bench()
    base = b.prepare_smoke(tmp_path / "base", b.bare_env())
    pinned = [b.train_copy(base, f"pin-{c}", b.bare_env(ATEN_CPU_CAPABILITY=c)) for c in ("default", "avx2")]
    assert set(b.max_differences(*pinned).values()) == {0.0}
    free = [b.train_copy(base, f"free-{c}", b.bare_env(ATEN_CPU_CAPABILITY=c, BBER_CPU_PIN="0"))
            for c in ("default", "avx2")]
    assert max(b.max_differences(*free).values()) > 0
