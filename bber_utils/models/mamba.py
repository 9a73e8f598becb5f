"""Mamba (S6) encoder: the selective state-space block of Gu & Dao (2023) and a pre-norm residual stack.

One block, for an input ``x`` of shape (B, L, D) and ``ED = expand * D`` inner channels::

    x, z  = split(in_proj(x))                       # (B, L, ED) each
    x     = SiLU(causal depthwise conv_k(x))        # (B, L, ED)
    Δ     = softplus(dt_proj(x_proj_Δ(x)))          # (B, L, ED), low-rank, dt bias init as in Mamba
    B, C  = x_proj_B(x), x_proj_C(x)                # (B, L, N) each
    A     = -exp(A_log)                             # (ED, N), S4D-real init A = -[1..N]
    h_t   = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t      # zero-order hold, selective scan
    y_t   = C_t · h_t + D ⊙ x_t                     # D skip
    out   = out_proj(y ⊙ SiLU(z))

Where the reference code differs (reference notes §3.2, §11.8) and why we do not copy it: it discretises with
``exp(A)·Δ`` instead of ``exp(Δ·A)`` (so Ā can exceed 1 and the state can blow up), keeps A raw instead of
log-parameterised (A can change sign during training), reuses the skip D as the Δ bias (two roles, one
parameter) and has no padding masks. We implement the published Mamba-1 maths so that checkpoints and numbers
are comparable with ``mamba-ssm`` and transformers' ``MambaModel``; masks make an utterance's output
independent of its batch (tests/models/test_mamba.py).

The scan has interchangeable implementations behind one function, :func:`selective_scan`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Heavy libraries (mamba_ssm, mambapy) are imported inside the functions that use them, so that importing this module,
# and `bber --help`, stays fast.

SCAN_IMPLS = ("auto", "sequential", "chunked", "fused", "mambapy", "cuda", "export")


# ----------------------------------------------------------------------------------------------------------
# The selective scan
# ----------------------------------------------------------------------------------------------------------


def selective_scan(u, delta, A, B, C, D=None, z=None, impl: str = "auto"):
    """The selective scan of Mamba-1, ``y = SSM(Δ, A, B, C)(u) (+ D u) (⊙ SiLU(z))``.

    Shapes (mamba-minimal layout, time on dim 1):
        u:     (B, L, ED)  input
        delta: (B, L, ED)  step sizes Δ > 0 (already through softplus)
        A:     (ED, N)     state matrix, negative real (A = -exp(A_log))
        B:     (B, L, N)   input matrix, per time step
        C:     (B, L, N)   output matrix, per time step
        D:     (ED,)       skip, optional
        z:     (B, L, ED)  gate, optional: the output is multiplied by SiLU(z)
    Returns y: (B, L, ED).

    ``impl``: ``"sequential"`` (reference loop over time), ``"chunked"`` (chunked scan with a hand-written
    backward, :class:`ChunkedScan`), ``"fused"`` (the same recurrence and backward as one compiled CPU kernel per
    direction, :class:`FusedScan`), ``"mambapy"`` (mambapy's parallel scan), ``"cuda"`` (mamba-ssm's fused
    kernel, CUDA only), ``"export"`` (torch's ``scan`` operator: one loop whose length is a graph input, which
    ``torch.export`` and ``torch.onnx.export`` turn into an ONNX ``Scan`` of dynamic length; slow in eager mode) or
    ``"auto"`` (``"export"`` while ``torch.export`` traces the model, else the fastest available here, see
    :func:`_auto_impl`).
    """
    if impl not in SCAN_IMPLS:
        raise ValueError(f"unknown scan impl {impl!r}; choose one of {SCAN_IMPLS}")
    if impl == "auto":
        impl = "export" if torch.compiler.is_exporting() else _auto_impl(u)
    if impl == "cuda":
        return _scan_cuda(u, delta, A, B, C, D, z)  # D and z are fused into the kernel
    out_dtype = u.dtype
    with torch.autocast(u.device.type, enabled=False):  # the state is kept in float32 (or float64), as in Mamba
        u, delta, A, B, C, D, z = (_upcast(t) for t in (u, delta, A, B, C, D, z))
        if impl == "sequential":
            y = _scan_sequential(u, delta, A, B, C)
        elif impl == "mambapy":
            y = _scan_mambapy(u, delta, A, B, C)
        elif impl == "export":
            y = _scan_export(u, delta, A, B, C)
        elif impl == "fused":
            y = _scan_fused(u, delta, A, B, C)
        else:
            y = _scan_chunked(u, delta, A, B, C)
        if D is not None:
            y = y + u * D
        if z is not None:
            y = y * F.silu(z)
    return y.to(out_dtype)


def _upcast(t):
    """float16 / bfloat16 -> float32 (autocast); other dtypes and None as they are."""
    return t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t


def _auto_impl(u) -> str:
    """mamba-ssm's fused kernel on CUDA when installed; mambapy's parallel scan on other GPUs (a few big kernels
    rather than a loop of small ones; not measured here). On CPU the fused kernels, the fastest form measured
    for training and for inference at every size (benchmarks/mamba.md); the chunked scan if numba cannot load.
    The forms agree to float32 rounding, not bit for bit."""
    if u.is_cuda:
        return "cuda" if mamba_ssm_available() else "mambapy"
    return "fused" if fused_available() else "chunked"


@functools.cache
def fused_available() -> bool:
    """True when the fused CPU kernels (numba) can be imported and numba compiles (``NUMBA_DISABLE_JIT=1`` would
    run them as Python loops, ~70× slower than the chunked scan); numba is a dependency, so only a broken
    install says False (and ``auto`` falls back to the chunked scan). Answered once per process: a failed import
    is not run again on every scan."""
    try:
        from bber_utils.models import scan_kernels
    except Exception:  # ImportError, or numba / llvmlite that fail to load
        return False
    return not scan_kernels.numba.config.DISABLE_JIT


def mamba_ssm_available() -> bool:
    """True when mamba-ssm's CUDA selective-scan kernel can be imported (never required)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # ImportError, or a build without its CUDA extension
        return False
    return True


