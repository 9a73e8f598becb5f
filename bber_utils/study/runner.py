"""Running one setting for each seed: ``run_one`` trains ``params`` unless its
metrics exist — ``bber train`` in a child process (log in ``train/<run>/train.log``), or, with
``study_runner="notebook"``, notebook 06 executed by papermill into ``train/<run>/``; ``run_sweep`` runs every
setting for every seed; resumable. With ``study_runner="submitit"`` each run is a submitit job
(``run_on_cluster``, ``cluster.run_groups``) that calls ``run_one`` with the process runner.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from bber_utils.core.errors import ConfigError, unknown
from bber_utils.core.fileio import atomic_write_text
from bber_utils.core.papermill import run_notebook
from bber_utils.core.paths import REPO_ROOT, run_dirs
from bber_utils.core.progress import tqdm
from bber_utils.study import cluster, forked, registry
from bber_utils.study.registry import _augment_values
from bber_utils.train import TrainConfig
from bber_utils.train.config import UNIMODAL_MODELS
from bber_utils.train.stages import data_fingerprint_for


def expand_grid(grid: dict[str, list]) -> list[dict[str, Any]]:
    """``{"a": [1, 2], "b": [3]}`` -> ``[{"a": 1, "b": 3}, {"a": 2, "b": 3}]``."""
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


STUDY_RUNNERS = ("process", "notebook", "submitit")

# Training processes of run_one's process runner still running (stopped on Ctrl-C by whoever catches it).
_CHILDREN: set = set()

_CHILDREN_LOCK = threading.Lock()


def _check_study_runner(study_runner: str) -> None:
    if study_runner not in STUDY_RUNNERS:
        raise unknown("study_runner", study_runner, STUDY_RUNNERS)


def run_one(params: dict[str, Any], workdir: str | os.PathLike,
            notebook: str | os.PathLike = REPO_ROOT / "notebooks" / "06_train.ipynb",
            study_runner: str = "process", nproc_per_node: int = 1) -> Path:
    """Train ``params`` unless its metrics already exist; return the run folder ``train/<run>``.

    ``study_runner="process"``: ``bber train --config <run>/params.yaml`` (every training key of ``params``) in a
    subprocess (``torchrun --nproc_per_node N`` for ``nproc_per_node`` > 1), its output in ``<run>/train.log``;
    ``"notebook"``: notebook 06 executed by papermill into ``<run>/06_train.ipynb`` (every training key of
    ``params``, passed as ``profile_params``). Both get the same run name, so both train the same run.
    (``"submitit"`` is for ``run_sweep`` / ``run_study``: its jobs call this with ``"process"``.)
    """

    _check_study_runner(study_runner)
    if study_runner == "submitit":
        raise ConfigError("study_runner 'submitit' submits many runs (run_sweep, run_study); run_one trains one "
                          "here with 'process' or 'notebook'")
    name, run_dir, params, cfg = plan_run(params, workdir)
    if _finished_with_this_data(run_dir, cfg):
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if study_runner == "notebook":
        run_notebook(Path(notebook), run_dir / "06_train.ipynb", params)
    else:
        _train_process(name, run_dir, cfg, nproc_per_node)
    if not (run_dir / "metrics.json").exists():
        raise RuntimeError(f"run {name}: training finished without writing {run_dir}/metrics.json")
    return run_dir


def plan_run(params: dict[str, Any], workdir: str | os.PathLike):
    """``(name, run folder, params with workdir and run_name, the config bber train gets)`` of one run: every
    training key of ``params`` (``TrainConfig``'s fields) and the name notebook 06 would give them."""

    dirs = run_dirs(workdir)
    params = {**params, "workdir": str(dirs.root)}
    name = params.get("run_name") or registry.run_name_for(params, dirs.root)
    params["run_name"] = name
    cfg = {**{k: v for k, v in params.items() if k in TrainConfig.__dataclass_fields__}, "progress": False}
    return name, dirs.train / name, params, cfg


def _finished_with_this_data(run_dir: Path, cfg: dict[str, Any]) -> bool:
    """``run_dir`` holds a ``metrics.json`` made from the data the run reads now (its ``data`` fingerprint, see
    ``train.stages.data_fingerprint_for``). A run whose transcripts, clips, labels or soft labels changed since
    is trained again (the trainer retrains it in its folder), never reported from the old model. A
    ``metrics.json`` written before fingerprints existed is taken as it is."""

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


def _train_process(name: str, run_dir: Path, cfg: dict[str, Any], nproc_per_node: int = 1) -> None:
    """``bber train`` on ``cfg`` (written to ``run_dir/params.yaml``) in a child process (on Linux forked from a
    server that has imported the trainer, ``study.forked``), stdout and stderr in ``run_dir/train.log``. A
    non-zero exit raises ``RuntimeError`` quoting the log's last lines; an interrupt (Ctrl-C) stops the child
    first, then propagates."""

    config = atomic_write_text(run_dir / "params.yaml", yaml.safe_dump(cfg, sort_keys=True, allow_unicode=True))
    log_path = run_dir / "train.log"
    argv = _train_command(config, nproc_per_node)
    with open(log_path, "wb") as log:
        if forked.enabled() and forked.is_plain_train_command(argv, config):  # the same command, imports done
            child = forked.server_for_this_thread().start(argv[3:], log_path)  # train --config CONFIG
        else:
            child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=str(REPO_ROOT))
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


