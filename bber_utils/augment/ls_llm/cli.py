"""``bber label``: the command line of LS-LLM (arguments -> :func:`.workdir.label_workdir` -> a summary).

Owns only argument parsing and printing; imports :mod:`.workdir` and :mod:`.labellers`' constants.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bber_utils.augment.ls_llm.labellers import LABEL_BACKENDS, MODES
from bber_utils.augment.ls_llm.replies import POLICIES
from bber_utils.augment.ls_llm.tables import SOFT_LABELS_FILE
from bber_utils.augment.ls_llm.workdir import label_workdir, status_summary
from bber_utils.synthesis.llm import LLMUnavailable

_DESCRIPTION = "LS-LLM: soft labels from an LLM (label smoothing with LLM knowledge), notebook 05 and ``bber label``."


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("label", help="LS-LLM: soft labels for the train manifests of a work folder",
                              description=_DESCRIPTION)
    p.add_argument("--workdir", required=True, help="run folder holding manifests/ (notebook 01)")
    p.add_argument("--backend", choices=LABEL_BACKENDS, default="lexicon",
                   help="lexicon: offline, not an LLM; transformers: local model; openai: OpenAI-compatible "
                        "server; reference: published label file")
    p.add_argument("--model", help="hub id, local folder or server model name (transformers, openai)")
    p.add_argument("--mode", choices=MODES, default="generate", help="generate + parse, or class-word logits")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    p.add_argument("--reference-csv", help="a reference *_emotions_*.csv (backend reference)")
    p.add_argument("--corpus", default="auto", help="corpus of the reference file's rows (auto: from the names)")
    p.add_argument("--corpora", nargs="*", help="label only these corpora's train manifests")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (openai)")
    p.add_argument("--policy", choices=POLICIES, default="swap",
                   help="when the true label is not highest: swap it with the max, or reject the reply")
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, default=0, help="label at most N utterances per corpus (0 = all)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="label only utterances i = I (mod N) into this shard's part of the cache (run N in "
                        "parallel, e.g. one per GPU), then once without --shard to merge and write the table")
    p.set_defaults(func=_cli_label)


def _cli_label(args: argparse.Namespace) -> int:
    try:
        table = label_workdir(args.workdir, backend=args.backend, model=args.model, mode=args.mode,
                              corpora=args.corpora, batch_size=args.batch_size, policy=args.policy,
                              limit=args.limit, base_url=args.base_url, reference_csv=args.reference_csv,
                              corpus=args.corpus, device=args.device, max_new_tokens=args.max_new_tokens,
                              concurrency=args.concurrency, shard=args.shard)
    except (LLMUnavailable, FileNotFoundError, ValueError) as e:
        print(f"bber label: {e}", file=sys.stderr)
        return 2
    print(status_summary(table).to_string(index=False))
    if args.shard:
        print(f"shard {args.shard}: {len(table)} utterances, {table.attrs.get('computed', 0)} asked now; run "
              f"once without --shard to merge the parts and write the table")
    else:
        print(f"{len(table)} utterances, {table.attrs.get('computed', 0)} asked now; wrote "
              f"{Path(args.workdir) / 'ls_llm' / SOFT_LABELS_FILE}")
    return 0
