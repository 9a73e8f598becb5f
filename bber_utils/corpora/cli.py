"""``bber prepare {meld,resd,demo,union} --root DIR [--resd-root DIR] --out DIR [--limit N]``."""

from __future__ import annotations

import argparse


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare", help="read MELD / RESD / the demo corpus into manifests",
        description="Write <out>/manifests/{corpus}_{split}.parquet and the skip report <out>/manifests/skips.csv, "
                    "then print the utterance counts per split and class.")
    p.add_argument("dataset", choices=["meld", "resd", "demo", "union"])
    p.add_argument("--root", help="MELD root (meld, union) or RESD root (resd)")
    p.add_argument("--resd-root", help="RESD root for union")
    p.add_argument("--out", required=True, help="work folder (e.g. runs/paper)")
    p.add_argument("--limit", type=int, default=0, help="keep at most N utterances per split (0 = all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dev-fraction", type=float, default=0.15, help="RESD dev split drawn from train")
    p.add_argument("--demo-per-class", type=int, default=40, help="demo corpus size per class")
    p.add_argument("--force", action="store_true", help="rebuild even if manifests with these options exist")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import counts_table, load_skips, prepare

    meld_root = resd_root = None
    if args.dataset in ("meld", "union"):
        meld_root = args.root
    if args.dataset == "resd":
        resd_root = args.root or args.resd_root
    if args.dataset == "union":
        resd_root = args.resd_root
    try:
        frames = prepare(args.dataset, args.out, meld_root=meld_root, resd_root=resd_root, limit=args.limit,
                         seed=args.seed, demo_per_class=args.demo_per_class, dev_fraction=args.dev_fraction,
                         force=args.force)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bber prepare: error: {exc}")
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(counts_table(frames).to_string(index=False))
        skips = load_skips(args.out)
        print(f"\nskipped {len(skips)} utterance(s)")
        if len(skips):
            print(skips.groupby(["corpus", "split"]).size().rename("skipped").to_string())
    return 0
