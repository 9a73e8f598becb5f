"""``bber train --config FILE [key=value ...]``: the profile, the overrides, one-line config errors, then
``stages.train``; ``--help`` lists every key of ``TrainConfig`` with its default and description.

Owns: ``register_cli``. Imports from this package: ``config``, ``distributed``, ``stages``.
Must not be imported by the other modules of the package (the top layer; ``__init__`` re-exports ``register_cli``).
"""

from __future__ import annotations

import argparse
import dataclasses

from bber_utils.core.errors import unknown
from bber_utils.core.profiles import parse_overrides, resolve_cli_paths
from bber_utils.train import stages
from bber_utils.train.config import TrainConfig, config_keys_help
from bber_utils.train.profiles import load_profile
from bber_utils.train.distributed import destroy_process_group, is_main_process


def register_cli(subparsers) -> None:
    """``bber train --config FILE [key=value ...]``; ``--help`` lists every key of ``TrainConfig``."""

    p = subparsers.add_parser("train", help="train a model (notebook 06) on a profile's work folder",
                              description="Train the unimodal encoders and the chosen model; writes "
                                          "<workdir>/train/<run>/metrics.json. A key=value given here overrides "
                                          "the profile; relative paths (workdir=...) are taken from the current "
                                          "folder.",
                              epilog=config_keys_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="demo",
                   help="a YAML file (a path that exists), or a profile name in configs/ (smoke, demo, paper)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="parameters to override, e.g. epochs=3")
    p.set_defaults(func=_cli_train)


def _cli_train(args) -> int:
    overrides = resolve_cli_paths(parse_overrides(args.overrides))
    params = load_profile(args.config)
    known = {f.name for f in dataclasses.fields(TrainConfig)} | set(params)
    bad = sorted(set(overrides) - known)
    if bad:
        raise unknown("parameter", bad[0], known, "see bber train --help")
    params.update(overrides)
    TrainConfig.from_dict(params)  # every bad value in one line, before any data is read
    try:
        result = stages.train(params)
        if is_main_process():
            print(result.table().to_string(index=False))
            print(f"run folder: {result.run_dir}")
    finally:
        destroy_process_group()
    return 0
