"""The ``bber`` command: one subcommand per stage, each defined next to the code it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand module -> each provides register_cli(subparsers)
COMMAND_MODULES = [
    "bber_utils.pipeline",        # reproduce
    "bber_utils.corpora.cli",     # prepare
    "bber_utils.features.cli",    # extract
    "bber_utils.augment.sds",     # sds
    "bber_utils.augment.tug",     # tug
    "bber_utils.augment.ls_llm",  # label
    "bber_utils.train",           # train
    "bber_utils.experiments",     # sweep, results
    "bber_utils.results",         # readme
    "bber_utils.predict",         # predict
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bber", description="Bilingual bimodal emotion recognition: run the pipeline or any stage of it.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
