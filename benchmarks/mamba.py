"""Mamba on CPU: our MambaStack's scans against transformers' MambaModel, forward+backward and forward only.

Sizes of the issue: d_model 256, 4 layers, d_state 16, d_conv 4, expand 2, batch 8, lengths 200 and 1000.
Every candidate runs side by side in one process, repetitions interleaved (so a burst of load on a shared
machine hits all of them), with torch threads = 2. Reported: the median wall time and the median CPU time of
the process (less sensitive to other processes on a busy machine than wall time).

    .venv/bin/python benchmarks/mamba.py                      # the table of benchmarks/mamba.md (a few minutes)
    .venv/bin/python benchmarks/mamba.py --lengths 200 --reps 5
    .venv/bin/python benchmarks/mamba.py --estimate --threads 2 1     # matmul-bound estimate (its md section)
    .venv/bin/python benchmarks/mamba.py --inference --lengths 50 200 1000 4000 --threads 2 1   # forward only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

D_MODEL, N_LAYERS, D_STATE, D_CONV, EXPAND, BATCH = 256, 4, 16, 4, 2, 8


def build_candidates(with_sequential_backward: bool):
    """name -> (model factory, runs backward too?) ; models take (B, L, D) and return (B, L, D)."""
    from transformers import MambaConfig, MambaModel
    from transformers.utils import logging as hf_logging

    from bber_utils.models.mamba import MambaStack

    hf_logging.set_verbosity_error()

    def ours(scan):
        return lambda: MambaStack(D_MODEL, N_LAYERS, d_state=D_STATE, d_conv=D_CONV, expand=EXPAND, scan=scan)

    def hf(use_mambapy):
        def make():
            config = MambaConfig(
                hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, state_size=D_STATE, conv_kernel=D_CONV,
                expand=EXPAND, vocab_size=8, use_mambapy=use_mambapy,
            )
            model = MambaModel(config)
            return lambda x: model(inputs_embeds=x).last_hidden_state, model

        return make

    return {
        "bber fused (auto)": ours("fused"),
        "bber chunked": ours("chunked"),
        "bber mambapy": ours("mambapy"),
        "bber sequential": ours("sequential"),
        "transformers default": hf(False),
        "transformers use_mambapy": hf(True),
    }


def _as_callable(obj):
    if isinstance(obj, tuple):  # (forward fn, module)
        return obj
    return obj, obj


def time_once(fn, x, backward: bool, loss=lambda y: y.pow(2).mean()):
    import torch

    w0, c0 = time.perf_counter(), time.process_time()
    if backward:
        y = fn(x)
        loss(y).backward()
    else:
        with torch.no_grad():
            fn(x)
    return time.perf_counter() - w0, time.process_time() - c0


# ----------------------------------------------------------------------------------------------------------
# The scan alone, (B, L, ED, N) = (8, L, 512, 16), including the alternative we measured and did not keep: a
# chunked scan written with cumulative sums of log-decays (h_t = e^{S_t} Σ_{s≤t} e^{-S_s} x_s, adaptive chunk).
# ----------------------------------------------------------------------------------------------------------


def _log_cumsum_scan_class():
    import torch

    _LOG_RANGE = {torch.float64: 500.0, torch.float32: 40.0}
    _STEP_FLOOR = {torch.float64: 40.0, torch.float32: 20.0}


    def chunk_length(delta, A, chunk: int = 32) -> int:
        """Steps per chunk so that the summed log-decay of a chunk stays within ``_LOG_RANGE`` of the dtype."""
        floor = _STEP_FLOOR.get(delta.dtype, 20.0)
        max_step = min(floor, float(delta.detach().max()) * float(-A.detach().min()))  # Δ > 0, A < 0
        if max_step <= 0:
            return chunk
        return max(1, min(chunk, int(_LOG_RANGE.get(delta.dtype, 40.0) // max_step)))


    class LogCumsumChunkedScan(torch.autograd.Function):
        """Chunked selective scan with cumulative sums of log-decays and a hand-written backward.

        Within a chunk of T steps starting from state h0, with S_t = Σ_{s≤t} Δ_s A (the log of the decay from the
        chunk start, monotone, bounded by :func:`chunk_length`) and x_s = Δ_s u_s B_s:

            h_t = exp(S_t) ⊙ (h0 + Σ_{s≤t} exp(-S_s) ⊙ x_s)          (two cumsums instead of T steps)

        and h_T is carried into the next chunk. y = C·h is reduced per chunk; only the chunk start states are saved,
        nothing of size (B, L, ED, N) is kept. Backward, chunk by chunk from the last, with h recomputed:

            g_t  = exp(-S_t) ⊙ Σ_{s≥t} exp(S_s) ⊙ C_s gy_s  (+ the carry from the next chunk)   the adjoint of h_t
            gC_t = h_tᵀ gy_t           q_t = g_t ⊙ (h_t − x_t)   (= g_t ⊙ exp(Δ_t A) ⊙ h_{t−1})
            gΔ_t = Σ_n q_t A + u_t (g_t B_t)       gu_t = Δ_t (g_t B_t)
            gA   = Σ_{b,t} q_t Δ_t                 gB_t = (Δ_t u_t)ᵀ g_t
        """

        @staticmethod
        def forward(ctx, u, delta, A, B, C, chunk):
            batch, length, ed = u.shape
            chunk = chunk_length(delta, A, chunk)
            floor = _STEP_FLOOR.get(u.dtype, 20.0)
            h = u.new_zeros(batch, ed, A.shape[1])  # state carried between chunks
            y = u.new_empty(batch, length, ed)
            starts = []
            for s in range(0, length, chunk):
                e = min(s + chunk, length)
                starts.append(h)
                log_dA, exp_S, exp_neg_S, x = _chunk_terms(u[:, s:e], delta[:, s:e], A, B[:, s:e], floor)
                hs = _chunk_states(exp_S, exp_neg_S, x, h)  # (B, T, ED, N)
                torch.matmul(hs, C[:, s:e].unsqueeze(-1), out=y[:, s:e].unsqueeze(-1))
                h = hs[:, -1].clone()
            ctx.chunk, ctx.floor = chunk, floor
            ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts))
            return y

        @staticmethod
        def backward(ctx, gy):
            u, delta, A, B, C, starts = ctx.saved_tensors
            chunk, floor = ctx.chunk, ctx.floor
            length = u.shape[1]
            gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
            gB, gC = torch.empty_like(B), torch.empty_like(C)
            gA = torch.zeros_like(A)
            carry = None  # exp(Δ A) ⊙ g at the first step of the chunk after this one
            for c in reversed(range(starts.shape[0])):
                s = c * chunk
                e = min(s + chunk, length)
                d, uc, Bc, gyc = delta[:, s:e], u[:, s:e], B[:, s:e], gy[:, s:e]
                log_dA, exp_S, exp_neg_S, x = _chunk_terms(uc, d, A, Bc, floor)
                h = _chunk_states(exp_S, exp_neg_S, x, starts[c])

                v = gyc.unsqueeze(-1) * C[:, s:e].unsqueeze(2) * exp_S  # (B, T, ED, N)
                if carry is not None:
                    v[:, -1].addcmul_(exp_S[:, -1], carry)
                g = v.flip(1).cumsum(1).flip(1).mul_(exp_neg_S)  # reverse cumsum (no cancellation), the adjoint
                carry = torch.exp(log_dA[:, 0]) * g[:, 0]

                torch.matmul(gyc.unsqueeze(2), h, out=gC[:, s:e].unsqueeze(2))
                g_B = torch.matmul(g, Bc.unsqueeze(-1)).squeeze(-1)  # (B, T, ED): Σ_n g B
                torch.matmul((d * uc).unsqueeze(2), g, out=gB[:, s:e].unsqueeze(2))
                torch.mul(d, g_B, out=gu[:, s:e])
                q = h.sub_(x).mul_(g)  # (B, T, ED, N)
                gA += (q * d.unsqueeze(-1)).sum((0, 1))
                torch.addcmul(q.mul_(A).sum(-1), uc, g_B, out=gdelta[:, s:e])
            return gu, gdelta, gA, gB, gC, None


    def _chunk_terms(u, delta, A, B, floor):
        """One chunk's log-decays Δ A (floored), exp(±S) of their cumsum S, and inputs x = Δ u B.

        (B, T, ED), (B, T, ED), (ED, N), (B, T, N) -> four (B, T, ED, N) tensors.
        """
        log_dA = (delta.unsqueeze(-1) * A).clamp_(min=-floor)
        S = log_dA.cumsum(1)
        exp_S = torch.exp(S)
        exp_neg_S = torch.exp(S.neg_())
        x = (delta * u).unsqueeze(-1) * B.unsqueeze(2)
        return log_dA, exp_S, exp_neg_S, x


    def _chunk_states(exp_S, exp_neg_S, x, h0):
        """h_t = exp(S_t) ⊙ (h0 + Σ_{s≤t} exp(-S_s) ⊙ x_s): (B, T, ED, N) states from the start state h0 (B, ED, N)."""
        return (exp_neg_S * x).cumsum(1).add_(h0.unsqueeze(1)).mul_(exp_S)

    return LogCumsumChunkedScan


def scan_only(lengths, reps):
    import torch

    from bber_utils.models import mamba

    LogCumsum = _log_cumsum_scan_class()
    scans = {
        "stepped chunked, chunk 16 (ours)": lambda *a: mamba._scan_chunked(*a, chunk=16),
        "stepped chunked, chunk 8": lambda *a: mamba._scan_chunked(*a, chunk=8),
        "log-cumsum chunked, chunk 8": lambda *a: LogCumsum.apply(*a, 8),
        "log-cumsum chunked, chunk 32": lambda *a: LogCumsum.apply(*a, 32),
        "mambapy pscan": mamba._scan_mambapy,
        "sequential": mamba._scan_sequential,
    }
    g = torch.Generator().manual_seed(0)
    for length in lengths:
        ed, n = EXPAND * D_MODEL, D_STATE
        u = torch.randn(BATCH, length, ed, generator=g)
        delta = torch.rand(BATCH, length, ed, generator=g) * 0.1 + 1e-3  # Δ range of Mamba's init
        A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(ed, 1)
        B, C = torch.randn(BATCH, length, n, generator=g), torch.randn(BATCH, length, n, generator=g)
        inputs = [t.requires_grad_() for t in (u, delta, A, B, C)]
        for backward in (True, False):
            times = {name: [] for name in scans}
            for rep in range(reps):
                for name, scan in scans.items():
                    if name == "sequential" and backward and length > 200 and rep > 0:
                        continue
                    times[name].append(time_once(lambda _: scan(*inputs), None, backward, loss=lambda y: y.sum()))
            for name, ts in times.items():
                print(f"| scan {BATCH}×{length}×{ed}×{n} | {'fwd+bwd' if backward else 'fwd'} | {name} | "
                      f"{statistics.median(t[0] for t in ts):.3f} | {statistics.median(t[1] for t in ts):.3f} | "
                      f"{len(ts)} |", flush=True)


# ----------------------------------------------------------------------------------------------------------
# --estimate: the matmul-bound estimate of the stack, and where the stack with each scan stands against it
# --inference: forward only (torch.no_grad) of each scan form over lengths and batch sizes, for scan="auto"
# Both write their section of benchmarks/mamba.md (between its markers) and print it.
# ----------------------------------------------------------------------------------------------------------

MD = Path(__file__).resolve().with_suffix(".md")
DT_RANK = -(-D_MODEL // 16)  # MambaBlock's default dt_rank
ED = EXPAND * D_MODEL
# The stack's dense ops per layer: (name, in features, out features) of each Linear
LINEARS = (("in_proj", D_MODEL, 2 * ED), ("x_proj", ED, DT_RANK + 2 * D_STATE), ("dt_proj", DT_RANK, ED),
           ("out_proj", ED, D_MODEL))


def dense_flops(length: int, batch: int = BATCH) -> int:
    """Forward FLOPs of the stack's dense ops: the four Linears (2·in·out per token) and the depthwise causal
    conv (2·ED·d_conv per token), times the layers. Forward+backward of these is 3× (input and weight grads)."""
    per_token = sum(2 * k * n for _, k, n in LINEARS) + 2 * ED * D_CONV
    return N_LAYERS * batch * length * per_token


def matmul_products(length: int, batch: int = BATCH):
    """The matrix products of the Linears' forward and backward at this length: name -> (a, b) with a @ b."""
    import torch

    m, out = batch * length, {}
    for name, k, n in LINEARS:
        x, w, gy = torch.randn(m, k), torch.randn(n, k), torch.randn(m, n)
        out[f"{name} fwd"] = (x, w.t())          # y = x Wᵀ
        out[f"{name} grad input"] = (gy, w)      # gx = gy W
        out[f"{name} grad weight"] = (gy.t(), x)  # gW = gyᵀ x
    return out


