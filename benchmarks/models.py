"""Training throughput of every registry model at the paper's sizes, and the parameter table.

    .venv/bin/python benchmarks/models.py                 # paper sizes, batch 8, 200 audio frames, 40 tokens
    .venv/bin/python benchmarks/models.py --steps 5 --models biformer bimamba

For each model: training samples/s (forward + backward + AdamW step) of
  * ``fusion``: the fusion part alone on cached ``encode`` outputs (frozen encoders, the default setup), and
  * ``whole``: the whole model with unfrozen encoders, from features.
The unimodal models have only the ``whole`` number. Results are recorded in benchmarks/models.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from bber_utils.models import MODEL_NAMES, UNIMODAL_NAMES, ModelConfig, build_model, parameter_table


def random_batch(batch: int, audio_len: int, text_len: int, d_audio: int, d_text: int, seed: int = 0) -> dict:
    """Random features with varied real lengths (the longest = audio_len / text_len) and their masks."""
    g = torch.Generator().manual_seed(seed)
    a_len = torch.randint(audio_len // 2, audio_len + 1, (batch,), generator=g)
    t_len = torch.randint(max(1, text_len // 2), text_len + 1, (batch,), generator=g)
    a_len[0], t_len[0] = audio_len, text_len
    return {"audio": torch.randn(batch, audio_len, d_audio, generator=g),
            "audio_mask": torch.arange(audio_len) < a_len.unsqueeze(1),
            "text": torch.randn(batch, text_len, d_text, generator=g),
            "text_mask": torch.arange(text_len) < t_len.unsqueeze(1),
            "label": torch.randint(0, 7, (batch,), generator=g)}


def time_steps(step, steps: int) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) per call of ``step`` after one warm-up call. CPU time is
    less sensitive than wall time to other processes sharing the machine."""
    step()
    wall, cpu = [], []
    for _ in range(steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def bench_model(name: str, cfg: ModelConfig, batch: dict, d_audio: int, d_text: int, steps: int,
                parts=("fusion", "whole")) -> dict:
    torch.manual_seed(0)
    model = build_model(name, cfg, d_audio, d_text).train()
    n = batch["label"].shape[0]
    row = {"model": name}

    if name not in UNIMODAL_NAMES and "fusion" in parts:
        model.freeze_encoders(True)
        with torch.no_grad():
            cached = model.encode(batch)
        opt = torch.optim.AdamW(model.fusion_parameters(), lr=1e-4)

        def fusion_step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model.fuse(cached), batch["label"]).backward()
            opt.step()

        wall, cpu = time_steps(fusion_step, steps)
        row["fusion_samples_per_s"], row["fusion_samples_per_cpu_s"] = n / wall, n / cpu
    if "whole" not in parts:
        return row
    if name not in UNIMODAL_NAMES:
        model.freeze_encoders(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def whole_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch), batch["label"]).backward()
        opt.step()

    wall, cpu = time_steps(whole_step, steps)
    row["whole_samples_per_s"], row["whole_samples_per_cpu_s"] = n / wall, n / cpu
    return row


def markdown(df) -> str:
    """A DataFrame (index = first column) as a GitHub markdown table, without the tabulate package."""
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = [f"{v:,}" if isinstance(v, int) else ("" if v != v else f"{v:g}") for v in row.tolist()]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=list(MODEL_NAMES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--audio-len", type=int, default=200)
    p.add_argument("--text-len", type=int, default=40)
    p.add_argument("--d-audio", type=int, default=1024)
    p.add_argument("--d-text", type=int, default=1024)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--parts", nargs="+", choices=("fusion", "whole"), default=["fusion", "whole"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--ff-expansion", type=int, default=None,
                   help="cross layers' feed-forward width (default: ModelConfig's 1, the reference's; 4 = ff4)")
    args = p.parse_args(argv)

    import pandas as pd

    import os

    if args.threads:
        torch.set_num_threads(args.threads)

    from bber_utils.models import mamba

    try:  # private helper of the Mamba module: which scan "auto" picks
        scan = mamba._auto_impl(torch.zeros(1))
    except Exception as err:  # noqa: BLE001 - informative only
        scan = f"unknown ({err})"
    cfg = ModelConfig() if args.ff_expansion is None else ModelConfig(ff_expansion=args.ff_expansion)  # paper sizes
    print(f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()}; Mamba scan on CPU: "
          f"{scan}\n# config {cfg.to_dict()}")
    print("\n## Parameters (d_audio = d_text = 1024)\n")
    print(markdown(parameter_table(cfg, args.d_audio, args.d_text)))
    ff4 = parameter_table(ModelConfig(ff_expansion=4), args.d_audio, args.d_text)
    print("\n## Fusion parameters of the \"ff4\" variant (ff_expansion=4)\n")
    print(markdown(ff4[["fusion"]]))

    batch = random_batch(args.batch, args.audio_len, args.text_len, args.d_audio, args.d_text)
    rows = []
    for name in args.models:
        rows.append(bench_model(name, cfg, batch, args.d_audio, args.d_text, args.steps, args.parts))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows).set_index("model").round(1)
    print(f"\n## Training samples/s (batch {args.batch}, {args.audio_len} audio frames, {args.text_len} tokens)\n")
    print(markdown(table))
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
