"""PyTorch vs onnxruntime on CPU: per-clip latency and peak memory of the same model on the same clips, and which
model families export (with their parity). Writes ``benchmarks/onnx_cpu.md``. (Not named ``onnx.py``: a script run
from this folder has it first on ``sys.path``, so that name would shadow the ``onnx`` package.)

1. Families: every name of ``models.MODEL_NAMES`` at tiny sizes is exported by ``bber export --onnx`` and its
   onnxruntime probabilities compared with PyTorch's on a one-frame batch, a typical one (4 s, 12 words) and the
   longest clip scored without ``--window`` (60 s, 95 words): max absolute difference, export CPU seconds.
2. Latency and memory: a biformer at the demo profile's sizes (log-mel 80-d + e5-words 384-d, ``audio_pool`` 4,
   as ``configs/demo.yaml``) and at the paper's sizes (``ModelConfig`` defaults, 1024-d audio and text features
   as wav2vec2-large and jina-v3 give, ``audio_pool`` 1). Each backend runs in a process of its own (so its peak
   memory is its own): PyTorch (``Predictor(folder)``) or onnxruntime (``Predictor(folder, onnx=True)``, which
   imports no torch). Per clip, batch 1: the model alone on the same feature arrays, and, at the demo sizes, the
   whole ``predict`` (audio loading, log-mel, e5-words, model). One thread for both (torch and onnxruntime): on a
   shared 2-core machine two threads made torch 10x slower from contention. Workers alternate (torch, onnx,
   torch, onnx, ...) for ``--rounds`` rounds, ``--reps`` timed repetitions each after one warm-up; reported: the
   median over all repetitions, wall and process CPU time, and the process's peak resident memory.

    .venv/bin/python benchmarks/onnx_cpu.py              # both parts, about 20 minutes here
    .venv/bin/python benchmarks/onnx_cpu.py --quick      # fewer repetitions and no paper sizes
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "onnx_cpu.md"
CLIP_SECONDS = (1.0, 4.0, 15.0)
TEXT = "oh no I cannot believe you did that again why would anyone do this"
SIZES = {
    "demo": {"model": dict(hidden_dim=32, num_heads=4, num_layers=1, mamba_layers=1, mamba_d_state=8,
                           mamba_d_conv=4, out_features=32),
             "features": {"audio_encoder": "logmel", "text_encoder": "e5-words", "text_max_tokens": 95,
                          "audio_pool": 4}, "dims": None},
    "paper": {"model": {}, "features": {"audio_encoder": "logmel", "text_encoder": "hashgram", "audio_pool": 1},
              "dims": (1024, 1024)},
}
TINY = dict(hidden_dim=16, num_heads=2, num_layers=1, mamba_layers=1, mamba_d_state=4, out_features=16, gated_dim=8,
            graph_heads=1, bimamba_layers=1)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown"


def make_run(root: Path, name: str, model: dict, features: dict, dims: tuple[int, int] | None) -> Path:
    """A run folder with a randomly initialised ``name`` (speed does not depend on the weights)."""
    import torch

    from bber_utils.features.extract import encoders_from_params
    from bber_utils.models import build_model
    from bber_utils.models.config import ModelConfig

    if dims is None:
        audio, text = encoders_from_params(features)
        dims = (audio.dim, text.dim)
    cfg = ModelConfig.from_dict({**model, "model": name})
    torch.manual_seed(0)
    net = build_model(name, cfg, *dims)
    run = root / f"{name}-run"
    run.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "model_name": name, "d_audio": dims[0], "d_text": dims[1],
                "model_config": cfg.to_dict(), "features": features, "config": {}}, run / "best.pt")
    return run


# ---------------------------------------------------------------------------------------------------- families
def families(root: Path) -> list[dict]:
    """Export every family at tiny sizes; max |onnxruntime - PyTorch| over one-frame, typical and 60 s batches."""
    import numpy as np

    from bber_utils.models import MODEL_NAMES
    from bber_utils.predict import export, hub, onnx_model, predictor

    rows = []
    for name in MODEL_NAMES:
        run = make_run(root, name, TINY, {"audio_encoder": "logmel", "text_encoder": "hashgram"}, None)
        c0 = time.process_time()
        try:
            folder = export.export_model(run, root / f"{name}-model", onnx=True)
        except Exception as exc:  # a family that does not export: recorded, not fatal
            rows.append({"model": name, "exports": f"no: {str(exc).splitlines()[0][:80]}"})
            continue
        seconds = time.process_time() - c0
        cfg = hub.read_config(folder)
        torch_model = predictor.TorchBackend(hub.load_trained(folder)[0], "cpu")
        ort_model = onnx_model.OnnxModel(folder / "model.onnx", cfg)
        worst = 0.0
        for batch, lengths in ((1, {"audio": 1, "text": 1}), (2, {"audio": 200, "text": 12}),
                               (2, {"audio": 2999, "text": 95})):
            arrays = dict(zip(onnx_model.input_names(tuple(cfg["encoders"])),
                              onnx_model.example_inputs(cfg, batch, lengths)))
            ref, got = torch_model.probabilities(arrays), ort_model.probabilities(arrays)
            worst = max(worst, *(float(np.abs(got[k] - ref[k]).max()) for k in ref))
        rows.append({"model": name, "exports": "yes", "max_abs_diff": worst, "export_cpu_s": seconds,
                     "onnx_kb": (folder / "model.onnx").stat().st_size / 1024})
        print(f"{name}: {rows[-1]}", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------------- latency
def worker(backend: str, folder: Path, clips: list[str], reps: int, end_to_end: bool) -> dict:
    """One backend in this process: per clip, wall / CPU ms of the model alone (and of the whole ``predict``)."""
    rss0 = peak_mb()
    from bber_utils.predict import hub, onnx_model, predictor

    cfg = hub.read_config(folder)
    if backend == "torch":
        import torch

        torch.set_num_threads(1)
        model = predictor.TorchBackend(hub.load_trained(folder)[0], "cpu")
    else:
        model = onnx_model.OnnxModel(folder / "model.onnx", cfg, threads=1)
    pred = None
    if end_to_end:
        pred = predictor.Predictor(folder, device="cpu", onnx=backend == "onnx")
        pred.backend = model
    out = {"rss_start_mb": rss0, "rss_loaded_mb": peak_mb(), "model": {}, "predict": {}}
    for clip in clips:
        arrays = _arrays(folder, cfg, clip)
        model.probabilities(arrays)  # warm-up
        out["model"][clip] = _times(lambda: model.probabilities(arrays), reps)
        if pred is not None:
            pred.predict([clip], [TEXT])
            out["predict"][clip] = _times(lambda: pred.predict([clip], [TEXT]), reps)
    out["rss_peak_mb"] = peak_mb()
    out["torch_imported"] = "torch" in sys.modules
    return out


def peak_mb() -> float:
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` would carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _arrays(folder: Path, cfg: dict, clip: str) -> dict:
    """The feature arrays of ``clip`` and ``TEXT`` as ``Predictor`` builds them; where the model's widths are not
    the encoders' (the paper sizes), random features of the same lengths and the model's widths."""
    import numpy as np

    from bber_utils.core.audio import load_audio
    from bber_utils.predict import checkpoint, predictor
    from bber_utils.train.dataset import pool_frames

    audio_enc, text_enc = checkpoint.checkpoint_encoders(folder, cfg["settings"])
    frames = pool_frames(audio_enc.encode([load_audio(clip)])[0], int(cfg["settings"]["audio_pool"] or 1))
    text = predictor.text_features(text_enc, [TEXT], None, 0)[0]
    rng = np.random.default_rng(0)
    if frames.shape[1] != cfg["d_audio"]:
        frames = rng.standard_normal((len(frames), cfg["d_audio"])).astype(np.float32)
    if text.shape[1] != cfg["d_text"]:
        text = rng.standard_normal((len(text), cfg["d_text"])).astype(np.float32)
    arrays = {}
    arrays["audio"], arrays["audio_mask"] = predictor.pad_arrays([frames])
    arrays["text"], arrays["text_mask"] = predictor.pad_arrays([text])
    return arrays


def _times(fn, reps: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        out.append(((time.perf_counter() - w) * 1000, (time.process_time() - c) * 1000))
    return out


def latency(root: Path, size: str, reps: int, rounds: int) -> dict:
    from bber_utils.core.audio import write_wav
    from bber_utils.predict import export

    import numpy as np

    spec = SIZES[size]
    run = make_run(root, "biformer", spec["model"], spec["features"], spec["dims"])
    c0 = time.process_time()
    folder = export.export_model(run, root / f"{size}-model", onnx=True)
    export_s = time.process_time() - c0
    rng = np.random.default_rng(0)
    clips = []
    for s in CLIP_SECONDS:
        t = np.arange(int(s * 16000)) / 16000
        wav = 0.2 * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * np.sin(t))) + 0.01 * rng.standard_normal(len(t))
        clips.append(str(write_wav(root / f"clip{s:g}.wav", wav.astype(np.float32), 16000)))
    results = {"torch": [], "onnx": []}
    for _ in range(rounds):
        for backend in results:
            cmd = [sys.executable, __file__, "--worker", backend, "--folder", str(folder), "--reps", str(reps),
                   *(["--end-to-end"] if size == "demo" else []), "--clips", *clips]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if done.returncode:
                raise RuntimeError(f"{backend} worker failed: {done.stderr[-2000:]}")
            results[backend].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"size": size, "clips": clips, "export_cpu_s": export_s, "results": results,
            "onnx_mb": (folder / "model.onnx").stat().st_size / 2**20,
            "safetensors_mb": (folder / "model.safetensors").stat().st_size / 2**20}


# ---------------------------------------------------------------------------------------------------- markdown
def _median(runs: list[dict], part: str, clip: str, which: int) -> float:
    return statistics.median(t[which] for r in runs for t in r[part][clip])


def latency_table(res: dict) -> list[str]:
    lines = ["| clip | part | PyTorch wall ms | onnxruntime wall ms | PyTorch CPU ms | onnxruntime CPU ms | "
             "wall speed-up |", "|---|---|---|---|---|---|---|"]
    for clip, seconds in zip(res["clips"], CLIP_SECONDS):
        for part in ("model", "predict"):
            if not res["results"]["torch"][0][part]:
                continue
            t, o = (_median(res["results"][b], part, clip, 0) for b in ("torch", "onnx"))
            tc, oc = (_median(res["results"][b], part, clip, 1) for b in ("torch", "onnx"))
            what = "model alone" if part == "model" else "whole predict"
            lines.append(f"| {seconds:g} s | {what} | {t:.1f} | {o:.1f} | {tc:.1f} | {oc:.1f} | {t / o:.1f}× |")
    mem = {b: (max(r["rss_peak_mb"] for r in runs), statistics.median(r["rss_loaded_mb"] for r in runs),
               any(r["torch_imported"] for r in runs)) for b, runs in res["results"].items()}
    lines += ["", "| backend | peak memory (MiB, max over workers) | after imports and loading (MiB) | torch imported |",
              "|---|---|---|---|"]
    for b, (peak, loaded, imported) in mem.items():
        lines.append(f"| {'PyTorch' if b == 'torch' else 'onnxruntime'} | {peak:.0f} | {loaded:.0f} | "
                     f"{'yes' if imported else 'no'} |")
    return lines


def write_markdown(fam: list[dict], lat: list[dict], header: dict) -> None:
    lines = ["# PyTorch vs onnxruntime on CPU: measured results", "",
             f"Written by `benchmarks/onnx_cpu.py` ({header['args']}) on {header['date']}. **Machine:** {header['cpu']}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()}, torch {header['torch']}, onnxruntime "
             f"{header['ort']}. **The machine was shared with other agents' jobs** (load average "
             f"{header['load_start']} at the start, {header['load_end']} at the end, on {os.cpu_count()} cores): "
             f"absolute times are inflated and noisy; both backends ran alternately in the same period, one thread "
             f"each, and the medians over repetitions and rounds are what to compare.", ""]
    if fam:
        lines += ["## Which families export", "",
                  "Tiny sizes (hidden 16). Max |onnxruntime − PyTorch| of the probabilities over a one-frame batch, a "
                  "4 s batch and a 60 s batch (2999 frames, 95 words); the export's CPU time includes its own parity "
                  "check.", "", "| model | exports | max abs diff | export CPU s | model.onnx KiB |",
                  "|---|---|---|---|---|"]
        for r in fam:
            if r["exports"] != "yes":
                lines.append(f"| {r['model']} | {r['exports']} | | | |")
            else:
                lines.append(f"| {r['model']} | yes | {r['max_abs_diff']:.1e} | {r['export_cpu_s']:.0f} | "
                             f"{r['onnx_kb']:.0f} |")
        lines.append("")
    for res in lat:
        spec = SIZES[res["size"]]
        lines += [f"## Latency and memory per clip: biformer, {res['size']} sizes", "",
                  f"Model keys {spec['model'] or 'ModelConfig defaults (the paper)'}; features {spec['features']}"
                  + (f", stand-in features of widths {spec['dims']}" if spec["dims"] else "") +
                  f". Export: {res['export_cpu_s']:.0f} CPU s; model.onnx {res['onnx_mb']:.1f} MiB, "
                  f"model.safetensors {res['safetensors_mb']:.1f} MiB. Batch 1, one thread; "
                  f"{len(res['results']['torch'])} rounds × {header['reps']} repetitions.", "",
                  *latency_table(res), ""]
    OUT.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2 rounds of 3, demo sizes only")
    p.add_argument("--skip-families", action="store_true")
    p.add_argument("--worker", choices=["torch", "onnx"], help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--clips", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--end-to-end", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, args.clips, args.reps, args.end_to_end)))
        return 0
    if args.quick:
        args.reps, args.rounds = 3, 2
    import onnxruntime
    import torch

    header = {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "torch": torch.__version__,
              "ort": onnxruntime.__version__, "reps": args.reps, "load_start": f"{os.getloadavg()[0]:.1f}",
              "args": " ".join(sys.argv[1:]) or "no options"}
    with tempfile.TemporaryDirectory() as tmp:
        fam = [] if args.skip_families else families(Path(tmp) / "families")
        lat = [latency(Path(tmp) / size, size, args.reps, args.rounds)
               for size in (("demo",) if args.quick else ("demo", "paper"))]
    header["load_end"] = f"{os.getloadavg()[0]:.1f}"
    write_markdown(fam, lat, header)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
