"""The fused CPU scan (models/scan_kernels.py): its exp, and the same bits on any thread count and any x86-64 target.

Its agreement with the sequential reference (forward and every gradient) is in test_mamba.py, with the other forms.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bber_utils.models import mamba, scan_kernels

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _exp32(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float32)
    out = np.empty_like(x)
    scan_kernels.exp32_array(x, out)
    return out


def _ulps(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Distance of ``got`` from the exact exp(x), in units of the float32 spacing at the exact value."""
    exact = np.exp(x.astype(np.float64))
    return np.abs(got.astype(np.float64) - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-87.0, 88.0, width=32), min_size=1, max_size=64))
def test_exp32_is_within_1_37_ulp_of_exp(values):
    x = np.asarray(values, dtype=np.float32)
    assert _ulps(_exp32(x), x).max() <= 1.37


def test_exp32_over_the_decays_range_and_at_its_edges():
    """Every decay exp(Δ A) of a scan is exp of a value <= 0: a dense sweep of [-87, 0] stays within 1.37 ulp;
    below -87 it is 0 (the exact value is under 1.7e-38), above 88 inf, NaN stays NaN. The two worst errors of
    an exhaustive run over every float32 in [-87, 88] (36 s, too long for the suite) are 1.356 ulp at
    -16.2885 and 1.362 ulp at 5.20073: the bound holds there (1.3, the bound claimed before, did not)."""
    x = np.linspace(-87.0, 0.0, 200_001, dtype=np.float32)
    assert _ulps(_exp32(x), x).max() <= 1.37
    worst = np.array([0xC1824ED9, 0x40A66C69], dtype=np.uint32).view(np.float32)
    assert (_ulps(_exp32(worst), worst) > 1.35).all() and _ulps(_exp32(worst), worst).max() <= 1.37
    assert _exp32([0.0, -0.0]).tolist() == [1.0, 1.0]
    assert _exp32([-87.5, -1e4, -np.inf]).tolist() == [0.0, 0.0, 0.0]
    assert _exp32([88.5, 1e4, np.inf]).tolist() == [np.inf] * 3
    assert np.isnan(_exp32([np.nan])).all()


def _fused_outputs(threads: int, dtype=torch.float32):
    """y and every gradient of the fused scan on (B, L, ED, N) = (3, 41, 150, 16): three blocks of channels, the
    last one partial, and a length that is not a multiple of the chunk."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 41, 150, generator=g, dtype=dtype)
    delta = torch.nn.functional.softplus(torch.randn(3, 41, 150, generator=g, dtype=dtype) - 1)
    A = -torch.exp(torch.randn(150, 16, generator=g, dtype=dtype))
    B, C = torch.randn(3, 41, 16, generator=g, dtype=dtype), torch.randn(3, 41, 16, generator=g, dtype=dtype)
    inputs = [t.requires_grad_() for t in (u, delta, A, B, C)]
    gy = torch.randn(3, 41, 150, generator=g, dtype=dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = mamba._scan_fused(*inputs)
        return [y.detach(), *torch.autograd.grad(y, inputs, gy)]
    finally:
        torch.set_num_threads(before)


def test_fused_scan_gives_the_same_bits_on_one_thread_and_on_two(monkeypatch):
    """One thread runs the serial build, two the parallel one (the spies check which ran); every output and
    gradient is bit for bit the same."""
    ran = []
    for name in ("forward_serial", "forward_parallel", "backward_serial", "backward_parallel"):
        real = getattr(scan_kernels, name)
        monkeypatch.setattr(scan_kernels, name, lambda *a, _r=real, _n=name: ran.append(_n) or _r(*a))
    one = _fused_outputs(1)
    assert ran == ["forward_serial", "backward_serial"]
    two = _fused_outputs(2)
    assert ran[2:] == ["forward_parallel", "backward_parallel"]
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_fused_scan_forward_only_keeps_no_states():
    """Without a gradient the forward keeps no chunk states (nothing is saved for a backward)."""
    g = torch.Generator().manual_seed(1)
    u, delta = torch.randn(2, 20, 64, generator=g), torch.rand(2, 20, 64, generator=g) * 0.1
    A, B, C = -torch.rand(64, 8, generator=g), torch.randn(2, 20, 8, generator=g), torch.randn(2, 20, 8, generator=g)
    seen = []
    real = scan_kernels.forward_serial
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scan_kernels, "forward_serial", lambda *a: seen.append(a[6].shape) or real(*a))
        mp.setattr(torch, "get_num_threads", lambda: 1)
        with torch.no_grad():
            y = mamba._scan_fused(u, delta, A, B, C)
    assert seen == [(0, 2, 8, 64)]
    torch.testing.assert_close(y, mamba._scan_sequential(u, delta, A, B, C), atol=1e-5, rtol=1e-4)


_ON_A_TARGET = textwrap.dedent("""
    import sys, numpy as np, torch
    sys.path.insert(0, sys.argv[1])
    from tests.models.test_scan_kernels import _fused_outputs
    np.savez(sys.argv[2], *[t.numpy() for t in _fused_outputs(1)])
