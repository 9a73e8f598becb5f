"""Bit-for-bit check of a change that must not change behaviour (a reshaping, a move of code).

``python -m tools.bitcheck snapshot OUT.json [--workdir DIR]`` runs the smoke profile's notebooks into a fresh work
folder, then ``EXTRA_RUNS`` more ``bber train`` runs there (other models, augmentations, options), and writes one
digest per file: ``metrics.json`` (wall time, environment and git commit left out), ``history.csv`` (its
``seconds`` column left out), every parquet table (manifests, logits, soft labels, study tables), every feature
shard, and every tensor of every checkpoint (``best.pt``, ``last.pt``, fold models).

``python -m tools.bitcheck digest OUT.json --workdir DIR`` digests a work folder a snapshot already filled.
``python -m tools.bitcheck compare A.json B.json`` prints the files whose digests differ, and exits 1 if any does.
Run both snapshots on the same machine; ``bber`` pins the CPU code paths itself (``bber_utils/core/cpu.py``;
``BBER_CPU_PIN=0`` compares the machine's own).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Runs beyond the notebooks' own: every fusion family, out-of-fold logits, SDS, TUG, LS-LLM, label smoothing and
# dialogue context.
EXTRA_RUNS = [
    ["model=bigraphformer", "sds_ratio=0.5"],
    ["model=bimamba", "tug_ratio=0.5"],
    ["model=biformer_withprob", "ls_llm_p=0.5"],
    ["model=predictions_fusion", "label_smoothing=0.1"],
    ["model=bigatedgraphformer", "augment_unimodal=true", "sds_ratio=0.5"],
    ["model=text_only", "text_context=1", "text_context_mode=mean"],
]
_VOLATILE_METRICS = ("wall_time_s", "environment", "git_commit")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _normalise(obj, workdir: str):
    """``obj`` with the work folder's path replaced by ``<workdir>`` (two snapshots use two folders)."""
    if isinstance(obj, dict):
        return {k: _normalise(v, workdir) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalise(v, workdir) for v in obj]
    if isinstance(obj, str):
        return obj.replace(workdir, "<workdir>")
    return obj


def _digest_json(path: Path, workdir: str) -> str:
    obj = json.loads(path.read_text(encoding="utf-8"))
    if path.name == "metrics.json":
        obj = {k: v for k, v in obj.items() if k not in _VOLATILE_METRICS}
    return _sha(json.dumps(_normalise(obj, workdir), sort_keys=True).encode())


def _digest_table(path: Path, workdir: str) -> str:
    import pandas as pd

    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    df = df.drop(columns=[c for c in ("seconds", "src_mtime_ns") if c in df.columns])  # wall times, file times
    text = df.to_csv(index=False, float_format="%.17g")
    return _sha(text.replace(workdir, "<workdir>").encode())


def _digest_checkpoint(path: Path) -> dict[str, str]:
    """One digest per tensor (its dtype, shape and bytes), keyed by its path in the checkpoint."""
    import torch

    out: dict[str, str] = {}

    def walk(obj, key: str):
        if torch.is_tensor(obj):
            t = obj.detach().cpu().contiguous()
            out[key] = _sha(f"{t.dtype}{tuple(t.shape)}".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()
                            if t.numel() else f"{t.dtype}{tuple(t.shape)}".encode())
        elif isinstance(obj, dict):
            for k, v in obj.items():
                if k not in ("history", "meta"):  # wall times, paths
                    walk(v, f"{key}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{key}/{i}")

    walk(torch.load(path, map_location="cpu", weights_only=True), "")
    return out


def digest_workdir(workdir: Path) -> dict[str, object]:
    """``{relative path: digest}`` of every file that holds a result (see the module docstring)."""
    import numpy as np

    wd = str(workdir.resolve())
    out: dict[str, object] = {}
    for p in sorted(workdir.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        rel = str(p.relative_to(workdir))
        if p.suffix == ".json" and (p.name in ("metrics.json", "done.json") or rel.startswith("manifests")):
            out[rel] = _digest_json(p, wd)
        elif p.suffix == ".parquet" or p.name in ("history.csv", "study.csv"):
            out[rel] = _digest_table(p, wd)
        elif p.suffix == ".pt":
            out[rel] = _digest_checkpoint(p)
        elif p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
            out[rel] = _sha(str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
    return out


def write_digest(out: Path, workdir: Path) -> None:
    digests = digest_workdir(workdir)
    out.write_text(json.dumps({"workdir": str(workdir), "files": digests}, indent=1, sort_keys=True))
    n_tensors = sum(len(v) for v in digests.values() if isinstance(v, dict))
    print(f"{len(digests)} files ({n_tensors} checkpoint tensors) digested from {workdir} into {out}")


def snapshot(out: Path, workdir: Path | None) -> None:
    env = {**os.environ, "MKL_CBWR": os.environ.get("MKL_CBWR", "COMPATIBLE")}
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bitcheck-"))
    if workdir.exists() and any(workdir.iterdir()):  # finished runs would be reused, not made again
        sys.exit(f"bitcheck: {workdir} is not empty; a snapshot needs a fresh work folder")
    bber = [sys.executable, "-m", "bber_utils.cli"]
    subprocess.run([*bber, "reproduce", "--profile", "smoke", "--workdir", str(workdir)], check=True, env=env)
    for extra in EXTRA_RUNS:
        subprocess.run([*bber, "train", "--config", "smoke", f"workdir={workdir}", "progress=false", *extra],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    write_digest(out, workdir)


def compare(a: Path, b: Path) -> int:
    fa, fb = (json.loads(p.read_text())["files"] for p in (a, b))
    only_a, only_b = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
    differ = sorted(k for k in set(fa) & set(fb) if fa[k] != fb[k])
    for name, items in (("only in A", only_a), ("only in B", only_b), ("differ", differ)):
        for k in items:
            print(f"{name}: {k}")
    n_tensors = sum(len(v) for v in fa.values() if isinstance(v, dict))
    same = not (only_a or only_b or differ)
    print(f"{'identical' if same else 'DIFFERENT'}: {len(fa)} files, {n_tensors} checkpoint tensors compared")
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bitcheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("out", type=Path)
    s.add_argument("--workdir", type=Path, default=None)
    d = sub.add_parser("digest")
    d.add_argument("out", type=Path)
    d.add_argument("--workdir", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "snapshot":
        snapshot(args.out, args.workdir)
        return 0
    if args.cmd == "digest":
        write_digest(args.out, args.workdir)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
