"""Mamba encoder: scan implementations agree, Mamba-1 maths (vs transformers), masks make outputs batch-independent."""

import math

import pytest
import torch

from bber_utils.models.mamba import MambaBlock, MambaStack, masked_mean, selective_scan

CPU_IMPLS = ["fused", "chunked", "mambapy", "export"]


def _scan_inputs(batch, length, ed, n, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, ed, generator=g, dtype=dtype)
    delta = torch.nn.functional.softplus(torch.randn(batch, length, ed, generator=g, dtype=dtype) - 1.0)
    A = -torch.exp(torch.randn(ed, n, generator=g, dtype=dtype))
    B = torch.randn(batch, length, n, generator=g, dtype=dtype)
    C = torch.randn(batch, length, n, generator=g, dtype=dtype)
    D = torch.randn(ed, generator=g, dtype=dtype)
    z = torch.randn(batch, length, ed, generator=g, dtype=dtype)
    tensors = [u, delta, A, B, C, D, z]
    if requires_grad:
        for t in tensors:
            t.requires_grad_(True)
    return tensors


def _naive_scan(u, delta, A, B, C):
    """The recurrence written out with plain Python loops over (b, t): the oracle for the oracle."""
    batch, length, ed = u.shape
    y = torch.zeros_like(u)
    for b in range(batch):
        h = torch.zeros(ed, A.shape[1], dtype=u.dtype)
        for t in range(length):
            h = torch.exp(delta[b, t, :, None] * A) * h + delta[b, t, :, None] * B[b, t][None, :] * u[b, t, :, None]
            y[b, t] = h @ C[b, t]
    return y


def test_sequential_scan_matches_the_recurrence_written_out():
    u, delta, A, B, C, D, z = _scan_inputs(2, 7, 3, 4)
    expected = _naive_scan(u, delta, A, B, C)
    got = selective_scan(u, delta, A, B, C, impl="sequential")
    torch.testing.assert_close(got, expected)
    with_skip_and_gate = selective_scan(u, delta, A, B, C, D=D, z=z, impl="sequential")
    torch.testing.assert_close(with_skip_and_gate, (expected + u * D) * torch.nn.functional.silu(z))


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("shape", [(2, 1, 5, 3), (1, 7, 4, 16), (3, 33, 6, 8), (2, 130, 8, 16)])
def test_scan_impl_forward_matches_sequential(impl, shape):
    u, delta, A, B, C, D, z = _scan_inputs(*shape, dtype=torch.float32)
    expected = selective_scan(u, delta, A, B, C, D=D, z=z, impl="sequential")
    got = selective_scan(u, delta, A, B, C, D=D, z=z, impl=impl)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("shape", [(2, 1, 3, 2), (1, 5, 3, 4), (2, 37, 4, 3), (1, 100, 2, 5)])
def test_scan_impl_gradients_match_sequential(impl, shape):
    inputs = _scan_inputs(*shape, dtype=torch.float64, requires_grad=True)
    grad_y = torch.randn(shape[0], shape[1], shape[2], dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def grads(which):
        y = selective_scan(*inputs, impl=which)
        return torch.autograd.grad(y, inputs, grad_y)

    for name, g_ref, g in zip("u delta A B C D z".split(), grads("sequential"), grads(impl)):
        torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-8, msg=lambda m: f"d{name}: {m}")


def test_unknown_impl_is_a_clear_error():
    u, delta, A, B, C, D, z = _scan_inputs(1, 3, 2, 2)
    with pytest.raises(ValueError, match="unknown scan impl"):
        selective_scan(u, delta, A, B, C, impl="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mamba-ssm's kernel needs CUDA")
def test_cuda_kernel_matches_sequential():
    from bber_utils.models.mamba import mamba_ssm_available

    if not mamba_ssm_available():
        pytest.skip("mamba-ssm is not installed")
    inputs = [t.cuda() for t in _scan_inputs(2, 50, 8, 16, dtype=torch.float32)]
    expected = selective_scan(*inputs, impl="sequential")
    torch.testing.assert_close(selective_scan(*inputs, impl="cuda"), expected, atol=1e-4, rtol=1e-3)


