"""Fused CPU kernels of the selective scan (numba): the whole recurrence of one layer in one pass over memory.

The chunked scan of :mod:`bber_utils.models.mamba` is built from torch ops, and every one of them is a pass over a
(B, T, ED, N) tensor: about fifteen per forward+backward (decays, inputs, states, adjoints, four reductions).
Here each job owns one batch row and a block of ``BLOCK`` channels and runs the recurrence with its state in a
small buffer, so nothing of size (B, L, ED, N) is ever written; the decays exp(Δ A) are computed where they are
used, by :func:`exp32`, a polynomial the compiler vectorises (torch's exp is a separate pass).

Layout: time on dim 1 as in mamba-minimal; states and A are kept channels-last, (N, ED), so that the innermost
loop of every kernel runs over contiguous channels and vectorises. Every array an inner loop touches is a
contiguous 1-D view (``x[b, t, e0:e1]``) or a job-local buffer: numba types a view sliced in two dims as
non-contiguous, and a loop over one does not vectorise (the backward took 40 instead of 28 ms per layer).

Bits. The kernels are compiled without fast-math (no reassociation, no fused multiply-add contraction), so every
value is the same IEEE operation in the same order on any x86-64 CPU and any vector width (the test compiles
them for a generic x86-64 and for this machine and compares). Reductions over channels (gC, gB) add 8 partial
sums pairwise in a fixed order; every job writes its own slice, and torch sums the jobs' parts over dims whose
size does not depend on the thread count: the same bits on one thread or many.

The first use compiles the kernels (a few seconds) and caches them beside this file (or in numba's user cache
when the package folder is read-only; ``NUMBA_CACHE_DIR`` overrides); later processes load them in well under a
second. A cache file numba cannot read (truncated, garbage) is a miss with one warning: the kernel is compiled
again and its files rewritten (:class:`_TolerantCache`).
"""

from __future__ import annotations

import contextlib
import math
import types as types_module
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic, overload

BLOCK = 64  # channels per job: a job's buffers, (chunk + 1) × N × BLOCK floats, stay in the L2 cache

_JIT = dict(cache=True, error_model="numpy", nogil=True)  # never fastmath: see "Bits" above


# ----------------------------------------------------------------------------------------------------------
# exp, vectorisable
# ----------------------------------------------------------------------------------------------------------


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 ``bits`` (a bit cast, as C's memcpy)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 = HI + LO, HI exact in 9 bits
# exp(r) on |r| <= ln2/2: the degree-6 Chebyshev fit of exp on that interval, in monomial form (our own fit)
_P0, _P1, _P2, _P3 = np.float32(1.0), np.float32(1.00000004), np.float32(0.50000001), np.float32(0.16666415)
_P4, _P5, _P6 = np.float32(0.04166622), np.float32(0.00837513), np.float32(0.00139486)
_LO, _HI = np.float32(-87.0), np.float32(88.0)  # below: 0 (the true value is < 1.7e-38); above: inf


def _exp32(x):
    """exp of a float32 within 1.37 ulp (tests/models/test_scan_kernels.py): x = k ln2 + r, exp = 2^k p(r)."""
    xc = min(max(x, _LO), _HI)
    k = np.floor(xc * _LOG2E + np.float32(0.5))
    r = xc - k * _LN2_HI - k * _LN2_LO
    p = (((((_P6 * r + _P5) * r + _P4) * r + _P3) * r + _P2) * r + _P1) * r + _P0
    v = p * _float32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))
    if x < _LO:
        v = np.float32(0.0)
    elif x > _HI:
        v = np.float32(np.inf)
    return v


exp32 = numba.njit(inline="always", **_JIT)(_exp32)


def _exp(x):
    """exp in the kernels: :func:`exp32` for float32, libm's for float64 (the tests' precision)."""
    return math.exp(x)


@overload(_exp, inline="always")
def _exp_overload(x):
    if x == types.float32:
        return lambda x: exp32(x)
    return lambda x: math.exp(x)


@numba.njit(**_JIT)
def exp32_array(x, out):
    """``out[i] = exp32(x[i])`` over 1-D float32 arrays (for the tests and the benchmark)."""
    for i in range(x.shape[0]):
        out[i] = exp32(x[i])


# ----------------------------------------------------------------------------------------------------------
# One time step over a block of channels (the innermost, vectorised loops)
# ----------------------------------------------------------------------------------------------------------


def _forward_step(y, h, delta, a, du, b, c):
    """h ← exp(Δ a) h + Δu b and y += c h, over the channels: y, h, delta, a, du (w,), b and c scalars."""
    for e in range(h.shape[0]):
        hv = _exp(delta[e] * a[e]) * h[e] + du[e] * b
        h[e] = hv
        y[e] += hv * c