def _train_command(config: Path, nproc_per_node: int = 1) -> list[str]:
    """``bber train --config CONFIG`` with this interpreter (the child imports this checkout: cwd is its root);
    for ``nproc_per_node`` > 1, under ``torchrun --standalone`` (DDP over that many GPUs of this node)."""

    train = ["-m", "bber_utils.cli", "train", "--config", str(config)]
    if nproc_per_node > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
                *train]
    return [sys.executable, *train]


def _wait(child) -> int:
    """``child.wait()`` in short slices, so that an interrupt of the main thread (a kernel's Ctrl-C,
    ``_thread.interrupt_main``) is seen within a fraction of a second."""

    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue


def _stop(child) -> None:
    """Terminate a child process and wait for it (killed after 10 s)."""

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
    """Run every setting (overrides of ``base``) for every seed; resumable. Returns the run folders. With
    ``study_runner="submitit"`` the runs are jobs with the resources of ``base["slurm"]`` (``run_on_cluster``)."""

    _check_study_runner(study_runner)
    jobs = _jobs(base, settings, [int(seed) for seed in seeds])
    if study_runner == "submitit":
        return run_on_cluster(jobs, workdir, base.get("slurm"), runner, progress)
    runner = runner or (lambda p, wd: run_one(p, wd, study_runner=study_runner))
    with forked.serving():  # its runs forked from a training server, closed at the end
        return [runner(params, workdir) for params in tqdm(jobs, desc="runs", disable=not progress)]


def run_on_cluster(jobs: list[dict[str, Any]], workdir: str | os.PathLike, slurm: dict | None,
                   runner: Callable[[dict, Any], Any] | None = None, progress: bool = True) -> list[Path]:
    """Every job a submitit job (``cluster.run_groups``) with the resources of the ``slurm`` block, checked before
    anything is submitted; the runs of a unimodal group (``group_jobs``) wait for its first. A job calls
    ``runner(params, workdir)`` (picklable; default ``run_one`` with the process runner, under torchrun for
    ``gpus_per_node`` > 1). Returns the run folders in the order of ``jobs``; raises ``cluster.RunsFailed``."""

    settings = cluster.check(slurm)
    runner = runner or functools.partial(run_one, study_runner="process",
                                         nproc_per_node=max(1, settings["gpus_per_node"]))
    tasks: dict[str, cluster.Task] = {}  # a setting listed twice is one run
    folders = []
    for params in jobs:
        name, run_dir, full, cfg = plan_run(params, workdir)
        if name not in tasks:
            tasks[name] = cluster.Task(name, run_dir, full, _finished_with_this_data(run_dir, cfg))
        folders.append(run_dir)
    folder = run_dirs(workdir).root / "submitit"
    cluster.run_groups(group_jobs(list(tasks.values()), lambda t: t.params), workdir, folder, settings, runner,
                       progress)
    return folders


def _unimodal_group(params: dict[str, Any]) -> tuple:
    """Runs with equal keys share their unimodal stage (the trainer caches it by seed and training data).

    Stage 1 trains on the augmented rows and targets only for ``augment_unimodal`` or a unimodal model;
    otherwise it trains on the original rows, shared by every augmentation setting of that seed and data.
    """
    corpora = params.get("train_corpora")
    corpora = ",".join(map(str, corpora)) if isinstance(corpora, (list, tuple)) else str(corpora)

    augment = _augment_values(params)
    if any(augment) and (params.get("augment_unimodal") or params.get("model") in UNIMODAL_MODELS):
        return (params.get("seed"), corpora, *augment)
    return (params.get("seed"), corpora)  # unaugmented stage 1: also audio_only/text_only's (no model in its key)


def group_jobs(jobs: list, params_of: Callable[[Any], dict] = lambda job: job) -> list[list]:
    """The jobs by unimodal group (``_unimodal_group``), largest group first; in each, the run that goes first
    trains every stage-1 modality (a text_only run trains no audio stage 1, so it goes last)."""

    groups: dict[tuple, list] = {}
    for job in jobs:
        groups.setdefault(_unimodal_group(params_of(job)), []).append(job)
    for g in groups.values():
        g.sort(key=lambda job: params_of(job).get("model") == "text_only")
    return sorted(groups.values(), key=len, reverse=True)


def _jobs(base: dict[str, Any], settings: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """One parameter dict per setting and seed (settings outer), without a fixed ``run_name``."""
    jobs = [{**base, **s, "seed": int(seed)} for s in settings for seed in seeds]
    for params in jobs:
        params.pop("run_name", None)
    return jobs
