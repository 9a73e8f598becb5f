"""Experiments: the run registry, sweeps, augmentation-ratio search and multi-seed summaries.

- ``load_registry(workdir)`` reads every ``train/<run>/metrics.json`` into one tidy table: one row per run,
  corpus and split, with the four metrics, their mean and the run's settings.
- ``run_sweep`` trains once per setting and seed (``run_one``: ``bber train`` in a child process, log in
  ``train/<run>/train.log``; or, with ``study_runner="notebook"``, notebook 06 executed by papermill into
  ``train/<run>/``); finished runs (a ``metrics.json`` exists) are not redone. ``run_study`` runs them in
  parallel on a schedule that never trains one cached unimodal stage twice at once.
- ``greedy_search`` / ``grid_search`` choose augmentation ratios per corpus on **dev only**; the test score
  of the chosen setting is reported afterwards, never used to choose.
- ``summarize`` gives mean ± std and a 95 % confidence interval (Student t) over seeds. Runs are pooled only
  when their whole configuration is the same except the seed (and the control keys that do not change the
  numbers, ``train.CONTROL_KEYS``); the table shows every setting in which its rows differ.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from .paths import REPO_ROOT, run_dirs

METRICS = ("uar", "war", "mf1", "wf1", "mean")
# Settings shown as registry columns (whatever is present in its config). Grouping uses the whole configuration
# (``run_settings``), not only these.
SETTING_KEYS = ("model", "train_corpora", "sds_ratio", "tug_ratio", "tug_mode", "ls_llm_p", "label_smoothing",
                "audio_encoder", "text_encoder", "hidden_dim", "num_layers", "epochs")

# Numbers the paper reports (percent, test sets). They are reported, not reproduced here.
PAPER_REPORTED = [
    # setting, corpus, metric, value
    ("bimodal (multi-corpus)", "meld", "uar", 38.54),
    ("bimodal (multi-corpus)", "resd", "uar", 67.89),
    ("text only (multi-corpus)", "meld", "uar", 36.17),
    ("text only (multi-corpus)", "resd", "uar", 37.20),
    ("audio only (multi-corpus)", "meld", "uar", 28.00),
    ("audio only (multi-corpus)", "resd", "uar", 60.79),
    ("best single-corpus", "meld", "wf1", 68.31),
    ("best single-corpus", "resd", "wf1", 85.25),
]


# --------------------------------------------------------------------------------------------- registry

def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Flatten one ``metrics.json`` into rows ``{run, corpus, split, uar, …, setting keys…}``."""
    path = Path(path)
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
        raise ValueError(f"{path}: not a readable metrics.json ({exc})") from exc
    if not isinstance(m, dict) or not isinstance(m.get("config", {}), dict) \
            or not isinstance(m.get("metrics") or {}, dict):
        raise ValueError(f"{path}: not a metrics.json of bber train (no object with config and metrics)")
    cfg = m.get("config", {})
    base = {"run": m.get("run", path.parent.name), "seed": m.get("seed", cfg.get("seed")),
            "wall_time_s": m.get("wall_time_s"), "best_epoch": m.get("best_epoch"),
            "git_commit": m.get("git_commit"), "path": str(path.parent)}
    base["model"] = m.get("model", cfg.get("model"))
    for key in SETTING_KEYS:
        if key != "model":
            val = cfg.get(key)
            base[key] = ",".join(map(str, val)) if isinstance(val, (list, tuple)) else val
    if m.get("corpora"):  # the corpora the trainer resolved ("all" -> the list)
        base["train_corpora"] = ",".join(map(str, m["corpora"]))
    base["settings"] = json.dumps(run_settings({**cfg, **({"train_corpora": list(m["corpora"])}
                                                          if m.get("corpora") else {})}),
                                  sort_keys=True, default=str)
    rows = []
    for corpus, splits in (m.get("metrics") or {}).items():
        for split, vals in (splits.items() if isinstance(splits, dict) else ()):
            if not isinstance(vals, dict):
                continue
            rows.append({**base, "corpus": corpus, "split": split, **{k: vals.get(k) for k in METRICS}})
    return rows


