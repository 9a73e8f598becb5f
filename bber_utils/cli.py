"""The ``bber`` command: one subcommand per stage, each defined next to the code it runs.

Every subcommand shares three behaviours (``main``):

* a bad value (``ConfigError``: unknown key, profile, model, encoder, a value out of range, a key without
  ``=``) prints one line naming it and the valid choices, no traceback, and exits with status 2;
* a missing or malformed input file (``FileNotFoundError``, ``TableError``) prints one line naming it, exit 1;
* a folder it must write into that is read-only prints one line naming it ("cannot write to X: read-only"), exit
  2, checked before the work starts (``fileio.check_writable``); any other permission error also gives one line;
* Ctrl-C prints one line saying what was saved and how to resume, and exits with status 130;
* relative paths typed on the command line (``--workdir``, ``--out``, ``--root``, ``--checkpoint`` …) are taken
  from the current folder; the defaults (``runs/demo``) and the profiles' values are repository-relative.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bber_utils.core import cpu

cpu.pin()  # before the imports below load numpy (and any command torch): the same code paths on every x86-64 CPU

from bber_utils import __version__  # noqa: E402
from bber_utils.augment import cli as augment_cli  # noqa: E402
from bber_utils.core.errors import ConfigError  # noqa: E402
from bber_utils.core.fileio import READ_ONLY_ERRNOS  # noqa: E402
from bber_utils.corpora import cli as corpora_cli  # noqa: E402
from bber_utils.corpora.text_clean import TableError  # noqa: E402
from bber_utils.features import cli as features_cli  # noqa: E402
from bber_utils.notebook import cli as notebook_cli  # noqa: E402
from bber_utils.predict import cli as predict_cli  # noqa: E402
from bber_utils.study import cli as study_cli  # noqa: E402
from bber_utils.study import forked  # noqa: E402
from bber_utils.train import cli as train_cli  # noqa: E402

# Each package's cli module registers its subcommands, in this order in `bber --help`.
COMMANDS = [
    notebook_cli,   # reproduce
    corpora_cli,    # prepare
    features_cli,   # extract
    augment_cli,    # sds, tug, label
    train_cli,      # train
    study_cli,      # sweep, results, readme
    predict_cli,    # predict
]

# Options holding a path, resolved against the current folder when the user typed them.
PATH_OPTIONS = ("workdir", "out", "root", "checkpoint", "meld_root", "resd_root", "manifest", "soft_labels")

# What Ctrl-C leaves behind, per command (the work is saved as it goes; the same command resumes).
INTERRUPT_HINTS = {
    "extract": "finished features are saved in <workdir>/features (flushed every 30 s); rerun the same command "
               "to extract only the rest",
    "label": "the replies so far are cached in <workdir>/ls_llm; rerun the same command to label only the rest",
    "train": "finished epochs are in <workdir>/train/<run>/last.pt; rerun the same command (resume=true) to "
             "continue from the last finished epoch",
    "reproduce": "the notebooks that finished are in <workdir>/notebooks (summary.csv); rerun with --from NN to "
                 "continue from the interrupted one",
    "sweep": "finished runs are kept; rerun the same command to run only the missing ones",
    "prepare": "extracted wavs are kept; rerun the same command to continue",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bber", description="Bilingual bimodal emotion recognition: run the pipeline or any stage of it.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for commands in COMMANDS:
        commands.register_cli(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def resolve_typed_paths(parser: argparse.ArgumentParser, argv: list[str] | None, args: argparse.Namespace,
                        cwd: str | os.PathLike | None = None) -> None:
    """Make the relative path options the user typed absolute against ``cwd`` (default: the current folder);
    options left at their default keep it (repository-relative, like the notebooks)."""
    sub = _subparser(parser, getattr(args, "command", None) or "")
    if sub is None:
        return
    marker = object()
    actions = [a for a in sub._actions if a.dest in PATH_OPTIONS]
    if not actions:
        return
    saved = [a.default for a in actions]
    try:
        for a in actions:
            a.default = marker
        probe = parser.parse_args(argv)
    finally:
        for a, d in zip(actions, saved):
            a.default = d
    base = Path(cwd) if cwd is not None else Path.cwd()

    def fix(v):
        if isinstance(v, str) and v and not Path(os.path.expanduser(v)).is_absolute():
            return str((base / os.path.expanduser(v)).resolve())
        return v

    for a in actions:
        value = getattr(probe, a.dest, marker)
        if value is marker:
            continue
        setattr(args, a.dest, [fix(v) for v in value] if isinstance(value, list) else fix(value))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    resolve_typed_paths(parser, argv, args)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"bber {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, TableError) as exc:  # a missing or malformed input file: the message names it
        print(f"bber {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in READ_ONLY_ERRNOS:
            raise
        print(f"bber {args.command}: error: cannot access {exc.filename}: {exc.strerror} (a read-only folder? "
              f"make it writable or choose another --workdir)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = INTERRUPT_HINTS.get(args.command, "rerun the same command to continue")
        print(f"\nbber {args.command}: interrupted (Ctrl-C); {hint}.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    if sys.argv[1:] == [forked.SERVE]:  # the study's training server (bber_utils/study/forked.py), not a command
        sys.exit(forked.serve(main))
    sys.exit(main())