def test_block_init_follows_mamba():
    torch.manual_seed(0)
    block = MambaBlock(32, d_state=16, expand=2)
    A = -torch.exp(block.A_log)
    torch.testing.assert_close(A[5], -torch.arange(1, 17, dtype=torch.float32))  # S4D-real
    dt = torch.nn.functional.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001  # Δ at init in [dt_min, dt_max]
    assert block.dt_rank == math.ceil(32 / 16)
    assert torch.all(block.D == 1)


def test_stack_shapes_and_final_norm():
    torch.manual_seed(0)
    stack = MambaStack(16, n_layers=2)
    x = torch.randn(3, 11, 16)
    y = stack(x)
    assert y.shape == (3, 11, 16)
    rms = y.pow(2).mean(-1).sqrt()  # final RMSNorm with unit weight
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)


def test_padded_batch_matches_each_sequence_alone():
    torch.manual_seed(0)
    stack = MambaStack(16, n_layers=2, d_conv=4).eval()
    lengths = [9, 1, 4, 6]
    seqs = [torch.randn(n, 16) for n in lengths]
    batch = torch.full((len(seqs), max(lengths), 16), 123.0)  # garbage in the padding must not leak
    mask = torch.zeros(len(seqs), max(lengths), dtype=torch.bool)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
        mask[i, : len(s)] = True
    with torch.no_grad():
        out = stack(batch, mask)
        for i, s in enumerate(seqs):
            alone = stack(s.unsqueeze(0))[0]
            torch.testing.assert_close(out[i, : len(s)], alone, atol=1e-5, rtol=0)
            assert torch.all(out[i, len(s):] == 0)
        pooled = masked_mean(out, mask)
        for i, s in enumerate(seqs):
            torch.testing.assert_close(pooled[i], stack(s.unsqueeze(0))[0].mean(0), atol=1e-5, rtol=0)


def test_masked_mean():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[2.0], [4.0]]))
    torch.testing.assert_close(masked_mean(x), x.mean(1))
    assert masked_mean(x, torch.zeros(2, 3, dtype=torch.bool)).abs().sum() == 0
    with pytest.raises(ValueError, match="does not match"):
        masked_mean(x, mask[:, :2])


@pytest.mark.parametrize("impl", ["sequential", "chunked", "fused"])
def test_stack_is_mamba1_as_in_transformers(impl):
    """Same weights, same outputs as transformers' MambaModel: the published Mamba-1 maths, not the reference's."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    d, layers = 16, 2
    config = transformers.MambaConfig(
        hidden_size=d, num_hidden_layers=layers, state_size=8, expand=2, conv_kernel=4, vocab_size=8,
        time_step_rank=math.ceil(d / 16), layer_norm_epsilon=1e-5,
    )
    theirs = transformers.MambaModel(config).eval()
    ours = MambaStack(d, n_layers=layers, d_state=8, d_conv=4, expand=2, scan=impl).eval()
    with torch.no_grad():  # random norms and Δ biases so that every parameter matters
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    state = {}
    for k, v in theirs.state_dict().items():
        if k.startswith("layers."):
            _, i, part, rest = k.split(".", 3)
            state[f"norms.{i}.{rest}" if part == "norm" else f"layers.{i}.{rest}"] = v
        elif k.startswith("norm_f."):
            state[k] = v
    ours.load_state_dict(state)  # strict: every parameter has its counterpart
    x = torch.randn(2, 13, d)
    with torch.no_grad():
        expected = theirs(inputs_embeds=x).last_hidden_state
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_chunked_scan_any_chunk_length_matches_sequential(chunk):
    from bber_utils.models.mamba import _scan_chunked

    inputs = _scan_inputs(2, 35, 3, 4, dtype=torch.float64, requires_grad=True)
    u, delta, A, B, C = inputs[:5]
    grad_y = torch.randn(2, 35, 3, dtype=torch.float64)
    ref = selective_scan(u, delta, A, B, C, impl="sequential")
    got = _scan_chunked(u, delta, A, B, C, chunk=chunk)
    torch.testing.assert_close(got, ref)
    for g, g_ref in zip(torch.autograd.grad(got, inputs[:5], grad_y), torch.autograd.grad(ref, inputs[:5], grad_y)):
        torch.testing.assert_close(g, g_ref)


def test_chunked_scan_backward_is_the_same_with_kept_or_recomputed_states(monkeypatch):
    """The forward keeps each chunk's decays, inputs and states for the backward while they fit in
    ``KEEP_STATES_BYTES`` (every training shape of the profiles), else the backward recomputes them: the same
    gradients to the last bit either way, so the memory budget never changes a run's numbers."""
    from bber_utils.models import mamba

    inputs = _scan_inputs(3, 37, 16, 8, dtype=torch.float32, requires_grad=True)
    grad_y = torch.randn(3, 37, 16)

    def grads():
        y = mamba._scan_chunked(*inputs[:5])
        return [y, *torch.autograd.grad(y, inputs[:5], grad_y)]

    kept = grads()
    monkeypatch.setattr(mamba, "KEEP_STATES_BYTES", 0)
    recomputed = grads()
    assert all(torch.equal(a, b) for a, b in zip(kept, recomputed))