def _recompute_step(decay, h, h_prev, delta, a, du, b):
    """decay = exp(Δ a), h = decay h_prev + Δu b (the forward's values, bit for bit), over the channels."""
    for e in range(h.shape[0]):
        d = _exp(delta[e] * a[e])
        decay[e] = d
        h[e] = d * h_prev[e] + du[e] * b


def _adjoint_step(g, q, carry, gy, c, decay, h_prev):
    """g = c gy + carry (the adjoint of h_t), q = g decay h_prev, and the carry for t-1: decay g."""
    for e in range(g.shape[0]):
        gv = gy[e] * c + carry[e]
        g[e] = gv
        carry[e] = decay[e] * gv
        q[e] = gv * (decay[e] * h_prev[e])


def _accumulate(sum_gb, sum_qa, ga, g, q, b, a, delta):
    """Σ_n g b and Σ_n q a (for gu and gΔ), and gA += q Δ, over the channels."""
    for e in range(g.shape[0]):
        sum_gb[e] += g[e] * b
        sum_qa[e] += q[e] * a[e]
        ga[e] += q[e] * delta[e]


def _input_grads(gu, gdelta, delta, u, sum_gb, sum_qa):
    """gu = Δ Σ_n g b and gΔ = Σ_n q a + u Σ_n g b, over the channels."""
    for e in range(gu.shape[0]):
        gu[e] = delta[e] * sum_gb[e]
        gdelta[e] = sum_qa[e] + u[e] * sum_gb[e]


def _two_dots(a, x, c, z):
    """(Σ a x, Σ c z) over the channels, each as 8 partial sums (one vector register) added pairwise in a fixed
    order."""
    w = a.shape[0]
    zero = a[0] * 0
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = zero
    r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = zero
    full = w - w % 8
    for e in range(0, full, 8):
        p0 += a[e + 0] * x[e + 0]
        p1 += a[e + 1] * x[e + 1]
        p2 += a[e + 2] * x[e + 2]
        p3 += a[e + 3] * x[e + 3]
        p4 += a[e + 4] * x[e + 4]
        p5 += a[e + 5] * x[e + 5]
        p6 += a[e + 6] * x[e + 6]
        p7 += a[e + 7] * x[e + 7]
        r0 += c[e + 0] * z[e + 0]
        r1 += c[e + 1] * z[e + 1]
        r2 += c[e + 2] * z[e + 2]
        r3 += c[e + 3] * z[e + 3]
        r4 += c[e + 4] * z[e + 4]
        r5 += c[e + 5] * z[e + 5]
        r6 += c[e + 6] * z[e + 6]
        r7 += c[e + 7] * z[e + 7]
    for e in range(full, w):
        p0 += a[e] * x[e]
        r0 += c[e] * z[e]
    return ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)), ((r0 + r4) + (r2 + r6)) + ((r1 + r5) + (r3 + r7))


_forward_step, _recompute_step, _adjoint_step, _accumulate, _input_grads, _two_dots = (
    numba.njit(inline="always", **_JIT)(f)
    for f in (_forward_step, _recompute_step, _adjoint_step, _accumulate, _input_grads, _two_dots)
)


# ----------------------------------------------------------------------------------------------------------
# The kernels: one job per (batch row, block of channels)
# ----------------------------------------------------------------------------------------------------------