""")


def test_fused_scan_gives_the_same_bits_compiled_for_a_generic_x86_64_and_for_this_cpu(tmp_path):
    """The kernels are compiled for the CPU they run on (AVX-512 here, AVX2 on most machines). Compiled for a
    generic x86-64 (SSE2, no FMA) in a fresh process with its own cache, they give the same bits as here: no
    fast-math, so no target-dependent contraction or reassociation (the test fails with ``fastmath=True``)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"an x86-64 check; this machine is {platform.machine()}")
    here = _fused_outputs(1)
    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "generic.npz"
    subprocess.run([sys.executable, "-c", _ON_A_TARGET, REPO, str(out)], env=env, check=True, timeout=600)
    generic = np.load(out)
    for i, a in enumerate(here):
        assert np.array_equal(a.numpy(), generic[f"arr_{i}"]), f"output {i} differs between targets"


_CACHED_RUN = textwrap.dedent("""
    import sys, warnings, numpy as np
    sys.path.insert(0, sys.argv[1])
    from bber_utils.models import scan_kernels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = np.empty(3, np.float32)
        scan_kernels.exp32_array(np.zeros(3, np.float32), out)
    assert out.tolist() == [1.0] * 3
    print(scan_kernels.exp32_array.stats.cache_hits.total(), *[str(w.message) for w in caught], sep="\\n")
""")


def test_a_corrupt_kernel_cache_is_compiled_again_and_rewritten(tmp_path):
    """A cache file that numba cannot unpickle (a truncated copy, garbage) is a cache miss with one warning line,
    not a traceback from inside numba's caching module; the kernel is compiled again and its files rewritten, so
    the next process loads them. Shown on the smallest kernel; every kernel of the module has the same guard."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run():
        done = subprocess.run([sys.executable, "-c", _CACHED_RUN, REPO], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        hits, *warned = done.stdout.strip().splitlines()
        return int(hits), warned

    assert run() == (0, [])  # compiled and cached
    files = sorted((tmp_path / "cache").rglob("*exp32_array*.nb[ic]"))
    assert {f.suffix for f in files} == {".nbi", ".nbc"}
    for i, f in enumerate(files):
        f.write_bytes(f.read_bytes()[:20] if i % 2 else b"garbage")
    hits, warned = run()
    assert hits == 0 and len(warned) == 1 and "compiled again" in warned[0], warned
    assert run() == (1, [])  # the rewritten files load
    for kernel in (scan_kernels.forward_serial, scan_kernels.forward_parallel, scan_kernels.backward_serial,
                   scan_kernels.backward_parallel, scan_kernels.exp32_array):
        assert isinstance(kernel._cache, scan_kernels._TolerantCache)


def test_a_scan_called_while_another_thread_runs_the_parallel_kernel_runs_the_serial_one(monkeypatch):
    """One parallel kernel at a time per process: numba's workqueue threading layer (its fallback where neither
    OpenMP nor TBB loads) aborts the whole process when two threads launch parallel kernels at once (seen with
    ``NUMBA_THREADING_LAYER=workqueue`` and three threads training). A scan that starts while another thread is
    in the parallel kernel runs the serial build instead: the same bits, no abort."""
    import threading

    ran, inner = [], []
    real_parallel, real_serial = scan_kernels.forward_parallel, scan_kernels.forward_serial
    args = [torch.randn(2, 5, 70), torch.rand(2, 5, 70), -torch.rand(70, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)]

    def other_thread_scans():
        inner.append(mamba._scan_fused(*args))

    def parallel(*a):
        ran.append(("parallel", threading.current_thread().name))
        if len(ran) == 1:  # the first call: another thread scans while this one is in the parallel kernel
            thread = threading.Thread(target=other_thread_scans, name="other")
            thread.start()
            thread.join()
        return real_parallel(*a)

    monkeypatch.setattr(scan_kernels, "forward_parallel", parallel)
    monkeypatch.setattr(scan_kernels, "forward_serial", lambda *a: ran.append(("serial", "other")) or real_serial(*a))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    y = mamba._scan_fused(*args)
    assert ran == [("parallel", "MainThread"), ("serial", "other")]
    assert torch.equal(inner[0], y)
