"""``bber reproduce --profile demo [--from NN] [--only NN ...] [--set KEY=VALUE]``:
run the notebooks in order with papermill.
"""

from __future__ import annotations

import argparse
import sys

from bber_utils.core.papermill import NotebookFailed
from bber_utils.core.profiles import parse_overrides, resolve_cli_paths
from bber_utils.notebook import pipeline
from bber_utils.notebook.pipeline import Interrupted


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="run every notebook in order with papermill",
                              description=__doc__, epilog=pipeline.profile_keys_help(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="demo", help="smoke | demo | paper, or a path to a YAML profile")
    p.add_argument("--from", dest="from_", metavar="NN", help="start at notebook NN")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks")
    p.add_argument("--workdir", help="run folder (default: the profile's workdir, runs/<profile>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile parameter (repeatable; values are YAML, e.g. --set epochs=3)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    try:
        pipeline.reproduce(args.profile, args.from_, args.only, args.workdir,
                  resolve_cli_paths(parse_overrides(args.overrides)))
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"\n{exc.line()}", file=sys.stderr)
        return 130
    return 0