def run_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run's setting: its whole training configuration (missing keys take ``TrainConfig``'s
    defaults) minus the seed and the control keys (``train.CONTROL_KEYS``: run name, device, progress ...).
    Numbers are compared as floats (``0`` and ``0.0`` are one setting), lists as comma-joined strings."""
    import dataclasses

    from .train import CONTROL_KEYS, TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    if "augment_unimodal" not in cfg:  # an augmented fusion run from before the key trained stage 1 on the
        cfg = {**cfg, "augment_unimodal": _old_stage1_augmented(cfg)}  # augmented rows; elsewhere it changes nothing
    out = {}
    for key, val in {**defaults, **cfg}.items():
        if key in CONTROL_KEYS or key == "seed":
            continue
        if isinstance(val, (list, tuple)):
            val = ",".join(map(str, val))
        elif isinstance(val, (int, float)) and not isinstance(val, bool):
            val = float(val)
        out[key] = val
    return out


def _old_stage1_augmented(cfg: dict[str, Any]) -> bool:
    """``TrainConfig.stage1_choice_matters`` of a config without ``augment_unimodal``: an augmented fusion model."""
    from .train.config import UNIMODAL_MODELS

    return cfg.get("model") not in UNIMODAL_MODELS and any(_augment_values(cfg))


def _augment_values(params: dict[str, Any]) -> tuple[float, ...]:
    """The values of ``AUGMENT_KEYS`` in a parameter dict (missing or unreadable: 0)."""
    from .train.config import AUGMENT_KEYS

    def num(v) -> float:
        try:
            return float(v or 0)
        except (TypeError, ValueError):
            return 0.0

    return tuple(num(params.get(k)) for k in AUGMENT_KEYS)


def load_registry(workdir: str | os.PathLike, skipped: list | None = None):
    """Every run of ``<workdir>/train`` as a tidy DataFrame; creates nothing. With a list ``skipped``, an
    unreadable ``metrics.json`` is appended to it as ``(path, reason)`` and skipped; without, it raises."""
    import pandas as pd

    from .paths import workdir_path

    rows: list[dict[str, Any]] = []
    for path in sorted((workdir_path(workdir) / "train").glob("*/metrics.json")):
        if path.parent.name.startswith("_"):  # internal stages (e.g. cached unimodal encoders)
            continue
        try:
            rows.extend(read_metrics(path))
        except ValueError as exc:
            if skipped is None:
                raise
            skipped.append((str(path), str(exc)))
    cols = ["run", "model", "seed", "corpus", "split", *METRICS]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


# ------------------------------------------------------------------------------------------- summaries

def confidence_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, std, half-width of the Student-t interval, n); half-width is NaN for n < 2."""
    import numpy as np
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, 1
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))
    return mean, std, half, n


def summarize(registry, by: list[str], split: str = "test", metrics: Iterable[str] = METRICS):
    """Mean, std and 95 % CI over seeds for each group of ``by`` (+ corpus) on ``split``.

    Only runs with the same whole setting (``run_settings``: the configuration minus seed and control keys)
    are pooled, so two runs that differ in, e.g., lr alone are two rows, each with its own seeds. Every setting
    in which the rows differ and that ``by`` does not show gets a column (after the ``by`` columns), so the
    table says what tells its rows apart. A registry without the ``settings`` column (hand-made) groups by
    ``by`` alone.
    """
    import pandas as pd

    df = registry[registry["split"] == split].copy()
    if "settings" not in df:
        df["settings"] = "{}"
    df["settings"] = df["settings"].fillna("{}").astype(str)
    keys = list(dict.fromkeys([*by, "corpus"]))
    # the same settings and seed run twice (e.g. by notebook 06 and by a sweep) are one sample, not two
    df = df.drop_duplicates(list(dict.fromkeys([*keys, "settings", "seed"])))
    rows = []
    for group, part in df.groupby([*keys, "settings"], dropna=False, sort=True):
        row = dict(zip([*keys, "settings"], group if isinstance(group, tuple) else (group,)))
        for m in metrics:
            mean, std, half, n = confidence_interval(part[m])
            row.update({m: mean, f"{m}_std": std, f"{m}_ci95": half})
        row["n_seeds"] = int(part["seed"].nunique())
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    settings = [json.loads(s) for s in table.pop("settings")]
    names = sorted({k for s in settings for k in s} - set(keys))
    differing = [k for k in names if len({json.dumps(s.get(k), sort_keys=True, default=str)
                                          for s in settings}) > 1]
    for pos, k in enumerate(differing):
        table.insert(len(keys) + pos, k, [s.get(k) for s in settings])
    return table


def paper_table(registry=None, split: str = "test"):
    """The paper's reported numbers next to ours (percent). Ours: the best run per corpus by dev mean."""
    import pandas as pd

    paper = pd.DataFrame(PAPER_REPORTED, columns=["setting", "corpus", "metric", "paper (reported)"])
    if registry is None or registry.empty:
        return paper
    ours = {}
    for corpus, part in registry.groupby("corpus"):
        dev = part[part["split"] == "dev"]
        if dev.empty:
            continue
        best_run = dev.sort_values("mean", ascending=False)["run"].iloc[0]
        row = part[(part["run"] == best_run) & (part["split"] == split)]
        if not row.empty:
            ours[corpus] = (best_run, row.iloc[0])
    paper["ours: best run by dev"] = [ours[c][0] if c in ours else None for c in paper["corpus"]]
    paper[f"ours ({split}, %)"] = [round(100 * float(ours[c][1][m]), 2) if c in ours else None
                                   for c, m in zip(paper["corpus"], paper["metric"])]
    return paper