def _scan_sequential(u, delta, A, B, C):
    """Reference: one step per time position. Materialises nothing of size (B, L, ED, N)."""
    with _scan_threads():
        return _sequential_steps(u, delta, A, B, C)


def _sequential_steps(u, delta, A, B, C):
    batch, length, ed = u.shape
    h = u.new_zeros(batch, ed, A.shape[1])
    deltaBu = (delta * u).unsqueeze(-1)  # (B, L, ED, 1)
    ys = []
    for t in range(length):
        dA = torch.exp(delta[:, t].unsqueeze(-1) * A)  # (B, ED, N)
        h = dA * h + deltaBu[:, t] * B[:, t].unsqueeze(1)  # (B, ED, N)
        ys.append(torch.bmm(h, C[:, t].unsqueeze(-1)).squeeze(-1))  # (B, ED)
    return torch.stack(ys, dim=1)


def _scan_mambapy(u, delta, A, B, C):
    """mambapy's Blelloch parallel scan over the materialised (B, L, ED, N) decays and inputs."""
    from mambapy.pscan import pscan

    dA = torch.exp(delta.unsqueeze(-1) * A)  # (B, L, ED, N)
    dBu = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # (B, L, ED, N)
    h = pscan(dA, dBu)  # (B, L, ED, N)
    return (h @ C.unsqueeze(-1)).squeeze(-1)


def _scan_export(u, delta, A, B, C):
    """The recurrence as torch's ``scan`` operator over time: exportable with a dynamic length (the Python loops
    of the other forms would be unrolled to the length of the example input). State (B, ED, N), as ``sequential``."""
    from torch._higher_order_ops.scan import scan  # torch's (still private) scan operator

    dA = torch.exp(delta.unsqueeze(-1) * A)  # (B, L, ED, N)
    dBu = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # (B, L, ED, N)
    _, ys = scan(_export_step, u.new_zeros(u.shape[0], u.shape[2], A.shape[1]), (dA, dBu, C), dim=1)
    return ys  # (B, L, ED)


def _export_step(h, xs):
    """One step of ``_scan_export``: h_t = dA_t ⊙ h_{t-1} + x_t, y_t = h_t C_t."""
    dA, x, c = xs
    h = torch.addcmul(x, dA, h)
    return h, torch.matmul(h, c.unsqueeze(-1)).squeeze(-1)


