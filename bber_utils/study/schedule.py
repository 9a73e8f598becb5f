"""``run_study``: every setting of a study for every seed on N workers, each
seed's shared unimodal stage trained once (the first run of its group goes first), then the study table.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable

from bber_utils.core.paths import run_dirs
from bber_utils.core.progress import tqdm
from bber_utils.study import forked, stats
from bber_utils.study.registry import load_registry
from bber_utils.study.runner import _check_study_runner, _jobs, _stop_children, group_jobs, run_on_cluster, run_one
from bber_utils.study.runner import _unimodal_group  # noqa: F401 - defined in runner, long known here


def run_study(base: dict[str, Any], settings: list[dict[str, Any]], seeds: Iterable[int],
              workdir: str | os.PathLike, runner=None, workers: int = 1, study_runner: str = "process"):
    """Run every study setting for every seed (resumable) and return its summary table (test split).

    The settings are saved to ``<workdir>/ablations/settings.json`` and the table to ``study.csv``; the table
    summarises the runs of this study only (an older run of a setting under other settings in the same work
    folder, e.g. one made before a default changed, is left out). Each run is
    ``run_one`` (``study_runner``: ``bber train`` in a subprocess, or notebook 06 by papermill) unless
    ``runner`` replaces it. ``workers`` runs go at once (``_run_scheduled``): runs sharing a cached unimodal
    stage wait for the first of them, so no stage is trained twice; each run is deterministic on its own, so the
    numbers do not depend on ``workers``; with more than one, each run trains its stage 1 in its own process
    (``parallel_stage1`` off). ``study_runner="submitit"``: each run a submitit job with the
    resources of ``base["slurm"]``, in the same order (``runner.run_on_cluster``; ``workers`` is unused).
    """
    _check_study_runner(study_runner)
    out = run_dirs(workdir).root / "ablations"
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(settings, indent=1, default=str))
    runs = [{k: v for k, v in s.items() if k not in ("study", "setting")} for s in settings]
    if int(workers) > 1:  # the workers fill the cores already: no second process for a run's stage 1
        base = {**base, "parallel_stage1": False}
    jobs = [job for seed in seeds for job in _jobs(base, runs, [int(seed)])]  # seeds outer: each seed's group early
    if study_runner == "submitit":  # a job per run; base["slurm"] names the resources
        folders = run_on_cluster(jobs, workdir, base.get("slurm"), runner)
    else:
        runner = runner or (lambda p, wd: run_one(p, wd, study_runner=study_runner))
        folders = []  # list.append is atomic: the worker threads share it
        with forked.serving():  # its runs forked from training servers, closed (and waited for) at the end
            _run_scheduled(jobs, lambda p: folders.append(runner(p, workdir)), max(1, int(workers)))
    registry = load_registry(workdir)
    if folders and all(f is not None for f in folders):  # this study's runs only, not every run in the folder
        registry = registry[registry["run"].isin({Path(f).name for f in folders})]
    table = stats.study_table(registry, settings)
    table.to_csv(out / "study.csv", index=False)
    return table


class _Schedule:
    """The ready queue of ``_run_scheduled``: the first run of each group (largest group first); a group's
    other runs become ready once its first run has finished. The first error stops handing out runs."""

    def __init__(self, groups: list[list[dict]]):
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

    schedule = _Schedule(group_jobs(jobs))
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