def _time_call(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def cpu_model() -> str:
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return "unknown CPU"


def write_section(name: str, text: str, md: Path = MD) -> None:
    """Replace the lines between ``<!-- mamba.py --NAME -->`` and ``<!-- end --NAME -->`` of ``md`` by ``text``."""
    from bber_utils.core.fileio import atomic_write_text

    begin, end = f"<!-- mamba.py --{name} -->", f"<!-- end --{name} -->"
    page = md.read_text(encoding="utf-8")
    if begin not in page or end not in page:
        raise SystemExit(f"{md}: markers {begin} ... {end} not found; add them where the section goes")
    head, rest = page.split(begin, 1)
    atomic_write_text(md, f"{head}{begin}\n{text.strip()}\n{end}{rest.split(end, 1)[1]}")


def _machine_line(threads) -> str:
    import torch

    return (f"{cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, CPU pinned as bber pins it "
            f"(`bber_utils/core/cpu.py`, capability {torch.backends.cpu.get_cpu_capability()}), torch threads "
            f"{' and '.join(map(str, threads))}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def _median_times(samples):
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def measure_estimate(length: int, reps: int):
    """Interleaved reps of: every matrix product of the Linears (forward set, then backward set), the stack with
    the scan ``auto`` picks on CPU (the fused kernels) forward+backward and forward only, and the same with the
    chunked scan. Returns name -> (wall, CPU) medians, and the FLOPs."""
    import torch

    from bber_utils.models.mamba import MambaStack

    products = matmul_products(length)
    stack = MambaStack(D_MODEL, N_LAYERS, d_state=D_STATE, d_conv=D_CONV, expand=EXPAND)  # scan="auto"
    x = torch.randn(BATCH, length, D_MODEL)
    jobs = {name: (lambda a=a, b=b: torch.mm(a, b)) for name, (a, b) in products.items()}
    jobs["stack fwd+bwd"] = lambda: stack(x).pow(2).mean().backward()
    jobs["stack fwd"] = lambda: _no_grad(stack, x)
    jobs["stack fwd+bwd, chunked scan"] = _with_scan(stack, "chunked", jobs["stack fwd+bwd"])
    jobs["stack fwd, chunked scan"] = _with_scan(stack, "chunked", jobs["stack fwd"])
    if torch.get_num_threads() > 1:  # the scan on one thread (mamba.SCAN_THREADS = 1), the rest on torch's
        jobs["stack fwd+bwd, scan on 1 thread"] = _scan_on_one_thread(jobs["stack fwd+bwd"])
    for job in jobs.values():  # warm-up (and the kernels' compilation, when not cached yet)
        job()
    samples = {name: [] for name in jobs}
    for _ in range(reps):
        for name, job in jobs.items():
            stack.zero_grad(set_to_none=True)
            samples[name].append(_time_call(job))
    times = {name: _median_times(s) for name, s in samples.items()}
    flops = {name: 2 * a.shape[0] * a.shape[1] * b.shape[1] for name, (a, b) in products.items()}
    return times, flops


def _with_scan(stack, scan, job):
    def run():
        for layer in stack.layers:
            layer.scan = scan
        try:
            job()
        finally:
            for layer in stack.layers:
                layer.scan = "auto"

    return run


def _scan_on_one_thread(job):
    def run():
        from bber_utils.models import mamba

        saved, mamba.SCAN_THREADS = mamba.SCAN_THREADS, 1
        try:
            job()
        finally:
            mamba.SCAN_THREADS = saved

    return run


def _no_grad(model, x):
    import torch

    with torch.no_grad():
        return model(x)


def estimate_rows(lengths, reps, threads):
    """The rows of the estimate table, one per (threads, length, pass)."""
    import torch

    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for length in lengths:
            times, flops = measure_estimate(length, reps)
            fwd = [n for n in flops if n.endswith("fwd")]
            for mode, factor, names in (("fwd", 1, fwd), ("fwd+bwd", 3, list(flops)),
                                        ("fwd, chunked scan", 1, fwd), ("fwd+bwd, chunked scan", 3, list(flops)),
                                        ("fwd+bwd, scan on 1 thread", 3, list(flops))):
                if f"stack {mode}" not in times:
                    continue
                mm_wall, mm_cpu = (sum(times[n][i] for n in names) for i in (0, 1))
                dense, measured = factor * dense_flops(length), sum(flops[n] for n in names)
                est_wall, est_cpu = dense * mm_wall / measured, dense * mm_cpu / measured
                wall, cpu = times[f"stack {mode}"]
                rows.append((t, length, mode, dense / 1e9, measured / mm_wall / 1e9,
                             est_wall, wall, wall / est_wall, est_cpu, cpu, cpu / est_cpu))
                print(*(f"{v:.3g}" if isinstance(v, float) else v for v in rows[-1]), flush=True)
    return rows


def estimate(lengths, reps, threads) -> str:
    """The --estimate section: method, machine, and the table."""
    load0 = os.getloadavg()[0]
    rows = estimate_rows(lengths, reps, threads)
    lines = [
        f"Written by `benchmarks/mamba.py --estimate --lengths {' '.join(map(str, lengths))} --reps {reps} "
        f"--threads {' '.join(map(str, threads))}` on {_machine_line(threads)}; load average "
        f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end; medians of {reps} interleaved reps.",
        "",
        "| threads | L | pass | dense GFLOP | matmul GFLOP/s | estimate wall (s) | stack wall (s) | × estimate "
        "| estimate CPU (s) | stack CPU (s) | × estimate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t, length, mode, gflop, rate, est_w, wall, r_w, est_c, cpu, r_c in rows:
        lines.append(f"| {t} | {length} | {mode} | {gflop:.2f} | {rate:.1f} | {est_w:.3f} | {wall:.3f} | "
                     f"**{r_w:.2f}×** | {est_c:.3f} | {cpu:.3f} | **{r_c:.2f}×** |")
    return "\n".join(lines)


def profile(length: int, threads) -> str:
    """The --profile section: torch.profiler's ops of one forward+backward of the stack (scan="auto"), by self
    CPU time: where the time goes besides the matrix products (aten::mm)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from bber_utils.models.mamba import MambaStack

    torch.set_num_threads(threads[0])
    stack = MambaStack(D_MODEL, N_LAYERS, d_state=D_STATE, d_conv=D_CONV, expand=EXPAND)  # scan="auto"
    x = torch.randn(BATCH, length, D_MODEL)
    stack(x).pow(2).mean().backward()  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        stack(x).pow(2).mean().backward()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40)
    return (f"Written by `benchmarks/mamba.py --profile --lengths {length} --threads {threads[0]}` on "
            f"{_machine_line(threads[:1])}; load average {os.getloadavg()[0]:.1f}. One forward+backward, L = {length}, "
            f"after a warm-up; the profiler's own overhead is in the total.\n\n```text\n{table.strip()}\n```")


INFERENCE_FORMS = ("fused", "chunked", "sequential", "mambapy")
MAMBAPY_MAX_BYTES = 300 * 2**20  # mambapy materialises several (B, L, ED, N) tensors: left out above this
MAX_TOKENS = 32_000  # --inference leaves out B × L above this (minutes per rep on 2 shared cores)


def inference_row(length: int, batch: int, reps: int):
    """Forward-only (no grad) times of each scan form on (B, L, ED, N) = (batch, length, 512, 16), interleaved:
    form -> (wall, CPU) medians; and the form ``scan="auto"`` picks there."""
    import torch

    from bber_utils.models import mamba

    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, length, ED, generator=g)
    delta = torch.rand(batch, length, ED, generator=g) * 0.1 + 1e-3  # Δ range of Mamba's init
    A = -torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(ED, 1)
    B, C = torch.randn(batch, length, D_STATE, generator=g), torch.randn(batch, length, D_STATE, generator=g)
    forms = [f for f in INFERENCE_FORMS if f != "mambapy" or 4 * u.numel() * D_STATE <= MAMBAPY_MAX_BYTES]
    samples = {f: [] for f in forms}
    with torch.no_grad():
        for form in forms:  # warm-up
            mamba.selective_scan(u, delta, A, B, C, impl=form)
        for _ in range(reps):
            for form in forms:
                samples[form].append(_time_call(lambda: mamba.selective_scan(u, delta, A, B, C, impl=form)))
        auto = mamba._auto_impl(u)
    return {f: _median_times(s) for f, s in samples.items()}, auto


def inference(lengths, batches, reps, threads, max_tokens=MAX_TOKENS) -> str:
    """The --inference section: machine and the table (fastest form by CPU time, and auto's choice)."""
    import torch

    load0 = os.getloadavg()[0]
    lines = [
        f"Written by `benchmarks/mamba.py --inference --lengths {' '.join(map(str, lengths))} --batches "
        f"{' '.join(map(str, batches))} --reps {reps} --threads {' '.join(map(str, threads))} --max-tokens "
        f"{max_tokens}` on "
        f"{_machine_line(threads)}; load average {load0:.1f} at start, END at end. The scan alone, "
        f"(B, L, ED, N) = (B, L, {ED}, {D_STATE}), under `torch.no_grad`; wall / CPU median (ms) of {reps} "
        f"interleaved reps; – = not run (mambapy above {MAMBAPY_MAX_BYTES >> 20} MiB per tensor); B × L above "
        f"{max_tokens} not run.",
        "",
        f"| threads | L | B | {' | '.join(INFERENCE_FORMS)} | fastest (CPU) | auto picks |",
        "|---|---|---|" + "---|" * len(INFERENCE_FORMS) + "---|---|",
    ]
    for t in threads:
        torch.set_num_threads(t)
        for length in lengths:
            for batch in (b for b in batches if b * length <= max_tokens):
                times, auto = inference_row(length, batch, reps)
                cells = [f"{times[f][0] * 1e3:.1f} / {times[f][1] * 1e3:.1f}" if f in times else "–"
                         for f in INFERENCE_FORMS]
                fastest = min(times, key=lambda f: times[f][1])
                lines.append(f"| {t} | {length} | {batch} | {' | '.join(cells)} | {fastest} | {auto} |")
                print(lines[-1], flush=True)
    return "\n".join(lines).replace("END", f"{os.getloadavg()[0]:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per candidate (median reported)")
    parser.add_argument("--slow-reps", type=int, default=1,
                        help="repetitions for the slow loops (transformers default, bber sequential fwd+bwd) at L > 200")
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="torch threads (--estimate / --inference: each in turn; else the first)")
    parser.add_argument("--skip", nargs="*", default=[], help="candidate names to leave out")
    parser.add_argument("--scan-only", action="store_true", help="time the scan implementations alone")
    parser.add_argument("--estimate", action="store_true",
                        help="matmul-bound estimate vs the stack (fused and chunked scans); writes its section of benchmarks/mamba.md")
    parser.add_argument("--inference", action="store_true",
                        help="forward-only scan forms; writes its section of benchmarks/mamba.md")
    parser.add_argument("--profile", action="store_true",
                        help="torch.profiler of the stack's forward+backward (first length and thread count); "
                             "writes its section of benchmarks/mamba.md")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="--inference: batch sizes")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="--inference: leave out B × L above this")
    args = parser.parse_args(argv)

    from bber_utils.core import cpu

    cpu.pin()  # the CPU code paths and thread counts bber runs on, set before torch loads
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads[0])
    torch.manual_seed(0)
    for flag, section in (("estimate", lambda: estimate(args.lengths, args.reps, args.threads)),
                          ("inference", lambda: inference(args.lengths, args.batches, args.reps, args.threads, args.max_tokens)),
                          ("profile", lambda: profile(args.lengths[0], args.threads))):
        if getattr(args, flag):
            text = section()
            write_section(flag, text)
            print(text)
            return 0
    if args.scan_only:
        print("| scan (B, L, ED, N) | pass | implementation | wall median (s) | CPU median (s) | reps |")
        print("|---|---|---|---|---|---|")
        scan_only(args.lengths, args.reps)
        return 0
    candidates = {k: v for k, v in build_candidates(True).items() if k not in args.skip}
    slow = {"transformers default", "bber sequential"}

    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load average at start {os.getloadavg()[0]:.1f}")
    print(f"# d_model {D_MODEL}, layers {N_LAYERS}, d_state {D_STATE}, batch {BATCH}; median of reps (interleaved)")
    rows = []
    for length in args.lengths:
        x = torch.randn(BATCH, length, D_MODEL)
        models = {name: _as_callable(make()) for name, make in candidates.items()}
        for fn, module in models.values():  # warm-up (first-call allocations, kernel selection), not timed
            time_once(fn, x[:, :16], backward=True)
        for backward in (True, False):
            times = {name: [] for name in models}
            for rep in range(args.reps):
                for name, (fn, module) in models.items():
                    long_slow = name in slow and length > 200 and backward
                    if long_slow and rep >= args.slow_reps:
                        continue
                    module.zero_grad(set_to_none=True)
                    times[name].append(time_once(fn, x, backward))
            for name, ts in times.items():
                wall = statistics.median(t[0] for t in ts)
                cpu = statistics.median(t[1] for t in ts)
                rows.append((length, "fwd+bwd" if backward else "fwd", name, wall, cpu, len(ts)))
                print(f"L={length:5d} {'fwd+bwd' if backward else 'fwd':8s} {name:26s} wall {wall:8.3f} s  "
                      f"cpu {cpu:8.3f} s  (n={len(ts)})", flush=True)
    print(f"# load average at end {os.getloadavg()[0]:.1f}")

    print("\n| length | pass | implementation | wall median (s) | CPU median (s) | reps | wall vs bber chunked |")
    print("|---|---|---|---|---|---|---|")
    for length, mode, name, wall, cpu, n in rows:
        ref = next(r[3] for r in rows if r[:2] == (length, mode) and r[2] == "bber fused (auto)") if any(
            r[:3] == (length, mode, "bber fused (auto)") for r in rows) else None
        ratio = f"{wall / ref:.1f}×" if ref else "–"
        print(f"| {length} | {mode} | {name} | {wall:.3f} | {cpu:.3f} | {n} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