CHUNK = 16  # time steps per chunk: the (B, CHUNK, ED, N) temporaries stay in cache (benchmarks/mamba.md)
# The forward keeps each chunk's decays, inputs and states for the backward (instead of recomputing them there)
# while these three (B, L, ED, N) tensors take at most this many bytes: every training shape of the profiles
# (a few MB); the benchmark stack recomputes, as nothing of that size should be first-touched on a CPU.
KEEP_STATES_BYTES = 64 * 2**20
# Threads of the CPU scans (None: torch's own setting): numba's for the fused kernels (the same bits on any count),
# torch's for the stepped scans. The stepped scans' loops are thousands of small ops, each
# an OpenMP parallel region when run on several threads: on a loaded machine every region waits for a thread the
# OS has put off, and there the stack ran 1.5-4.5x slower with the scan on 2 threads than on 1; on the same
# machine idle, 2 threads were faster (benchmarks/mamba.md). 1 suits a shared machine; the default keeps torch's.
# Elementwise ops and reductions over non-scalar outputs give the same bits on any number of threads, and so did
# the scan's batched matrix-vector products (tests/models/test_mamba.py).
SCAN_THREADS: int | None = None


def _scan_chunked(u, delta, A, B, C, chunk: int = CHUNK):
    return ChunkedScan.apply(u, delta, A, B, C, chunk)


