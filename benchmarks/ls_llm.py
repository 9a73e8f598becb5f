"""LS-LLM benchmarks: logit scoring vs generation (utterances/s on the same model), the reply parser on the
reference's published label files, and the offline lexicon's throughput.

Run: ``.venv/bin/python benchmarks/ls_llm.py [--hidden 256 --layers 4 --n 32 --new-tokens 40]``; prints a
markdown report (recorded in benchmarks/ls_llm.md). The LM is a random Qwen3 of the given size with the test
suite's small EN+RU BPE tokenizer (no download); a random model never stops early, so generation always runs
``--new-tokens`` steps: 56 is what the paper's 7-number reply costs with Qwen's tokenizer, which writes one token
per digit ("0.12345," = 8 tokens).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REFERENCE_DIR = REPO.parent / "shared" / "data" / "reference_llm_labels"

SENTENCES = [
    "I can't believe you did that, it's wonderful!", "Leave me alone, I hate this.", "We meet at noon tomorrow.",
    "Мне страшно, кто-то ходит за дверью.", "Фу, какая гадость, убери это.", "Я так рада тебя видеть!",
    "Oh no, I lost my keys again.", "Неужели ты это сделал сам?",
]


def _requests(n: int):
    from bber_utils.augment.ls_llm import LabelRequest
    from bber_utils.core.labels import CLASSES

    return [LabelRequest(f"bench-{i}", SENTENCES[i % len(SENTENCES)], CLASSES[i % 7]) for i in range(n)]


def bench_logits_vs_generate(hidden: int, layers: int, n: int, new_tokens: int, batch_size: int, repeats: int,
                             class_words_in_vocab: bool = True):
    import torch
    from tests.tiny_models import build_tiny_causal_lm

    from bber_utils.augment.ls_llm import GenerateLabeller, LogitLabeller
    from bber_utils.synthesis.llm import build_llm

    from bber_utils.augment.ls_llm import GENERATE_PROMPT, LOGITS_PROMPT

    from bber_utils.core.labels import CLASSES

    folder = Path(tempfile.mkdtemp(prefix="lsllm_bench_")) / f"qwen3_h{hidden}_l{layers}"
    # a tokenizer trained on the prompts and sentences: prompts tokenise to about the length Qwen's would give;
    # with class_words_in_vocab each class word (and its capitalised form) is one token, as in a real LLM's vocab
    words = ["\n".join(list(CLASSES) + [c.capitalize() for c in CLASSES])] * 20 if class_words_in_vocab else []
    build_tiny_causal_lm(folder, hidden=hidden, layers=layers, vocab_size=4000,
                         extra_text=(GENERATE_PROMPT, LOGITS_PROMPT, *SENTENCES, *words))
    llm = build_llm("transformers", str(folder), device="cpu", batch_size=batch_size, min_new_tokens=new_tokens)
    n_params = sum(p.numel() for p in llm.model.parameters())
    reqs = _requests(n)
    gen, logit = GenerateLabeller(llm, max_new_tokens=new_tokens), LogitLabeller(llm)
    prompt_tokens = np.mean([len(llm.tokenizer(llm.render(
        __import__("bber_utils.augment.ls_llm", fromlist=["x"]).build_messages(r.text, r.label)))["input_ids"])
        for r in reqs])
    times = {}
    for name, lab in (("generate", gen), ("logits", logit)):
        lab.label(reqs[:batch_size])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for s in range(0, n, batch_size):
                lab.label(reqs[s:s + batch_size])
            best = min(best, time.perf_counter() - t)
        times[name] = best
    shared = [w for w, f in zip(logit.words, logit.full_word) if f]
    return dict(params=n_params, prompt_tokens=prompt_tokens, scoring=logit.scoring + (f" ({', '.join(shared)})"
                                                                                         if shared else ""),
                gen_ups=n / times["generate"], logit_ups=n / times["logits"],
                speedup=times["generate"] / times["logits"], threads=torch.get_num_threads())


def bench_parser():
    from bber_utils.augment.ls_llm import load_soft_labels, parse_reply
    from bber_utils.core.labels import CLASSES

    rows = []
    for f in sorted(REFERENCE_DIR.glob("*.csv")):
        df = pd.read_csv(f)
        published = df[list(CLASSES)].to_numpy(dtype=float)
        t = time.perf_counter()
        parsed = [parse_reply(r) for r in df["response_clean"]]
        dt = time.perf_counter() - t
        sums = [float(np.sum(v)) for v in parsed if v is not None]
        errs = [np.abs(np.asarray(v) / np.sum(v) - p).max() for v, p in zip(parsed, published) if v is not None]
        soft = load_soft_labels(f, usable_only=False)
        reasons = soft["reason"].fillna("")
        rows.append({"file": f.name, "rows": len(df), "parsed": sum(v is not None for v in parsed),
                     "sum of the written values": f"{min(sums):.3f} ... {max(sums):.3f}",
                     "within 1e-4": int(np.sum(np.asarray(errs) < 1e-4)), "max abs error": max(errs),
                     "parse µs/reply": 1e6 * dt / len(df),
                     "clipped tiny negatives": int(reasons.str.contains("clipped").sum()),
                     "true label not highest (swapped)": int(reasons.str.contains("swapped").sum()),
                     "rejected": int((soft["status"] == "rejected").sum())})
    return pd.DataFrame(rows)


def bench_lexicon(n: int = 5000):
    from bber_utils.augment.ls_llm import LexiconLabeller

    lab, reqs = LexiconLabeller(), _requests(n)
    t = time.perf_counter()
    lab.label(reqs)
    return n / (time.perf_counter() - t)


def _markdown(df: pd.DataFrame) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=56)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared 2-core box)")
    ap.add_argument("--parser-only", action="store_true", help="only the reply parser on the reference files")
    args = ap.parse_args()
    if args.parser_only:
        absent = f"(reference label files absent: {REFERENCE_DIR})"
        print(_markdown(bench_parser()) if REFERENCE_DIR.is_dir() else absent)
        return
    import torch

    torch.set_num_threads(args.threads)
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start")
    runs = [(32, 2, True), (args.hidden, args.layers, True), (args.hidden, args.layers, False)]
    print("\n| model | params | prompt tokens | generate utt/s | logits utt/s | speed-up | logit scoring |")
    print("|---|---|---|---|---|---|---|")
    for h, l, in_vocab in runs:
        r = bench_logits_vs_generate(h, l, args.n, args.new_tokens, args.batch_size, args.repeats, in_vocab)
        print(f"| Qwen3 random h{h} l{l} | {r['params'] / 1e6:.2f} M | {r['prompt_tokens']:.0f} | {r['gen_ups']:.1f} | "
              f"{r['logit_ups']:.1f} | {r['speedup']:.1f}x | {r['scoring']} |", flush=True)
    print(f"\n({args.n} utterances, batch {args.batch_size}, {args.new_tokens} new tokens per generated reply, "
          f"best of {args.repeats}, torch threads {r['threads']})")
    if REFERENCE_DIR.is_dir():
        print("\n" + _markdown(bench_parser()))
    else:
        print(f"\n(reference label files absent: {REFERENCE_DIR})")
    print(f"\nlexicon (not an LLM): {bench_lexicon():.0f} utterances/s")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