# ----------------------------------------------------------------------------------------------- sweeps

def run_name_for(params: dict[str, Any], workdir: str | os.PathLike | None = None) -> str:
    """The name notebook 06 (``train``) gives a run of ``params``: model, the non-default augmentations, seed and
    a hash of every key that changes the numbers, with ``train_corpora="all"`` resolved against ``workdir``'s
    manifests first (one name for "all" and the same corpora listed)."""
    import dataclasses

    from .train import TrainConfig, default_run_name

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in params.items() if k in names}
    if workdir is not None:
        values["workdir"] = str(workdir)
    return default_run_name(TrainConfig(**values), resolve=workdir is not None)


def expand_grid(grid: dict[str, list]) -> list[dict[str, Any]]:
    """``{"a": [1, 2], "b": [3]}`` -> ``[{"a": 1, "b": 3}, {"a": 2, "b": 3}]``."""
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


STUDY_RUNNERS = ("process", "notebook")
# Training processes of run_one's process runner still running (stopped on Ctrl-C by whoever catches it).
_CHILDREN: set = set()
_CHILDREN_LOCK = threading.Lock()


def _check_study_runner(study_runner: str) -> None:
    from .errors import unknown

    if study_runner not in STUDY_RUNNERS:
        raise unknown("study_runner", study_runner, STUDY_RUNNERS)


def run_one(params: dict[str, Any], workdir: str | os.PathLike,
            notebook: str | os.PathLike = REPO_ROOT / "notebooks" / "06_train.ipynb",
            study_runner: str = "process") -> Path:
    """Train ``params`` unless its metrics already exist; return the run folder ``train/<run>``.

    ``study_runner="process"``: ``bber train --config <run>/params.yaml`` in a subprocess, its output in
    ``<run>/train.log``; ``"notebook"``: notebook 06 executed by papermill into ``<run>/06_train.ipynb``. Both
    get the parameters notebook 06 declares (and the run name it would give them), so both train the same run.
    """
    from .pipeline import declared_parameters, run_notebook

    _check_study_runner(study_runner)
    dirs = run_dirs(workdir)
    declared = declared_parameters(Path(notebook)) - {"workdir", "run_name"}
    params = {**params, "workdir": str(dirs.root)}
    name = params.get("run_name") or run_name_for({k: v for k, v in params.items() if k in declared}, dirs.root)
    params["run_name"] = name
    run_dir = dirs.train / name
    keep = declared | {"workdir", "run_name"}
    cfg = {**{k: v for k, v in params.items() if k in keep}, "progress": False}
    if _finished_with_this_data(run_dir, cfg):
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if study_runner == "notebook":
        run_notebook(Path(notebook), run_dir / "06_train.ipynb", params)
    else:
        _train_process(name, run_dir, cfg)
    if not (run_dir / "metrics.json").exists():
        raise RuntimeError(f"run {name}: training finished without writing {run_dir}/metrics.json")
    return run_dir


