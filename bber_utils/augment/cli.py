"""``bber sds``, ``bber tug`` and ``bber label``: the three augmentations from the
shell.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import pandas as pd

from bber_utils.augment import sds, tug
from bber_utils.augment.ls_llm.cli import register_cli as register_label_cli
from bber_utils.augment.sds import MAX_SECONDS, MODES, TARGET_SECONDS
from bber_utils.augment.tug_llm import TEMPLATE_SOURCES, resolve_templates, templates_table
from bber_utils.features.store import check_shard
from bber_utils.synthesis.tts import TTS_NAMES
if TYPE_CHECKING:
    pass


def register_sds_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "sds", help="stacked data sampling on every corpus's train manifest",
        description="Merge short train utterances with same-label partners; writes "
                    "<workdir>/sds/{corpus}_train_sds.parquet and the merged wavs under <workdir>/sds/wavs/.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--ratio", type=float, required=True, help="fraction of eligible (short) utterances merged")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--target-seconds", type=float, default=TARGET_SECONDS)
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS)
    p.add_argument("--gap-seconds", type=float, default=0.0)
    p.add_argument("--mode", choices=MODES, default="add")
    p.set_defaults(func=_run_sds_cli)


def _run_sds_cli(args: argparse.Namespace) -> int:
    try:
        result = sds.apply_sds_to_workdir(args.workdir, args.ratio, args.seed, args.target_seconds, args.max_seconds,
                                      args.gap_seconds, args.mode)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bber sds: error: {exc}", file=sys.stderr)
        return 2
    for corpus, df in result.items():
        s = df.attrs["sds"]
        print(f"{corpus}: {s['eligible']} eligible, {s['selected']} selected, {s['merged']} merged "
              f"({s['cropped']} cropped), {s['skipped']} skipped -> {len(df)} train rows")
    return 0


def register_tug_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tug", help="TUG: compose emotional utterances from templates and speak them (synthetic train data)",
        description="Write <workdir>/tug/tug_{lang}.parquet: templates (built-in or LLM-written, cached) -> "
                    "seeded unique utterances -> TTS wavs. Resumable; failures are dropped and listed in "
                    "tug/tug_{lang}_dropped.csv.")
    p.add_argument("--workdir", required=True, help="run folder (e.g. runs/demo)")
    p.add_argument("--languages", nargs="+", default=["en", "ru"], choices=["en", "ru"])
    p.add_argument("--per-class", type=int, default=20, help="utterances per emotion and language (default 20)")
    p.add_argument("--tts", default="espeak",
                   help="espeak | mms | dia, or one per language such as en=dia,ru=mms (default espeak)")
    p.add_argument("--tts-model", default=None, help="TTS hub id or folder, or one per language: en=ID,ru=ID")
    p.add_argument("--template-source", default="builtin", choices=list(TEMPLATE_SOURCES))
    p.add_argument("--llm-model", default=None, help="LLM for --template-source openai/transformers")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (default: OpenAI)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="speak only utterances i = I (mod N) into tug/parts/ (run N in parallel, e.g. one per "
                        "GPU), then once without --shard to merge the parts into tug/tug_{lang}.parquet")
    p.set_defaults(func=_run_tug_cli)


def _run_tug_cli(args: argparse.Namespace) -> int:
    if args.per_class < 0:
        print(f"bber tug: --per-class must be >= 0, got {args.per_class}")
        return 2
    tts = tug._parse_per_language(args.tts)
    names = set(tts.values()) if isinstance(tts, dict) else {tts}
    if not names <= set(TTS_NAMES):
        print(f"bber tug: unknown TTS {sorted(names - set(TTS_NAMES))}; choose from {', '.join(TTS_NAMES)}")
        return 2
    try:
        check_shard(args.shard)
    except ValueError as e:
        print(f"bber tug: {e}")
        return 2
    if args.template_source != "builtin" and not args.llm_model:
        print(f"bber tug: --template-source {args.template_source} needs --llm-model")
        return 2
    sets = resolve_templates(args.workdir, args.languages, args.template_source, llm_model=args.llm_model,
                             base_url=args.base_url, seed=args.seed)
    table = templates_table(sets)
    print(table[["language", "emotion", "source", "templates", "note"]].to_string(index=False))
    frames = []
    for language in args.languages:
        frames.append(tug.build_synthetic_corpus(args.workdir, language, args.per_class, tts=tts,
                                             template_source=sets, seed=args.seed,
                                             tts_model=tug._parse_per_language(args.tts_model), shard=args.shard))
        if args.shard:
            print(f"shard {args.shard} of {language}: {len(frames[-1])} utterances in "
                  f"{tug._part_paths(args.workdir, language, check_shard(args.shard))[0]}; run once without --shard "
                  f"to merge the parts")
        else:
            print(f"wrote {tug.synthetic_manifest_path(args.workdir, language)}: {len(frames[-1])} utterances")
    df = pd.concat(frames, ignore_index=True)
    if len(df):
        print(pd.crosstab(df["label"], df["language"]).to_string())
    dropped = tug.load_dropped(args.workdir, args.languages)
    if len(dropped):
        print(f"dropped {len(dropped)}:")
        print(dropped.groupby(["language", "reason"]).size().to_string())
    empty = [lang for lang, f in zip(args.languages, frames) if len(f) == 0]
    return 1 if args.per_class > 0 and empty else 0


def register_cli(subparsers) -> None:
    """``bber sds``, ``bber tug``, ``bber label``."""

    register_sds_cli(subparsers)
    register_tug_cli(subparsers)
    register_label_cli(subparsers)