@pytest.mark.parametrize("impl", ["chunked", "fused"])
def test_scan_is_stable_for_large_steps_in_float32(impl):
    """Δ·|A| up to ~800 per step: the state is wiped every step, and nothing overflows."""
    u, delta, A, B, C, D, z = _scan_inputs(2, 40, 4, 16, dtype=torch.float32)
    delta = delta * 20 + 0.5
    A = A * 10
    ref = selective_scan(u, delta, A, B, C, impl="sequential")
    got = selective_scan(u, delta, A, B, C, impl=impl)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_auto_scan_trains_every_parameter():
    torch.manual_seed(0)
    stack = MambaStack(8, n_layers=2, d_state=4)
    x = torch.randn(2, 19, 8)
    mask = torch.arange(19) < torch.tensor([[19], [7]])
    masked_mean(stack(x, mask), mask).pow(2).sum().backward()
    for name, p in stack.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_stack_under_bfloat16_autocast_keeps_the_scan_in_float32():
    torch.manual_seed(0)
    stack = MambaStack(16, n_layers=1)
    x = torch.randn(2, 21, 16)
    reference = stack(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = stack(x)
    y.float().pow(2).mean().backward()
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), reference, atol=0.1, rtol=0.05)


def _auto_form(monkeypatch, batch, ed, n, threads, grad):
    """The scan form that ``selective_scan(impl="auto")`` runs on CPU for this state size, thread count and grad
    mode: the CPU forms are replaced by spies that record their call."""
    from bber_utils.models import mamba

    called = []
    for form in ("sequential", "chunked", "fused"):
        real = getattr(mamba, f"_scan_{form}")
        monkeypatch.setattr(mamba, f"_scan_{form}", lambda *a, _real=real, _form=form: called.append(_form) or _real(*a))
    u, delta, A, B, C, D, z = _scan_inputs(batch, 3, ed, n, dtype=torch.float32, requires_grad=grad)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.set_grad_enabled(grad):
            selective_scan(u, delta, A, B, C, D=D, z=z, impl="auto")
    finally:
        torch.set_num_threads(before)
    assert len(called) == 1, called
    return called[0]


def test_auto_scan_runs_the_fused_kernels_on_cpu_and_the_chunked_scan_without_numba(monkeypatch):
    """benchmarks/mamba.md: the fused kernels are the fastest CPU form measured, for training and for inference
    at every size (the demo's shapes, the benchmark stack's, batch 1 to 32); a broken numba falls back to the
    chunked scan instead of failing."""
    from bber_utils.models import mamba

    for threads in (1, 2):
        for batch, ed, n, grad in ((32, 64, 8, True), (64, 64, 8, False), (1, 512, 16, False), (32, 512, 16, False)):
            assert _auto_form(monkeypatch, batch, ed, n, threads=threads, grad=grad) == "fused"
    monkeypatch.setattr(mamba, "fused_available", lambda: False)
    assert _auto_form(monkeypatch, 2, 64, 8, threads=1, grad=True) == "chunked"


@pytest.fixture
def fresh_fused_available():
    """``mamba.fused_available`` answers once per process: asked afresh in the test, and again after it."""
    from bber_utils.models import mamba

    mamba.fused_available.cache_clear()
    yield mamba.fused_available
    mamba.fused_available.cache_clear()