def _forward(delta, du, At, B, C, y, starts, chunk):
    """y = C·h over the whole sequence, h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t.

    delta, du (= Δ u): (B, L, ED); At: (N, ED); B, C: (B, L, N); y: (B, L, ED) out; starts: (n_chunks, B, N, ED)
    out, the state before each chunk of ``chunk`` steps (for the backward), or shape (0, ...) to keep none."""
    batch, length, ed = du.shape
    n = At.shape[0]
    blocks = (ed + BLOCK - 1) // BLOCK
    keep = starts.shape[0] > 0
    for job in prange(batch * blocks):
        b, e0 = job // blocks, (job % blocks) * BLOCK
        e1 = min(e0 + BLOCK, ed)
        h = np.zeros((n, e1 - e0), du.dtype)
        for t in range(length):
            if keep and t % chunk == 0:
                starts[t // chunk, b, :, e0:e1] = h
            yt = y[b, t, e0:e1]
            yt[:] = 0
            for i in range(n):
                _forward_step(yt, h[i], delta[b, t, e0:e1], At[i, e0:e1], du[b, t, e0:e1], B[b, t, i], C[b, t, i])


def _backward(delta, du, u, At, B, C, gy, starts, chunk, gu, gdelta, gA, gB, gC):
    """Gradients of :func:`_forward` for the output gradient gy (B, L, ED), chunk by chunk from the last.

    Per chunk the states are recomputed from its start state (with the decays), then the adjoint g runs
    backwards with the carry from the chunk after it; gu, gdelta: (B, L, ED) out; gA: (B, N, ED) out, per batch
    row; gB, gC: (blocks, B, L, N) out, per block of channels. The caller sums the per-row and per-block parts."""
    batch, length, ed = du.shape
    n = At.shape[0]
    blocks = (ed + BLOCK - 1) // BLOCK
    n_chunks = starts.shape[0]
    for job in prange(batch * blocks):
        b, blk = job // blocks, job % blocks
        e0 = blk * BLOCK
        e1 = min(e0 + BLOCK, ed)
        w = e1 - e0
        hs = np.empty((chunk + 1, n, w), du.dtype)  # hs[0]: the chunk's start state, hs[t + 1] = h_t
        decays = np.empty((chunk, n, w), du.dtype)
        carry = np.zeros((n, w), du.dtype)
        g, q = np.empty(w, du.dtype), np.empty(w, du.dtype)
        sum_gb, sum_qa = np.empty(w, du.dtype), np.empty(w, du.dtype)
        ga = np.zeros((n, w), du.dtype)  # this job's gA, contiguous: a view of gA would not vectorise
        for c in range(n_chunks - 1, -1, -1):
            s = c * chunk
            steps = min(chunk, length - s)
            hs[0] = starts[c, b, :, e0:e1]
            for t in range(steps):
                for i in range(n):
                    _recompute_step(decays[t, i], hs[t + 1, i], hs[t, i], delta[b, s + t, e0:e1], At[i, e0:e1],
                                    du[b, s + t, e0:e1], B[b, s + t, i])
            for t in range(steps - 1, -1, -1):
                tt = s + t
                gyt, dut, dt = gy[b, tt, e0:e1], du[b, tt, e0:e1], delta[b, tt, e0:e1]
                sum_gb[:] = 0
                sum_qa[:] = 0
                for i in range(n):
                    _adjoint_step(g, q, carry[i], gyt, C[b, tt, i], decays[t, i], hs[t, i])
                    _accumulate(sum_gb, sum_qa, ga[i], g, q, B[b, tt, i], At[i, e0:e1], dt)
                    gC[blk, b, tt, i], gB[blk, b, tt, i] = _two_dots(hs[t + 1, i], gyt, g, dut)
                _input_grads(gu[b, tt, e0:e1], gdelta[b, tt, e0:e1], dt, u[b, tt, e0:e1], sum_gb, sum_qa)
        gA[b, :, e0:e1] = ga


def _named(fn, suffix):
    """A copy of ``fn`` under another name: numba's disk cache tells functions apart by name, not by the options
    they were compiled with, so the serial and parallel builds of one function need two names."""
    copy = types_module.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + suffix
    return copy


forward_serial = numba.njit(**_JIT)(_named(_forward, "_serial"))
backward_serial = numba.njit(**_JIT)(_named(_backward, "_serial"))
forward_parallel = numba.njit(parallel=True, **_JIT)(_named(_forward, "_parallel"))
backward_parallel = numba.njit(parallel=True, **_JIT)(_named(_backward, "_parallel"))


class _TolerantCache:
    """numba's disk cache of one kernel, where a file that cannot be read is a miss (with one warning line) instead
    of an exception from inside numba, and one that cannot be written leaves the kernel compiled but not cached.

    numba unpickles the index and data files with no guard: a truncated or foreign file raised from its caching
    module at the first call of the kernel. After a failed load the index is emptied (``flush``), so that the
    compile that follows writes the kernel's files afresh."""

    def __init__(self, cache):
        self._cache = cache

    def load_overload(self, sig, target_context):
        try:
            return self._cache.load_overload(sig, target_context)
        except Exception as exc:  # unpickling errors of every kind, a data file of another kernel, ...
            name = getattr(getattr(self._cache, "_py_func", None), "__name__", "a kernel")
            warnings.warn(f"numba's cache of {name} in {self._cache.cache_path} could not be read "
                          f"({type(exc).__name__}: {exc}); compiled again", RuntimeWarning, stacklevel=2)
            with contextlib.suppress(Exception):  # a read-only cache: compiled in every process
                self._cache.flush()
            return None

    def save_overload(self, sig, data):
        with contextlib.suppress(Exception):  # compiled all the same; a later process compiles it again
            self._cache.save_overload(sig, data)

    def __getattr__(self, name):
        return getattr(self._cache, name)


for _kernel in (forward_serial, backward_serial, forward_parallel, backward_parallel, exp32_array):
    if hasattr(_kernel, "_cache") and hasattr(_kernel._cache, "load_overload"):  # numba's private attribute
        _kernel._cache = _TolerantCache(_kernel._cache)