def _finished_with_this_data(run_dir: Path, cfg: dict[str, Any]) -> bool:
    """``run_dir`` holds a ``metrics.json`` made from the data the run reads now (its ``data`` fingerprint, see
    ``train.stages.data_fingerprint_for``). A run whose transcripts, clips, labels or soft labels changed since
    is trained again (the trainer retrains it in its folder), never reported from the old model. A
    ``metrics.json`` written before fingerprints existed is taken as it is."""
    import warnings

    from .train.stages import data_fingerprint_for

    path = run_dir / "metrics.json"
    if not path.exists():
        return False
    try:
        stored = json.loads(path.read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return False  # unreadable: train it again
    if not stored:
        return True
    with warnings.catch_warnings():  # the trainer repeats them if it runs
        warnings.simplefilter("ignore")
        current = data_fingerprint_for(cfg)
    if current != stored:
        warnings.warn(f"run {run_dir.name}: the data changed since it was trained; training it again", stacklevel=3)
    return current == stored


def _train_process(name: str, run_dir: Path, cfg: dict[str, Any]) -> None:
    """``bber train`` on ``cfg`` (written to ``run_dir/params.yaml``) in a child process, stdout and stderr in
    ``run_dir/train.log``. A non-zero exit raises ``RuntimeError`` quoting the log's last lines; an interrupt
    (Ctrl-C) stops the child first, then propagates."""
    import subprocess

    import yaml

    from .fileio import atomic_write_text

    config = atomic_write_text(run_dir / "params.yaml", yaml.safe_dump(cfg, sort_keys=True, allow_unicode=True))
    log_path = run_dir / "train.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(_train_command(config), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT))
        with _CHILDREN_LOCK:
            _CHILDREN.add(child)
        try:
            code = _wait(child)
        except BaseException:  # KeyboardInterrupt: never leave a training process behind
            _stop(child)
            raise
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(child)
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise RuntimeError(f"run {name}: `bber train` exited with status {code}; the last lines of {log_path}:\n"
                           + "\n".join(tail))


def _train_command(config: Path) -> list[str]:
    """``bber train --config CONFIG`` with this interpreter (the child imports this checkout: cwd is its root)."""
    import sys

    return [sys.executable, "-m", "bber_utils.cli", "train", "--config", str(config)]


def _wait(child) -> int:
    """``child.wait()`` in short slices, so that an interrupt of the main thread (a kernel's Ctrl-C,
    ``_thread.interrupt_main``) is seen within a fraction of a second."""
    import subprocess

    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue


def _stop(child) -> None:
    """Terminate a child process and wait for it (killed after 10 s)."""
    import subprocess

    if child.poll() is None:
        child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _stop_children() -> None:
    """Terminate every training process ``run_one`` started that is still running."""
    with _CHILDREN_LOCK:
        children = list(_CHILDREN)
    for child in children:
        _stop(child)


def run_sweep(base: dict[str, Any], settings: list[dict[str, Any]], seeds: Iterable[int],
              workdir: str | os.PathLike, runner: Callable[[dict, Any], Path] | None = None,
              progress: bool = True, study_runner: str = "process") -> list[Path]:
    """Run every setting (overrides of ``base``) for every seed; resumable. Returns the run folders."""
    from bber_utils.progress import tqdm

    _check_study_runner(study_runner)
    runner = runner or (lambda p, wd: run_one(p, wd, study_runner=study_runner))
    jobs = _jobs(base, settings, [int(seed) for seed in seeds])
    return [runner(params, workdir) for params in tqdm(jobs, desc="runs", disable=not progress)]


def _jobs(base: dict[str, Any], settings: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """One parameter dict per setting and seed (settings outer), without a fixed ``run_name``."""
    jobs = [{**base, **s, "seed": int(seed)} for s in settings for seed in seeds]
    for params in jobs:
        params.pop("run_name", None)
    return jobs


def _dev_score(run_dirs_: list[Path], corpus: str | None) -> float:
    """Mean over seeds of the dev mean (one corpus, or averaged over corpora)."""
    import numpy as np

    scores = []
    for d in run_dirs_:
        rows = [r for r in read_metrics(d / "metrics.json") if r["split"] == "dev"
                and (corpus is None or r["corpus"] == corpus)]
        if rows:
            scores.append(np.mean([r["mean"] for r in rows]))
    return float(np.mean(scores)) if scores else -math.inf


def grid_search(base: dict, space: dict[str, list], seeds: Iterable[int], workdir, corpus: str | None = None,
                runner=None, study_runner: str = "process") -> tuple[dict, list[dict]]:
    """Try every combination of ``space``; choose by dev score of ``corpus`` (None = averaged)."""
    seeds = list(seeds)
    trials = []
    for setting in expand_grid(space):
        runs = run_sweep(base, [setting], seeds, workdir, runner, progress=False, study_runner=study_runner)
        trials.append({**setting, "dev_score": _dev_score(runs, corpus)})
    best = max(trials, key=lambda t: t["dev_score"])
    return {k: best[k] for k in space}, trials


def greedy_search(base: dict, space: dict[str, list], seeds: Iterable[int], workdir, corpus: str | None = None,
                  runner=None, study_runner: str = "process") -> tuple[dict, list[dict]]:
    """Coordinate ascent: tune one key at a time (in ``space`` order), keeping the best value on dev."""
    seeds = list(seeds)
    current = {k: base.get(k, values[0]) for k, values in space.items()}
    trials: list[dict] = []
    seen: dict[str, float] = {}

    def evaluate(setting: dict) -> float:
        key = json.dumps(setting, sort_keys=True, default=str)
        if key not in seen:
            runs = run_sweep(base, [setting], seeds, workdir, runner, progress=False, study_runner=study_runner)
            seen[key] = _dev_score(runs, corpus)
            trials.append({**setting, "dev_score": seen[key]})
        return seen[key]

    best_score = evaluate(current)
    for key, values in space.items():
        for value in values:
            cand = {**current, key: value}
            s = evaluate(cand)
            if s > best_score:
                best_score, current = s, cand
    return current, trials


# ----------------------------------------------------------------------------------------------- study

FUSION_MODELS = ("biformer", "bigraphformer", "bigatedformer", "bigatedgraphformer", "bimamba",
                 "predictions_fusion", "biformer_withprob")


AUGMENT_NAMES = {"sds_ratio": "SDS", "tug_ratio": "TUG", "ls_llm_p": "LS-LLM"}


def paper_study(corpora: list[str], fusion_models: Iterable[str] = FUSION_MODELS, main_model: str = "biformer",
                augment: dict[str, float] | None = None, single_corpus: bool = True) -> list[dict[str, Any]]:
    """The settings of the paper's study, each with a ``study`` (which question) and ``setting`` label.

    unimodal vs bimodal; the fusion types; each augmentation alone and all combined (ratios from
    ``augment``, e.g. the search's choice); single- vs multi-corpus training for ``main_model``.
    ``augment`` may also hold ``"+a+b": {...}`` entries: an extra combination with its own ratios (e.g. the demo's
    SDS at TUG's size, the control that separates "more rows" from "synthetic emotional rows").
    """
    augment = augment or {"sds_ratio": 0.5, "tug_ratio": 0.5, "ls_llm_p": 0.2}
    combos = {k: v for k, v in augment.items() if isinstance(v, dict)}
    augment = {k: v for k, v in augment.items() if not isinstance(v, dict)}
    all_corpora = list(corpora)
    out = [{"study": "modality", "setting": m, "model": m, "train_corpora": all_corpora}
           for m in ("audio_only", "text_only")]
    out += [{"study": "fusion", "setting": m, "model": m, "train_corpora": all_corpora} for m in fusion_models]
    for key, value in augment.items():
        if value:
            out.append({"study": "augmentation", "setting": f"+{key}={value}", "model": main_model,
                        "train_corpora": all_corpora, key: value})
    for label, ratios in combos.items():
        out.append({"study": "augmentation", "setting": label, "model": main_model, "train_corpora": all_corpora,
                    **ratios})
    if sum(bool(v) for v in augment.values()) > 1:
        out.append({"study": "augmentation", "setting": "+all", "model": main_model, "train_corpora": all_corpora,
                    **augment})
    if single_corpus and len(all_corpora) > 1:
        out += [{"study": "corpora", "setting": f"single: {c}", "model": main_model, "train_corpora": [c]}
                for c in all_corpora]
    return out


def run_study(base: dict[str, Any], settings: list[dict[str, Any]], seeds: Iterable[int],
              workdir: str | os.PathLike, runner=None, workers: int = 1, study_runner: str = "process"):
    """Run every study setting for every seed (resumable) and return its summary table (test split).

    The settings are saved to ``<workdir>/ablations/settings.json`` and the table to ``study.csv``; the table
    summarises the runs of this study only (an older run of a setting under other settings in the same work
    folder, e.g. one made before a default changed, is left out). Each run is
    ``run_one`` (``study_runner``: ``bber train`` in a subprocess, or notebook 06 by papermill) unless
    ``runner`` replaces it. ``workers`` runs go at once (``_run_scheduled``): runs sharing a cached unimodal
    stage wait for the first of them, so no stage is trained twice; each run is deterministic on its own, so the
    numbers do not depend on ``workers``.
    """
    _check_study_runner(study_runner)
    out = run_dirs(workdir).root / "ablations"
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(settings, indent=1, default=str))
    runs = [{k: v for k, v in s.items() if k not in ("study", "setting")} for s in settings]
    runner = runner or (lambda p, wd: run_one(p, wd, study_runner=study_runner))
    jobs = [job for seed in seeds for job in _jobs(base, runs, [int(seed)])]  # seeds outer: each seed's group early
    folders: list = []  # list.append is atomic: the worker threads share it
    _run_scheduled(jobs, lambda p: folders.append(runner(p, workdir)), max(1, int(workers)))
    registry = load_registry(workdir)
    if folders and all(f is not None for f in folders):  # this study's runs only, not every run in the folder
        registry = registry[registry["run"].isin({Path(f).name for f in folders})]
    table = study_table(registry, settings)
    table.to_csv(out / "study.csv", index=False)
    return table


def _unimodal_group(params: dict[str, Any]) -> tuple:
    """Runs with equal keys share their unimodal stage (the trainer caches it by seed and training data).

    Stage 1 trains on the augmented rows and targets only for ``augment_unimodal`` or a unimodal model;
    otherwise it trains on the original rows, shared by every augmentation setting of that seed and data.
    """
    corpora = params.get("train_corpora")
    corpora = ",".join(map(str, corpora)) if isinstance(corpora, (list, tuple)) else str(corpora)
    from .train.config import UNIMODAL_MODELS

    augment = _augment_values(params)
    if any(augment) and (params.get("augment_unimodal") or params.get("model") in UNIMODAL_MODELS):
        return (params.get("seed"), corpora, *augment)
    return (params.get("seed"), corpora)  # unaugmented stage 1: also audio_only/text_only's (no model in its key)


class _Schedule:
    """The ready queue of ``_run_scheduled``: the first run of each group (largest group first); a group's
    other runs become ready once its first run has finished. The first error stops handing out runs."""

    def __init__(self, groups: list[list[dict]]):
        from collections import deque

        self.ready = deque(g[0] for g in groups)
        self.after = {id(g[0]): g[1:] for g in groups}
        self.running = 0
        self.error: BaseException | None = None
        self.cond = threading.Condition()

    def take(self) -> dict | None:
        """The next ready run (waits while runs that may free others are running); None when done."""
        with self.cond:
            while self.error is None and not self.ready and self.running:
                self.cond.wait()
            if self.error is not None or not self.ready:
                return None
            self.running += 1
            return self.ready.popleft()

    def done(self, job: dict, error: BaseException | None = None) -> None:
        with self.cond:
            self.running -= 1
            if error is not None:
                self.error = self.error or error
            else:
                self.ready.extend(self.after.pop(id(job), []))
            self.cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.cond:
            self.error = self.error or error
            self.cond.notify_all()


def _run_scheduled(jobs: list[dict], run: Callable[[dict], Any], workers: int, progress: bool = True) -> None:
    """Call ``run(params)`` for every job on ``workers`` threads, never starting two runs of one unimodal group
    (``_unimodal_group``) before the group's first run has finished (its stage 1 is then cached). The first
    error stops scheduling and is raised once the running runs have ended; Ctrl-C also stops their training
    processes."""
    from bber_utils.progress import tqdm

    groups: dict[tuple, list[dict]] = {}
    for params in jobs:
        groups.setdefault(_unimodal_group(params), []).append(params)
    for g in groups.values():  # a text_only run trains no audio stage 1: never a group's first run if others can be
        g.sort(key=lambda p: p.get("model") == "text_only")
    schedule = _Schedule(sorted(groups.values(), key=len, reverse=True))
    bar = tqdm(total=len(jobs), desc="runs", disable=not progress)

    def worker() -> None:
        while (job := schedule.take()) is not None:
            try:
                run(job)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                schedule.done(job, exc)
            else:
                schedule.done(job)
                bar.update(1)

    threads = [threading.Thread(target=worker, name=f"study-run-{i}", daemon=True) for i in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():  # joined in slices, so that a Ctrl-C reaches the main thread at once
                t.join(0.2)
    except BaseException as exc:  # KeyboardInterrupt in the main thread
        schedule.fail(exc)
        _stop_children()
        for t in threads:
            t.join()
        raise
    finally:
        bar.close()
    if schedule.error is not None:
        raise schedule.error


def study_table(registry, settings: list[dict[str, Any]], split: str = "test"):
    """Join each run of the study to its (study, setting) label and summarise over seeds."""
    import pandas as pd

    labelled = []
    for s in settings:
        keys = {k: v for k, v in s.items() if k not in ("study", "setting")}
        mask = pd.Series(True, index=registry.index)
        for k, v in keys.items():
            if k not in registry:
                mask &= False
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                mask &= pd.to_numeric(registry[k], errors="coerce").fillna(0) == float(v)
            else:
                want = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                mask &= registry[k].astype(str) == str(want)
        for k in ("sds_ratio", "tug_ratio", "ls_llm_p"):  # an augmentation left out means 0
            if k not in keys and k in registry:
                mask &= registry[k].fillna(0).astype(float) == 0
        labelled.append(registry[mask].assign(study=s["study"], setting=s["setting"]))
    df = pd.concat(labelled, ignore_index=True) if labelled else registry.iloc[0:0]
    if df.empty:
        return df
    order = {(s["study"], s["setting"]): i for i, s in enumerate(settings)}
    table = summarize(df, ["study", "setting"], split=split)
    # which runs each row summarises, and their dev score (what model selection may look at)
    keys = ["study", "setting", "corpus"]
    runs = df[df["split"] == split].groupby(keys)["run"].agg(lambda r: ";".join(sorted(set(r))))
    dev = df[df["split"] == "dev"].drop_duplicates(["run", "corpus"]).groupby(keys)["mean"]
    extra = pd.DataFrame({"runs": runs, "dev_mean": dev.mean(), "dev_mean_std": dev.std()}).reset_index()
    table = table.merge(extra, on=keys, how="left").merge(_by_seed(df[df["split"] == split], keys), on=keys,
                                                          how="left")
    table["_order"] = [order[(a, b)] for a, b in zip(table["study"], table["setting"])]
    return table.sort_values(["_order", "corpus"]).drop(columns="_order").reset_index(drop=True)


def _by_seed(df, keys: list[str]):
    """Per group of ``keys``: each metric's value per seed, as JSON ``{"42": 0.71, ...}`` (``{metric}_by_seed``),
    so that two settings can be compared seed by seed (``compare_to``)."""
    import pandas as pd

    df = df.drop_duplicates([*keys, "seed"])
    out = {}
    for group, part in df.groupby(keys, sort=False):
        out[group] = {f"{m}_by_seed": json.dumps({str(int(s)): float(v) for s, v in zip(part["seed"], part[m])},
                                                 sort_keys=True) for m in METRICS}
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=keys)
    return frame.reset_index()


def _seed_values(v: str | dict | None) -> dict:
    """``{seed: value}`` from a ``{metric}_by_seed`` cell (JSON, a mapping, or missing: ``{}``)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return {}
    return json.loads(v) if isinstance(v, str) else dict(v)


def paired_difference(values: str | dict | None, reference: str | dict | None) -> tuple[float, float, int]:
    """Seed-by-seed difference of two settings (``{seed: value}`` or its JSON): ``(mean, 95 % half-width, n)``
    over the seeds both have (Student t with n - 1 degrees of freedom; NaN half-width below 2 seeds). The runs of
    one seed share their data order and, for a fusion model, their unimodal encoders, so the paired difference
    leaves out what the seeds change in both and is the sharper test of the two settings' difference."""
    a, b = _seed_values(values), _seed_values(reference)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return math.nan, math.nan, 0
    mean, _std, half, n = confidence_interval([a[s] - b[s] for s in seeds])
    return mean, half, n


def compare_rows(row, base, metric: str = "war", n: int | None = None, clips: int = 3) -> dict[str, Any]:
    """The difference of two study rows (one setting and corpus each; mappings or pandas rows) on ``metric``:
    ``diff_pts``, ``diff_clips`` (``n`` test clips: one clip moves WAR by ``100 / n`` points), ``diff_ci95``,
    ``seeds_ahead`` / ``seeds_paired`` and ``verdict``. A difference smaller than ``clips`` test clips is
    flagged, and so is one whose 95 % interval includes 0: the interval of the paired, seed-by-seed difference
    where both settings ran the same seeds (``paired_difference``), else the two settings' own intervals
    overlapping; with one seed on each side there is no interval ("one seed: no interval"). A flagged difference
    is not a finding on this test set; the others are "better" / "worse"."""
    get = (lambda r, k: r.get(k, math.nan)) if hasattr(row, "get") else (lambda r, k: getattr(r, k, math.nan))
    diff = 100 * (get(row, metric) - get(base, metric))
    diff_clips = diff * n / 100 if n else math.nan
    a, b = _seed_values(get(row, f"{metric}_by_seed")), _seed_values(get(base, f"{metric}_by_seed"))
    _, half, paired = paired_difference(a, b)
    ahead = sum(a[s] > b[s] for s in set(a) & set(b))
    same_seeds = paired > 0 and {s for s, v in a.items() if v == v} == {s for s, v in b.items() if v == v}
    own = [get(row, f"{metric}_ci95"), get(base, f"{metric}_ci95")]
    if paired >= 2 and same_seeds:  # diff is then the mean of the paired differences
        ci, overlap = 100 * half, "paired 95 % interval includes 0"
    elif any(x is not None and x == x for x in own):  # the seeds differ: the two rows' own intervals decide
        ci, overlap = 100 * (_nz(own[0]) + _nz(own[1])), "95 % intervals overlap"
    else:  # one seed on each side: no interval, so no finding either way
        ci, overlap = math.nan, "one seed: no interval"
    if n and abs(diff_clips) < clips:
        verdict = f"within {clips} test clips"
    elif ci != ci or abs(diff) <= ci:
        verdict = overlap
    else:
        verdict = "better" if diff > 0 else "worse"
    return {"diff_pts": round(diff, 1), "diff_clips": round(diff_clips, 1), "diff_ci95": round(ci, 1),
            "seeds_ahead": ahead, "seeds_paired": paired, "verdict": verdict}


def compare_to(table, reference: tuple[str, str], n_test: dict[str, int], metric: str = "war", clips: int = 3):
    """Each setting's difference to ``reference`` (study, setting) per corpus (``compare_rows``): columns
    ``study, setting, corpus, diff_pts, diff_clips, diff_ci95, verdict``."""
    import pandas as pd

    ref = table[(table["study"] == reference[0]) & (table["setting"] == reference[1])].set_index("corpus")
    rows = []
    for r in table.itertuples(index=False):
        if (r.study, r.setting) == reference or r.corpus not in ref.index:
            continue
        c = compare_rows(r, ref.loc[r.corpus], metric, n_test.get(r.corpus), clips)
        rows.append({"study": r.study, "setting": r.setting, "corpus": r.corpus,
                     **{k: c[k] for k in ("diff_pts", "diff_clips", "diff_ci95", "verdict")}})
    return pd.DataFrame(rows, columns=["study", "setting", "corpus", "diff_pts", "diff_clips", "diff_ci95",
                                       "verdict"])


def _nz(x) -> float:
    """NaN (one seed: no interval) -> 0."""
    return 0.0 if x is None or x != x else float(x)


# ------------------------------------------------------------------------------------------------- cli

def register_cli(subparsers) -> None:
    import argparse

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
    s.add_argument("grid", nargs="+", metavar="key=v1,v2,…",
                   help="values to sweep, e.g. model=biformer,bimamba; a list value in brackets: "
                        "train_corpora=[meld,resd],meld")
    s.set_defaults(func=_cli_sweep)


def _sweep_keys() -> set[str]:
    """The keys a sweep can vary: the parameters notebook 06 declares (what ``run_one`` passes to a run)."""
    from .pipeline import declared_parameters

    return declared_parameters(REPO_ROOT / "notebooks" / "06_train.ipynb") - {"workdir", "run_name", "profile"}


def _sweep_keys_help() -> str:
    from .train import config_key_descriptions

    desc = config_key_descriptions()
    keys = sorted(_sweep_keys())
    return "keys a sweep can vary:\n" + "\n".join(f"  {k:<22} {desc.get(k, '')}" for k in keys)


def _cli_registry(workdir: str | os.PathLike):
    """``load_registry`` for a command: an unreadable ``metrics.json`` is skipped, counted and named in one line
    on stderr."""
    import sys

    skipped: list = []
    reg = load_registry(workdir, skipped=skipped)
    if skipped:
        print(f"skipped {len(skipped)} unreadable metrics.json: " + "; ".join(why for _, why in skipped),
              file=sys.stderr)
    return reg


def _check_results_request(reg, split: str, by: list[str]) -> None:
    """``--split`` and ``--by`` against what the registry holds (one line with a "did you mean")."""
    from .errors import unknown

    splits = set(reg["split"].dropna().astype(str))
    if split not in splits:
        raise unknown("--split", split, splits or {"dev", "test"})
    columns = [c for c in reg.columns if c not in (*METRICS, "settings")]
    for col in by:
        if col not in columns:
            raise unknown("--by column", col, columns)


def _cli_results(args) -> int:
    from .errors import ConfigError
    from .paths import workdir_path

    if not workdir_path(args.workdir).is_dir():  # nothing to read, and nothing is created
        raise ConfigError(f"no such work folder {workdir_path(args.workdir)}")
    if args.env:
        return _cli_env(args)
    reg = _cli_registry(args.workdir)
    if reg.empty:
        print(f"no runs with metrics.json under {workdir_path(args.workdir) / 'train'}")
        return 1
    _check_results_request(reg, args.split, args.by)
    print(summarize(reg, args.by, split=args.split).round(4).to_string(index=False))
    return 0


def _cli_env(args) -> int:
    from .provenance import compare, run_environment

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
    from .errors import ConfigError

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
    import yaml

    from .errors import ConfigError

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{item!r}: {text!r} is not a valid value ({str(exc).splitlines()[0]})") from None


def _check_sweep(base: dict[str, Any], settings: list[dict[str, Any]], seeds: list[int], workdir) -> None:
    """Every combination of a sweep checked before any run starts: its config (``TrainConfig.check``, one line
    with every bad value) and the manifests of its corpora in ``workdir`` (``FileNotFoundError``)."""
    from .train import TrainConfig
    from .train.inputs import load_splits, resolve_corpora

    checked = set()
    for setting in settings:
        for seed in seeds or [base.get("seed", 42)]:
            tc = TrainConfig.from_dict({**base, **setting, "seed": seed, "workdir": str(workdir)})
        corpora = tuple(resolve_corpora(tc.train_corpora, workdir))
        if corpora not in checked:  # every split's manifest exists and train / dev have rows
            load_splits(list(corpora), workdir)
            checked.add(corpora)


def _cli_sweep(args) -> int:
    from .config import load_profile, resolve_cli_paths
    from .errors import ConfigError, unknown

    base = load_profile(args.profile)
    keys, grid = _sweep_keys(), {}
    for item in args.grid:
        key, sep, values = item.partition("=")
        if not sep or not key or not values.strip(","):
            raise ConfigError(f"{item!r} is not key=v1,v2,… (e.g. model=biformer,bimamba)")
        if key not in keys:
            raise unknown("sweep key", key, keys, "see bber sweep --help")
        grid[key] = [_yaml_value(v, item) for v in split_sweep_values(values)]
    settings = [resolve_cli_paths(g) for g in expand_grid(grid)]
    workdir = args.workdir or base["workdir"]
    _check_sweep(base, settings, args.seeds, workdir)
    folders = run_sweep(base, settings, args.seeds, workdir) or []
    reg = _cli_registry(workdir)
    reg = reg[reg["run"].isin({Path(f).name for f in folders})]  # this sweep's runs only
    if reg.empty:
        print(f"no finished run of this sweep in {workdir}")
        return 1
    print(summarize(reg, [k for k in grid if k in reg], split="test").round(4).to_string(index=False))
    return 0