def test_fused_scan_without_numba_is_reported_as_unavailable_once(monkeypatch, fresh_fused_available):
    """``fused_available`` imports the kernels: a numba that cannot load makes it False, not an error, and the
    failed import is not run again on every scan (where numba has no writable cache folder, the module fails at
    its decorators, and each scan spent 5.7 ms importing it again)."""
    import builtins
    import sys

    import bber_utils.models

    monkeypatch.setitem(sys.modules, "bber_utils.models.scan_kernels", None)  # import raises ImportError
    monkeypatch.delattr(bber_utils.models, "scan_kernels", raising=False)
    imports = []
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: imports.append(name) or real_import(name, *a, **k))
    assert [fresh_fused_available() for _ in range(3)] == [False] * 3
    assert imports.count("bber_utils.models") == 1


def test_auto_scan_does_not_run_the_kernels_as_python_under_numba_disable_jit(monkeypatch, fresh_fused_available):
    """``NUMBA_DISABLE_JIT=1`` (numba's debugging switch) turns the kernels into Python loops, about 70× slower
    than the chunked scan forward (0.145 against 0.002 s CPU at (2, 64, 128, 16)): ``auto`` takes the chunked
    scan then."""
    import numba

    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert fresh_fused_available() is False
    assert _auto_form(monkeypatch, 2, 64, 8, threads=1, grad=True) == "chunked"


def test_stepped_scans_run_on_scan_threads_with_the_same_bits(monkeypatch):
    """The chunked scan (forward and backward) and the sequential loop run on ``SCAN_THREADS`` torch threads
    whatever torch's setting, and give the same bits as on torch's 2 threads (chunks big enough for every op to
    be split between threads there)."""
    from bber_utils.models import mamba

    monkeypatch.setattr(mamba, "SCAN_THREADS", 1)  # the shared-machine setting (default None: torch's own)
    inputs = _scan_inputs(4, 37, 64, 16, dtype=torch.float32, requires_grad=True)
    grad_y = torch.randn(4, 37, 64)
    seen = []
    recurrence = mamba._chunk_recurrence
    monkeypatch.setattr(mamba, "_chunk_recurrence", lambda *a, **k: seen.append(torch.get_num_threads()) or recurrence(*a, **k))
    monkeypatch.setattr(mamba, "KEEP_STATES_BYTES", 0)  # the backward recomputes: its threads are seen too

    def run():
        y = selective_scan(*inputs[:5], impl="chunked")
        return [y, *torch.autograd.grad(y, inputs[:5], grad_y), selective_scan(*inputs[:5], impl="sequential")]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one_thread = run()
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
        monkeypatch.setattr(mamba, "SCAN_THREADS", None)
        seen.clear()
        two_threads = run()
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one_thread, two_threads))



def test_fused_scan_broadcasts_inputs_and_refuses_wrong_shapes_as_the_sequential_loop():
    """Δ of one channel, or B of one row for the whole batch, broadcast as in the sequential loop (the fused
    kernels index B[b, t, i] directly: unchecked, they read past the tensor); A, B or C of the wrong size is
    torch's size error, not a result computed from memory outside the tensors."""
    u, delta, A, B, C, _, _ = _scan_inputs(3, 20, 16, 4, requires_grad=True)
    y = selective_scan(u, delta[..., :1], A, B[:1], C, impl="fused")
    expected = selective_scan(u, delta[..., :1], A, B[:1], C, impl="sequential")
    torch.testing.assert_close(y, expected)
    gy = torch.randn(3, 20, 16, dtype=y.dtype)
    for a, b in zip(torch.autograd.grad(y, [u, delta, A, B, C], gy), torch.autograd.grad(expected, [u, delta, A, B, C], gy)):
        torch.testing.assert_close(a, b)
    for bad in ((u, delta, A, B[..., :3], C), (u, delta, A, B, C[:, :15]), (u, delta, A[:12], B, C)):
        with pytest.raises(RuntimeError, match="size"):
            selective_scan(*bad, impl="fused")


def test_fused_scan_refuses_a_second_derivative():
    """The fused backward is compiled code, not torch ops: a gradient taken with ``create_graph`` through it has
    no graph of its own. Differentiating it again is torch's "differentiate twice" error, not a silent zero."""
    u, delta, A, B, C, _, _ = _scan_inputs(1, 5, 3, 2, requires_grad=True)
    y = selective_scan(u, delta, A, B, C, impl="fused")
    (gu,) = torch.autograd.grad(y.pow(2).sum(), u, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gu.sum().backward()