@contextlib.contextmanager
def _scan_threads():
    """Run the stepped scans (chunked and sequential) on ``SCAN_THREADS`` torch threads, restored after."""
    threads = torch.get_num_threads()
    if SCAN_THREADS is None or SCAN_THREADS == threads:
        yield
        return
    torch.set_num_threads(SCAN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class ChunkedScan(torch.autograd.Function):
    """Selective scan over chunks of ``chunk`` time steps, with a hand-written backward.

    Forward: per chunk, the decays exp(Δ A) and inputs Δ u B are built as (B, T, ED, N) tensors, the
    recurrence runs through the chunk with one in-place ``addcmul`` per step, the state at the chunk's end is
    carried into the next chunk, and y = C·h is reduced at once. The states at the chunk starts are saved, and,
    while they fit in ``KEEP_STATES_BYTES``, each chunk's decays, inputs and states too (else recomputed).
    Backward: per chunk, last to first, h (recomputed from the saved start state, or kept), the adjoint
    g_t = C_t gy_t + exp(Δ_{t+1} A) g_{t+1} runs backwards with the carry from the next chunk, and

        gC_t = h_tᵀ gy_t          q_t = g_t ⊙ (h_t − x_t)   (= g_t ⊙ exp(Δ_t A) ⊙ h_{t−1})
        gΔ_t = Σ_n q_t A + u_t (g_t B_t)     gu_t = Δ_t (g_t B_t)
        gA   = Σ_{b,t} q_t Δ_t             gB_t = (Δ_t u_t)ᵀ g_t
    Kept or recomputed, the backward runs the same operations on the same values (the same bits). The
    (B, T, ED, N) temporaries that are not kept live in a few work tensors allocated once per call and reused
    by every chunk (:class:`_Work`): a fresh tensor per chunk and operation adds its allocation and first-touch
    page faults to the arithmetic on it (benchmarks/mamba.md).

    Within a chunk the recurrence is stepped rather than written as cumulative sums of log-decays
    (h_t = e^{S_t} Σ_{s≤t} e^{-S_s} x_s): we measured that form 2-3× slower on CPU (two exps and a reverse cumsum
    per element, bigger temporaries) and it needs chunks shortened where Δ·|A| is large to keep e^{-S} finite;
    the stepped chunk is exact and stable for any Δ (benchmarks/mamba.md).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        with _scan_threads():
            return ChunkedScan._forward(ctx, u, delta, A, B, C, chunk)

    @staticmethod
    def _forward(ctx, u, delta, A, B, C, chunk):
        batch, length, ed = u.shape
        n_chunks = -(-length // chunk)
        keep = any(ctx.needs_input_grad) and 3 * batch * length * ed * A.shape[1] * u.element_size() <= KEEP_STATES_BYTES
        starts = u.new_empty(n_chunks, batch, ed, A.shape[1])  # the state at each chunk's start
        starts[0].zero_()
        y = u.new_empty(batch, length, ed)
        du = delta * u
        work = _Work(u, A, chunk, 0 if keep else 2)
        kept = []
        for c in range(n_chunks):
            s, e = c * chunk, min(c * chunk + chunk, length)
            dA, x = work.fresh(e - s, 2) if keep else work.views(e - s)
            _chunk_terms(delta[:, s:e], du[:, s:e], A, B[:, s:e], dA, x)
            hs = _chunk_recurrence(dA, x, starts[c], out=torch.empty_like(x) if keep else x)  # (B, T, ED, N)
            torch.matmul(hs, C[:, s:e].unsqueeze(-1), out=y[:, s:e].unsqueeze(-1))
            if c + 1 < n_chunks:
                starts[c + 1].copy_(hs[:, -1])
            if keep:
                kept.append((dA, x, hs))
        ctx.chunk, ctx.kept = chunk, kept
        ctx.save_for_backward(u, delta, A, B, C, starts)
        return y

    @staticmethod
    def backward(ctx, gy):
        with _scan_threads():
            return ChunkedScan._backward(ctx, gy)

    @staticmethod
    def _backward(ctx, gy):
        u, delta, A, B, C, starts = ctx.saved_tensors
        chunk, kept = ctx.chunk, ctx.kept
        length = u.shape[1]
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        gB, gC = torch.empty_like(B), torch.empty_like(C)
        gA = torch.zeros_like(A)
        du = delta * u
        work = _Work(u, A, chunk, 2 if kept else 4)
        carry = None  # exp(Δ A) g at the first step of the chunk after this one
        for c in reversed(range(starts.shape[0])):
            s, e = c * chunk, min(c * chunk + chunk, length)
            d, uc, Bc, gyc = delta[:, s:e], u[:, s:e], B[:, s:e], gy[:, s:e]
            if kept:
                (dA, x, h), (g, q) = kept[c], work.views(e - s)
            else:
                dA, x, h, g = work.views(e - s)
                _chunk_terms(d, du[:, s:e], A, Bc, dA, x)
                q = _chunk_recurrence(dA, x, starts[c], out=h)  # h, then q in its place
            torch.mul(gyc.unsqueeze(-1), C[:, s:e].unsqueeze(2), out=g)  # becomes the adjoint in place
            carry = _adjoint(g, dA, carry)

            torch.matmul(gyc.unsqueeze(2), h, out=gC[:, s:e].unsqueeze(2))
            gB_ = torch.matmul(g, Bc.unsqueeze(-1)).squeeze(-1)  # (B, T, ED): Σ_n g B
            torch.matmul(du[:, s:e].unsqueeze(2), g, out=gB[:, s:e].unsqueeze(2))
            torch.mul(d, gB_, out=gu[:, s:e])
            torch.sub(h, x, out=q).mul_(g)  # (B, T, ED, N); the kept states stay as they are
            gA += torch.mul(q, d.unsqueeze(-1), out=g if kept else x).sum((0, 1))
            torch.addcmul((q.mul_(A)).sum(-1), uc, gB_, out=gdelta[:, s:e])
        ctx.kept = None
        return gu, gdelta, gA, gB, gC, None


class _Work:
    """``count`` work tensors of shape (B, chunk, ED, N), allocated once and reused by every chunk of one scan;
    ``views(T)`` gives them as contiguous (B, T, ED, N) tensors (the last chunk may be shorter)."""

    def __init__(self, u, A, chunk, count):
        self.shape = (u.shape[0], chunk, u.shape[2], A.shape[1])
        self.u = u
        self.flat = [u.new_empty(math.prod(self.shape)) for _ in range(count)]

    def views(self, steps):
        shape = (self.shape[0], steps, *self.shape[2:])
        return [f[: math.prod(shape)].view(shape) for f in self.flat]

    def fresh(self, steps, count):
        return [self.u.new_empty(self.shape[0], steps, *self.shape[2:]) for _ in range(count)]


def _adjoint(g, dA, carry):
    """The adjoint recurrence through one chunk, in place in ``g`` (= C gy on entry): g_t += exp(Δ_{t+1} A) g_{t+1},
    with ``carry`` (exp(Δ A) g of the next chunk's first step, None for the last chunk) added at the chunk's end.
    Returns this chunk's carry for the chunk before it."""
    gs, dAs = g.unbind(1), dA.unbind(1)
    if carry is not None:
        gs[-1].add_(carry)
    for t in range(len(gs) - 2, -1, -1):
        gs[t].addcmul_(dAs[t + 1], gs[t + 1])
    return dAs[0] * gs[0]


def _chunk_terms(delta, du, A, B, dA, x):
    """Decays exp(Δ A) and inputs (Δ u) B of one chunk, written into ``dA`` and ``x``:
    (B, T, ED), (B, T, ED), (ED, N), (B, T, N) -> 2 × (B, T, ED, N)."""
    torch.mul(delta.unsqueeze(-1), A, out=dA).exp_()
    torch.mul(du.unsqueeze(-1), B.unsqueeze(2), out=x)
    return dA, x


def _chunk_recurrence(dA, x, h0, out):
    """h_t = dA_t h_{t-1} + x_t through one chunk from the state h0 (B, ED, N); ``out`` may be ``x``. One
    ``addcmul`` per step on views taken at once (``unbind``: the loop is a few Python calls per step)."""
    xs, dAs, outs = x.unbind(1), dA.unbind(1), out.unbind(1)
    torch.addcmul(xs[0], dAs[0], h0, out=outs[0])
    for t in range(1, len(xs)):
        torch.addcmul(xs[t], dAs[t], outs[t - 1], out=outs[t])
    return out


def _scan_fused(u, delta, A, B, C):
    # The kernels index every input by (b, t, e) or (b, t, i) unchecked: broadcast them to their full shapes here
    # (as the torch forms broadcast; a wrong size is torch's error), or they would read outside the tensors.
    u, delta = torch.broadcast_tensors(u, delta)
    batch, length, ed = u.shape
    n = A.shape[-1]
    A, B, C = A.expand(ed, n), B.expand(batch, length, n), C.expand(batch, length, n)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
    return FusedScan.apply(u, delta, A, B, C, grad)


class FusedScan(torch.autograd.Function):
    """The selective scan as compiled CPU kernels (:mod:`bber_utils.models.scan_kernels`): one pass over the
    sequence forward, one backward, nothing of size (B, L, ED, N) in memory.

    The forward keeps the state at the start of every ``CHUNK`` steps (when a gradient is needed); the backward
    recomputes each chunk's states and decays from it, then runs the adjoint (the maths of :class:`ChunkedScan`).
    The kernels' jobs are (batch row, block of channels), run on ``SCAN_THREADS`` threads (torch's by default);
    the parts each job writes are summed here by torch, so the bits do not depend on the thread count. Float32
    and float64; decays by the kernels' own float32 exp (within 1.37 ulp), so the values agree with the chunked
    scan to float32 rounding, not bit for bit.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, grad):
        from bber_utils.models import scan_kernels as kernels

        batch, length, ed = u.shape
        at = A.t().contiguous()  # (N, ED)
        u, delta, B, C = u.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
        du = delta * u
        starts = u.new_empty(-(-length // CHUNK) if grad else 0, batch, A.shape[1], ed)
        y = u.new_empty(batch, length, ed)
        with _kernel_threads(batch, ed) as parallel:
            forward = kernels.forward_parallel if parallel else kernels.forward_serial
            forward(*(t.detach().numpy() for t in (delta, du, at, B, C, y, starts)), CHUNK)
        if grad:
            ctx.save_for_backward(u, delta, A, B, C, starts)
        return y

    @staticmethod
    @once_differentiable  # compiled code: a second derivative is torch's error, not a silent zero
    def backward(ctx, gy):
        from bber_utils.models import scan_kernels as kernels

        u, delta, A, B, C, starts = ctx.saved_tensors
        batch, length, ed = u.shape
        n, blocks = A.shape[1], -(-ed // kernels.BLOCK)
        at, du, gy = A.t().contiguous(), delta * u, gy.contiguous()
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        ga = u.new_empty(batch, n, ed)  # per batch row
        gb, gc = u.new_empty(blocks, batch, length, n), u.new_empty(blocks, batch, length, n)  # per block
        with _kernel_threads(batch, ed) as parallel:
            backward = kernels.backward_parallel if parallel else kernels.backward_serial
            arrays = [t.detach().numpy() for t in (delta, du, u, at, B, C, gy, starts)]
            backward(*arrays, CHUNK, *(t.numpy() for t in (gu, gdelta, ga, gb, gc)))
        return gu, gdelta, ga.sum(0).t(), gb.sum(0), gc.sum(0), None


def load_fused_kernels() -> None:
    """Load the fused kernels' serial float32 builds into this process (compiled when not cached yet), by a
    forward+backward of a tiny scan: a process that forks runs (``study.forked``) does it once for all of them.
    No-op when numba cannot load."""
    if not fused_available():
        return
    x = torch.zeros(1, 2, 4, requires_grad=True)
    _scan_fused(x, x.detach() + 0.1, -torch.ones(4, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).sum().backward()


# One parallel kernel at a time per process: numba's workqueue threading layer (its fallback where neither OpenMP
# nor TBB loads) aborts the process when two threads launch parallel kernels at once.
_PARALLEL_KERNEL = threading.Lock()


@contextlib.contextmanager
def _kernel_threads(batch, ed):
    """Yield whether the fused kernels run in parallel: on ``SCAN_THREADS`` (else torch's) threads, when more
    than one, the scan has more than one job (batch row × block of channels) and no other thread of this process
    is in a parallel kernel (that one's caller runs the serial build: the same bits)."""
    from bber_utils.models import scan_kernels as kernels

    threads = SCAN_THREADS or torch.get_num_threads()
    jobs = batch * -(-ed // kernels.BLOCK)
    if threads <= 1 or jobs <= 1 or not _PARALLEL_KERNEL.acquire(blocking=False):
        yield False
        return
    numba = kernels.numba
    try:
        saved = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            yield True
        finally:
            numba.set_num_threads(saved)
    finally:
        _PARALLEL_KERNEL.release()


def _scan_cuda(u, delta, A, B, C, D, z):
    """mamba-ssm's fused kernel; it wants channels before time: (B, ED, L) and (B, N, L)."""
    if not u.is_cuda:
        raise RuntimeError("selective_scan(impl='cuda') needs CUDA tensors")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    y = selective_scan_fn(
        u.transpose(1, 2).contiguous(),
        delta.transpose(1, 2).contiguous(),
        A.contiguous(),
        B.transpose(1, 2).contiguous(),
        C.transpose(1, 2).contiguous(),
        D=None if D is None else D.float(),
        z=None if z is None else z.transpose(1, 2).contiguous(),
        delta_softplus=False,
    )
    return y.transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------
# The block and the stack
# ----------------------------------------------------------------------------------------------------------


class MambaBlock(nn.Module):
    """One Mamba-1 mixer: (B, L, D) -> (B, L, D). ``mask`` (B, L) bool, True at real positions."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        scan: str = "auto",
    ):
        super().__init__()
        if scan not in SCAN_IMPLS:
            raise ValueError(f"unknown scan impl {scan!r}; choose one of {SCAN_IMPLS}")
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.scan = scan

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # Δ init as in Mamba: weights ~ U(±dt_rank^-0.5), bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
        dt_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_std, dt_std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

        # S4D-real init: A = -[1, 2, ..., N] for every channel, stored as log(-A)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)  # (ED, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def forward(self, x, mask=None):
        """x: (B, L, D), mask: (B, L) bool or None -> (B, L, D)."""
        length = x.shape[1]
        xz = self.in_proj(x)  # (B, L, 2 ED)
        x, z = xz.chunk(2, dim=-1)  # (B, L, ED) each
        if mask is not None:
            x = x * mask.unsqueeze(-1)  # padded positions never reach the conv
        x = self.conv1d(x.transpose(1, 2))[..., :length].transpose(1, 2)  # causal: keep the first L outputs
        x = F.silu(x)
        if mask is not None:
            x = x * mask.unsqueeze(-1)  # ... nor the scan (the conv bias would make them non-zero)

        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # (B, L, ED)
        A = -torch.exp(self.A_log)  # (ED, N)
        y = selective_scan(x, delta, A, B, C, D=self.D, z=z, impl=self.scan)  # (B, L, ED)
        return self.out_proj(y)


class MambaStack(nn.Module):
    """``n_layers`` pre-norm residual Mamba blocks and a final RMSNorm: (B, L, D) -> (B, L, D).

    ``forward(x, mask)``: ``mask`` (B, L) bool, True at real positions (right padding). Real positions give the
    same output as the sequence alone; padded positions of the output are zero.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dropout: float = 0.0,
        scan: str = "auto",
    ):
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(
            MambaBlock(d_model, d_state=d_state, d_conv=d_conv, expand=expand, scan=scan) for _ in range(n_layers)
        )
        self.norms = nn.ModuleList(nn.RMSNorm(d_model, eps=1e-5) for _ in range(n_layers))
        self.norm_f = nn.RMSNorm(d_model, eps=1e-5)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        """x: (B, L, D), mask: (B, L) bool or None -> (B, L, D)."""
        if mask is not None:
            mask = _check_mask(x, mask)
            x = x * mask.unsqueeze(-1)
        for norm, layer in zip(self.norms, self.layers):
            x = x + self.dropout(layer(norm(x), mask))
        x = self.norm_f(x)
        if mask is not None:
            x = x * mask.unsqueeze(-1)
        return x


def masked_mean(x, mask=None):
    """Mean over real positions: x (B, L, D), mask (B, L) bool or None -> (B, D). All-padding rows give 0."""
    if mask is None:
        return x.mean(dim=1)
    mask = _check_mask(x, mask).to(x.dtype).unsqueeze(-1)  # (B, L, 1)
    return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _check_mask(x, mask):
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match input (B, L) = {tuple(x.shape[:2])}")
    return mask.to(torch.bool)
