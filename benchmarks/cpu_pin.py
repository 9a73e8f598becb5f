"""Benchmark: what each CPU code path changes in the smoke BiFormer, and that the pin (bber_utils/core/cpu.py)
removes it. Writes ``benchmarks/cpu_pin.md``.

One smoke work folder (the demo corpus at 3 utterances per class, its features) is built once; then the smoke
BiFormer (stage 1: audio-only and text-only encoders; stage 2: the fusion model) is trained in a copy of it per
setting, in a child process: pinned as ``bber`` runs (the reference), pinned with another ATen capability asked
for (what another CPU would choose), and unpinned with one library at a time moved off the pinned setting. Each
row gives the largest difference of any checkpoint tensor to the reference. The logmel features are extracted
again with numpy and OpenBLAS at this CPU's own level (AVX-512 where it has it).

    .venv/bin/python benchmarks/cpu_pin.py        # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bber_utils.core import cpu  # noqa: E402

BBER = [sys.executable, "-m", "bber_utils.cli"]
CHECKPOINTS = {"stage 1 audio": "train/_unimodal/audio-*/full/best.pt", "stage 1 text": "train/_unimodal/text-*/full/best.pt",
               "fusion": "train/biformer-*/best.pt"}


def bare_env(**extra) -> dict[str, str]:
    """This process's environment without any pinned variable, plus ``extra``."""
    names = {*cpu.isa_settings(), *cpu.thread_settings(), cpu.SWITCH}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


def prepare_smoke(work: Path, env: dict[str, str] | None = None) -> Path:
    """The demo corpus at 3 utterances per class and its features in ``work`` (``bber prepare`` + ``extract``)."""
    subprocess.run([*BBER, "prepare", "demo", "--out", str(work), "--demo-per-class", "3"], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, env=env)
    subprocess.run([*BBER, "extract", "--workdir", str(work), "--quiet"], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, env=env)
    return work


def train_copy(base: Path, name: str, env: dict[str, str]) -> dict[str, dict]:
    """``bber train --config smoke`` in a copy of ``base`` (its own stage-1 cache), in a child process with
    ``env``; ``{checkpoint: state dict}`` of the stage-1 encoders and the fusion model, and ``"cpu_seconds"``: the
    child's user + system CPU time."""
    import resource

    import torch

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    work = base.with_name(name)
    shutil.copytree(base, work, ignore=shutil.ignore_patterns("train"))
    subprocess.run([*BBER, "train", "--config", "smoke", f"workdir={work}", "progress=false"], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out: dict = {"cpu_seconds": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}
    for label, pattern in CHECKPOINTS.items():
        path = next(work.glob(pattern))
        out[label] = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return out


def max_differences(a: dict[str, dict], b: dict[str, dict]) -> dict[str, float]:
    """Per checkpoint, the largest absolute difference of any tensor (0.0: every tensor identical)."""
    return {label: max((a[label][k].double() - b[label][k].double()).abs().max().item() for k in a[label])
            for label in CHECKPOINTS}


def _features_difference(base: Path, env: dict[str, str]) -> float:
    """Largest difference of the logmel features extracted again under ``env``."""
    work = base.with_name("features-own-level")
    shutil.copytree(base, work, ignore=shutil.ignore_patterns("features", "train"))
    subprocess.run([*BBER, "extract", "--workdir", str(work), "--quiet"], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, env=env)
    worst = 0.0
    for shard in sorted(base.glob("features/audio-*/shards/*.npy")):
        other = work / shard.relative_to(base)
        a, b = np.load(shard, allow_pickle=False), np.load(other, allow_pickle=False)
        worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()))
    return worst


def settings() -> list[tuple[str, dict[str, str]]]:
    """(what changes, environment) per row; the first is the reference (as ``bber`` runs)."""
    pinned = cpu.pinned_environment()
    off = {**pinned, cpu.SWITCH: "0"}
    rows = [("pinned (as bber runs): the reference", bare_env()),
            ("pinned, ATen asked for no SIMD (ATEN_CPU_CAPABILITY=default)", bare_env(ATEN_CPU_CAPABILITY="default")),
            ("pinned, ATen asked for AVX-512 (ATEN_CPU_CAPABILITY=avx512)", bare_env(ATEN_CPU_CAPABILITY="avx512")),
            ("unpinned ATen: no SIMD (default)", bare_env(**{**off, "ATEN_CPU_CAPABILITY": "default"})),
            ("unpinned ATen: this CPU's own level", bare_env(**{k: v for k, v in off.items()
                                                               if k != "ATEN_CPU_CAPABILITY"})),
            ("unpinned oneDNN: this CPU's own level", bare_env(**{k: v for k, v in off.items()
                                                                 if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")})),
            ("unpinned MKL: MKL_CBWR=AUTO", bare_env(**{**off, "MKL_CBWR": "AUTO"})),
            ("unpinned MKL: MKL_CBWR=AVX2 (Intel-only branch)", bare_env(**{**off, "MKL_CBWR": "AVX2"})),
            ("unpinned threads: OMP_NUM_THREADS=MKL_NUM_THREADS=1", bare_env(**{**off, "OMP_NUM_THREADS": "1",
                                                                              "MKL_NUM_THREADS": "1"}))]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "cpu_pin.md")
    args = ap.parse_args(argv)
    if not cpu.pinnable()[0]:
        print(f"nothing to compare: {cpu.pinnable()[1]}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="bber_cpu_pin_"))
    base = prepare_smoke(root / "base", bare_env())
    rows = []
    reference = None
    for label, env in settings():
        states = train_copy(base, f"run{len(rows)}", env)
        reference = reference or states
        diff = max_differences(reference, states)
        rows.append(f"| {label} | " + " | ".join("identical" if d == 0 else f"{d:.2g}" for d in diff.values())
                    + f" | {states['cpu_seconds']:.1f} |")
        print(rows[-1], flush=True)
    own = {k: v for k, v in cpu.pinned_environment().items() if k not in ("NPY_ENABLE_CPU_FEATURES",
                                                                            "OPENBLAS_CORETYPE")}
    feat = _features_difference(base, bare_env(**own, **{cpu.SWITCH: "0"}))
    text = [f"# The pinned CPU code paths: what each library changes\n",
            f"`python benchmarks/cpu_pin.py`, {dt.date.today()}, {cpu_model()} ({os.cpu_count()} cores), "
            f"torch and numpy of `requirements/cpu.lock`. The smoke BiFormer trained from the same features per "
            f"row; each cell is the largest absolute difference of any tensor of that checkpoint to the first "
            f"row's; the last column is the training process's CPU time (user + system; the machine was shared, "
            f"so take it as a rough cost of each setting).\n",
            "| setting | " + " | ".join(CHECKPOINTS) + " | CPU s |", "|---|" + "---|" * (len(CHECKPOINTS) + 1), *rows,
            f"\nlogmel features extracted with numpy and OpenBLAS at this CPU's own level instead of AVX2: largest "
            f"difference {feat:.2g}" + (" (identical)" if feat == 0 else "") + ".\n"]
    args.out.write_text("\n".join(text), encoding="utf-8")
    shutil.rmtree(root, ignore_errors=True)
    print(f"written: {args.out}")
    return 0


def cpu_model() -> str:
    from bber_utils.core.provenance import _cpu_model

    return f"{_cpu_model()}, {platform.machine()}"


if __name__ == "__main__":
    raise SystemExit(main())
