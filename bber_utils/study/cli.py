"""``bber sweep``, ``bber results`` and ``bber readme``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from bber_utils.core.errors import ConfigError, unknown
from bber_utils.core.paths import REPO_ROOT, workdir_path
from bber_utils.core.profiles import resolve_cli_paths
from bber_utils.core.provenance import compare, run_environment
from bber_utils.study import cluster, registry, runner, stats
from bber_utils.study.readme import TABLE_FILE, readme_block, update_readme
from bber_utils.study.registry import METRICS
from bber_utils.train import TrainConfig, config_key_descriptions
from bber_utils.train.inputs import load_splits, resolve_corpora
from bber_utils.train.profiles import load_profile


def register_study_cli(subparsers) -> None:
    p = subparsers.add_parser("results", help="print the tidy results table of a work folder's runs")
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument("--split", default="test")
    p.add_argument("--by", nargs="+", default=["model", "train_corpora", "sds_ratio", "tug_ratio", "ls_llm_p"],
                   help="columns to group runs by (seeds averaged)")
    p.add_argument("--env", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="show two runs' environments side by side (run names under WORKDIR/train, run folders, "
                        "metrics.json files or executed notebooks)")
    p.add_argument("--all", action="store_true", help="with --env: also the keys where both agree")
    p.set_defaults(func=_cli_results)
    s = subparsers.add_parser("sweep", help="train over a grid of parameters and seeds (resumable)",
                              description="Train every combination of the values given, for every seed, on a "
                                          "profile's work folder (finished runs are reused), then print the test "
                                          "summary. Relative paths typed here (--workdir, path values) are taken "
                                          "from the current folder.",
                              epilog=_sweep_keys_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--profile", default="demo", help="a profile name in configs/ or a YAML file")
    s.add_argument("--workdir", help="default: the profile's workdir")
    s.add_argument("--seeds", nargs="+", type=int, default=[42])
    s.add_argument("--launcher", choices=("process", "submitit"), default="process",
                   help="process: one `bber train` after another here; submitit: each run a job with the resources "
                        "of the profile's slurm block (SLURM, or slurm: {cluster: local}); see docs/scaling.md")
    s.add_argument("grid", nargs="+", metavar="key=v1,v2,…",
                   help="values to sweep, e.g. model=biformer,bimamba; a list value in brackets: "
                        "train_corpora=[meld,resd],meld")
    s.set_defaults(func=_cli_sweep)


def _sweep_keys() -> set[str]:
    """The keys a sweep can vary: every training key (what ``run_one`` passes to a run) but the run's folder and
    name."""

    return set(TrainConfig.__dataclass_fields__) - {"workdir", "run_name"}


def _sweep_keys_help() -> str:
    desc = config_key_descriptions()
    keys = sorted(_sweep_keys())
    return "keys a sweep can vary:\n" + "\n".join(f"  {k:<22} {desc.get(k, '')}" for k in keys)


def _cli_registry(workdir: str | os.PathLike):
    """``load_registry`` for a command: an unreadable ``metrics.json`` is skipped, counted and named in one line
    on stderr."""

    skipped: list = []
    reg = registry.load_registry(workdir, skipped=skipped)
    if skipped:
        print(f"skipped {len(skipped)} unreadable metrics.json: " + "; ".join(why for _, why in skipped),
              file=sys.stderr)
    return reg


def _check_results_request(reg, split: str, by: list[str]) -> None:
    """``--split`` and ``--by`` against what the registry holds (one line with a "did you mean")."""

    splits = set(reg["split"].dropna().astype(str))
    if split not in splits:
        raise unknown("--split", split, splits or {"dev", "test"})
    columns = [c for c in reg.columns if c not in (*METRICS, "settings")]
    for col in by:
        if col not in columns:
            raise unknown("--by column", col, columns)


def _cli_results(args) -> int:
    if not workdir_path(args.workdir).is_dir():  # nothing to read, and nothing is created
        raise ConfigError(f"no such work folder {workdir_path(args.workdir)}")
    if args.env:
        return _cli_env(args)
    reg = _cli_registry(args.workdir)
    if reg.empty:
        print(f"no runs with metrics.json under {workdir_path(args.workdir) / 'train'}")
        return 1
    _check_results_request(reg, args.split, args.by)
    print(stats.summarize(reg, args.by, split=args.split).round(4).to_string(index=False))
    return 0


def _cli_env(args) -> int:
    try:
        (path_a, env_a), (path_b, env_b) = (run_environment(r, args.workdir) for r in args.env)
    except ValueError as exc:
        print(f"error: {exc}")
        return 1
    table = compare(env_a, env_b, only_differences=not args.all)
    print(f"A: {path_a}\nB: {path_b}")
    if table.empty:
        print("the two environments are identical")
        return 0
    table = table.rename(columns={"a": "A", "b": "B"})
    print(table[["key", "A", "B"]].to_string(index=False, max_colwidth=60))
    n_same = len(compare(env_a, env_b)) - len(compare(env_a, env_b, only_differences=True))
    if not args.all:
        print(f"({n_same} keys agree; --all shows them)")
    return 0


def split_sweep_values(text: str) -> list[str]:
    """``"a,[b,c],'d,e'"`` -> ``["a", "[b,c]", "'d,e'"]``: the values of ``bber sweep key=v1,v2,…`` are separated
    by the commas outside YAML brackets (``[]``, ``{}``) and quotes (a quote opens only where a YAML scalar
    starts: ``it's`` is plain text). Empty values are dropped; unbalanced brackets or quotes raise
    ``ConfigError``."""

    items, depth, quote, start, prev = [], 0, "", 0, ","
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1  # an escaped character inside double quotes
            elif ch == quote:
                quote = ""
        elif ch in "'\"" and prev in ",[{:":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced {ch!r} in the sweep values {text!r}")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
        if not ch.isspace():
            prev = ch
        i += 1
    if quote or depth:
        raise ConfigError(f"unbalanced {'quote' if quote else 'bracket'} in the sweep values {text!r}")
    items.append(text[start:])
    return [v for v in items if v != ""]


def _yaml_value(text: str, item: str):
    """One sweep value parsed as YAML (``ConfigError`` naming the item when it is not valid YAML)."""

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{item!r}: {text!r} is not a valid value ({str(exc).splitlines()[0]})") from None


def _check_sweep(base: dict[str, Any], settings: list[dict[str, Any]], seeds: list[int], workdir) -> None:
    """Every combination of a sweep checked before any run starts: its config (``TrainConfig.check``, one line
    with every bad value) and the manifests of its corpora in ``workdir`` (``FileNotFoundError``)."""

    checked = set()
    for setting in settings:
        for seed in seeds or [base.get("seed", 42)]:
            tc = TrainConfig.from_dict({**base, **setting, "seed": seed, "workdir": str(workdir)})
        corpora = tuple(resolve_corpora(tc.train_corpora, workdir))
        if corpora not in checked:  # every split's manifest exists and train / dev have rows
            load_splits(list(corpora), workdir)
            checked.add(corpora)


def _cli_sweep(args) -> int:
    base = load_profile(args.profile)
    keys, grid = _sweep_keys(), {}
    for item in args.grid:
        key, sep, values = item.partition("=")
        if not sep or not key or not values.strip(","):
            raise ConfigError(f"{item!r} is not key=v1,v2,… (e.g. model=biformer,bimamba)")
        if key not in keys:
            raise unknown("sweep key", key, keys, "see bber sweep --help")
        grid[key] = [_yaml_value(v, item) for v in split_sweep_values(values)]
    settings = [resolve_cli_paths(g) for g in runner.expand_grid(grid)]
    workdir = args.workdir or base["workdir"]
    if args.launcher == "submitit":
        cluster.check(base.get("slurm"))  # the block, submitit, sbatch: before any work
    _check_sweep(base, settings, args.seeds, workdir)
    if args.launcher == "submitit":
        try:
            folders = runner.run_sweep(base, settings, args.seeds, workdir, study_runner="submitit")
        except cluster.RunsFailed as exc:
            print(f"bber sweep: {exc}", file=sys.stderr)
            return 1
    else:
        folders = runner.run_sweep(base, settings, args.seeds, workdir) or []
    reg = _cli_registry(workdir)
    reg = reg[reg["run"].isin({Path(f).name for f in folders})]  # this sweep's runs only
    if reg.empty:
        print(f"no finished run of this sweep in {workdir}")
        return 1
    print(stats.summarize(reg, [k for k in grid if k in reg], split="test").round(4).to_string(index=False))
    return 0


def register_readme_cli(subparsers) -> None:
    p = subparsers.add_parser("readme", help="copy figures/study_table.md into the README's study block")
    p.add_argument("--check", action="store_true", help="only check that the README block matches (exit 1 if not)")
    p.set_defaults(func=_cli_readme)


def _cli_readme(args) -> int:
    table = (REPO_ROOT / "figures" / TABLE_FILE).read_text(encoding="utf-8")
    readme = REPO_ROOT / "README.md"
    if args.check:
        same = readme_block(readme) == table.strip("\n")
        print("README study block matches figures/study_table.md" if same else
              "README study block differs from figures/study_table.md: run `bber readme`", file=sys.stdout)
        return 0 if same else 1
    print("README updated" if update_readme(readme, table) else "README already up to date")
    return 0


def register_cli(subparsers) -> None:
    """``bber sweep``, ``bber results``, ``bber readme``."""
    register_study_cli(subparsers)
    register_readme_cli(subparsers)
