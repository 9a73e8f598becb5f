"""``bber prepare {meld,resd,demo,union} --root DIR [--resd-root DIR] --out DIR [--limit N]``, or
``bber prepare table --csv FILE --out DIR [--corpus NAME] [--label-map raw=class,...] [--column role=name]``."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from bber_utils.corpora import counts_table, load_skips, prepare
from bber_utils.corpora.table import check_fractions, prepare_table
from bber_utils.corpora.text_clean import TableError


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare", help="read MELD / RESD / the demo corpus into manifests",
        description="Write <out>/manifests/{corpus}_{split}.parquet and the skip report <out>/manifests/skips.csv, "
                    "then print the utterance counts per split and class.")
    p.add_argument("dataset", choices=["meld", "resd", "demo", "union", "table"])
    p.add_argument("--root", help="MELD root (meld, union) or RESD root (resd)")
    p.add_argument("--resd-root", help="RESD root for union")
    p.add_argument("--out", required=True, help="work folder (e.g. runs/paper)")
    p.add_argument("--limit", type=int, default=0, help="keep at most N utterances per split (0 = all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dev-fraction", type=float, default=0.15,
                   help="RESD: dev split drawn from train; table without split column: dialogues to dev [0, 1)")
    p.add_argument("--demo-per-class", type=int, default=40, help="demo corpus size per class")
    p.add_argument("--force", action="store_true", help="rebuild even if manifests with these options exist")
    t = p.add_argument_group("table (any corpus from one CSV/Parquet, audio optional: bber_utils.corpora.table)")
    t.add_argument("--csv", help="the table (CSV or Parquet) for 'table'")
    t.add_argument("--corpus", default="table", help="corpus name of the table's manifests")
    t.add_argument("--label-map", default=None, help="raw=class pairs ('joy=happy,exc=happy') or a JSON file")
    t.add_argument("--column", action="append", default=[], metavar="ROLE=NAME",
                   help="the table's column for a role (text, audio_path, label, split, dialogue_id, "
                        "utterance_id, speaker, language, start_s, end_s), e.g. --column text=Utterance; the column "
                        "must exist. Numeric utterance ids order a dialogue's context, else the table's row order")
    t.add_argument("--language", default="en",
                   help="language of rows without a language column: any ISO 639-1 code (en, ru, pl ...)")
    t.add_argument("--classes", default=None,
                   help="the corpus's label set, e.g. anger,fear,neutral (default: the classes its labels name); "
                        "training predicts only these, scores average over them")
    t.add_argument("--split-by", default="dialogue", choices=["dialogue", "speaker"],
                   help="without a split column: draw dev/test by dialogue, or by speaker (speaker-independent; "
                        "with a split column, speaker checks that no speaker is in two splits)")
    t.add_argument("--add", action="store_true",
                   help="keep the other corpora of --out (train on several corpora, each with its own label set)")
    t.add_argument("--test-fraction", type=float, default=0.15,
                   help="table without split column: dialogues to test [0, 1); dev + test below 1")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    try:
        check_fractions(args.dev_fraction, args.test_fraction if args.dataset == "table" else 0.0)
    except ValueError as exc:
        print(f"bber prepare: error: {exc}", file=sys.stderr)
        return 2
    if args.dataset == "table":
        return _run_table(args)
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
        print(f"bber prepare: error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(counts_table(frames).to_string(index=False))
        skips = load_skips(args.out)
        print(f"\nskipped {len(skips)} utterance(s)")
        if len(skips):
            print(skips.groupby(["corpus", "split"]).size().rename("skipped").to_string())
    return 0


def _run_table(args: argparse.Namespace) -> int:
    if not args.csv:
        print("bber prepare: error: 'table' needs --csv FILE")
        return 2
    try:
        columns = _parse_columns(args.column)
        frames, report = prepare_table(args.csv, args.out, corpus=args.corpus, force=args.force, columns=columns,
                                       label_map=args.label_map, language=args.language,
                                       dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
                                       seed=args.seed, limit=args.limit, classes=args.classes,
                                       split_by=args.split_by, add=args.add)
    except (ValueError, FileNotFoundError, TableError) as exc:
        print(f"bber prepare: error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(counts_table(frames).to_string(index=False))
        if report is not None:
            print(report.summary())
        skips = load_skips(args.out)
        print(f"\nskipped {len(skips)} utterance(s)")
        if len(skips):
            print(skips["reason"].str.replace(r"^.*? row \d+: ", "", regex=True).value_counts().to_string())
    return 0


def _parse_columns(specs: list[str]) -> dict[str, str]:
    """``["text=Utterance", ...]`` -> ``{"text": "Utterance"}``; ``ValueError`` for a spec without ``=`` or a
    name, or a role given twice (roles are checked by ``read_table``)."""
    columns: dict[str, str] = {}
    for spec in specs:
        role, eq, name = (part.strip() for part in spec.partition("="))
        if not eq or not role or not name:
            raise ValueError(f"--column takes ROLE=NAME, e.g. --column text=Utterance (got {spec!r})")
        if role in columns:
            raise ValueError(f"--column {role} given twice ({columns[role]!r} and {name!r})")
        columns[role] = name
    return columns
