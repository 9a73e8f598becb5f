"""A study's runs as submitit jobs (``study_runner="submitit"``, ``bber sweep --launcher submitit``): each run one
job with the resources of the profile's ``slurm`` block, on SLURM or with submitit's local executor.

``slurm_settings`` checks the block (one line for an unknown key or a malformed value, before anything is
submitted); ``run_groups`` submits the runs group by group (a group's first run trains the seed's shared stage 1;
its other runs are submitted once it has finished), waits for them and raises ``RunsFailed`` naming every failed
run and its log. Rerunning skips finished runs, waits for jobs an interrupted call left running (their ids are in
``train/<run>/submitit.json``) and resubmits the others. ``TrainJob`` is what a job runs; submitit requeues it on
preemption or timeout (``checkpoint``) and the trainer resumes from ``last.pt``.

This module knows nothing of training: ``runner.run_on_cluster`` plans the runs and hands it the function a job
calls. submitit (an optional extra) is imported inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from bber_utils.core.errors import ConfigError, unknown
from bber_utils.core.fileio import atomic_write_text
from bber_utils.core.progress import tqdm

# The keys of a profile's ``slurm`` block and the value a missing key takes.
SLURM_DEFAULTS: dict[str, Any] = {
    "cluster": "slurm",        # slurm | local (submitit's local executor: the jobs are processes on this machine)
    "partition": None,         # None: the cluster's default partition
    "gpus_per_node": 0,        # > 1: the run is `torchrun --nproc_per_node N` inside its job (DDP on one node)
    "cpus_per_task": 2,
    "timeout_min": 60,         # a job past it is requeued (preempted or timed out: the trainer resumes)
    "mem_gb": 8,
    "array_parallelism": 8,    # at most this many of the study's jobs at once
}
CLUSTERS = ("slurm", "local")
# The least value of each integer key.
_INT_KEYS = {"gpus_per_node": 0, "cpus_per_task": 1, "timeout_min": 1, "array_parallelism": 1}
INSTALL_HINT = ("pip install 'bber[cluster]' (in this checkout: pip install -e '.[cluster]'; `make setup` installs "
                "it from the lock)")
RECORD = "submitit.json"  # in train/<run>/: the job that runs it
_ACTIVE_SLURM = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "READY", "RESIZING", "SUSPENDED",
                 "PREEMPTED"}


def slurm_settings(block: Any) -> dict[str, Any]:
    """The ``slurm`` block with defaults filled in; ``ConfigError`` (one line) for a block that is not a mapping,
    an unknown key or a malformed value (``mem_gb: 16G``, ``gpus_per_node: -1``, ``cluster: slrum``)."""

    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError(f"slurm: {block!r} is not a mapping; e.g. slurm: {{partition: gpu, gpus_per_node: 1, "
                          f"timeout_min: 720}}")
    for key in block:
        if key not in SLURM_DEFAULTS:
            raise unknown("slurm key", key, SLURM_DEFAULTS)
    out = {**SLURM_DEFAULTS, **{k: v for k, v in block.items() if v is not None}}
    for key, least in _INT_KEYS.items():
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"slurm.{key}: {value!r} is not a whole number >= {least} "
                              f"(e.g. {SLURM_DEFAULTS[key] or 1})")
    mem = out["mem_gb"]
    if isinstance(mem, bool) or not isinstance(mem, (int, float)) or not math.isfinite(mem) or mem <= 0:
        raise ConfigError(f"slurm.mem_gb: {mem!r} is not a number of GB > 0 (e.g. 32)")
    part = out["partition"]
    if part is not None and (not isinstance(part, str) or not part.strip() or any(c.isspace() for c in part)):
        raise ConfigError(f"slurm.partition: {part!r} is not a partition name (e.g. gpu)")
    if out["cluster"] not in CLUSTERS:
        raise unknown("slurm.cluster", out["cluster"], CLUSTERS)
    return out


def import_submitit():
    """The submitit module, or ``ConfigError``: one line with the install command."""

    try:
        import submitit
    except ImportError:
        raise ConfigError(f"study_runner 'submitit' needs the package submitit, which is not installed: "
                          f"{INSTALL_HINT}") from None
    return submitit


def check(block: Any) -> dict[str, Any]:
    """Everything a submitit study needs, checked before anything runs: the block (``slurm_settings``), submitit
    installed, and ``sbatch`` and ``srun`` on this machine for ``cluster: slurm``."""

    settings = slurm_settings(block)
    import_submitit()
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if settings["cluster"] == "slurm" and missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(f"slurm.cluster is 'slurm' but {' and '.join(missing)} {verb} not on this machine's PATH: "
                          f"run it on the cluster's login node, or set slurm: {{cluster: local}} to run the jobs here")
    return settings


@dataclasses.dataclass
class Task:
    """One run: its name and folder, the parameters its job gets, and whether it is already finished."""

    name: str
    run_dir: Path
    params: dict[str, Any]
    finished: bool = False


class RunsFailed(RuntimeError):
    """Some runs failed; the message names each one with its log (the others finished and are kept)."""


class TrainJob:
    """What each job runs: ``fn(params, workdir)``. On preemption or timeout submitit calls ``checkpoint`` and
    requeues the same call, which resumes from the run's ``last.pt`` (``submitit.helpers.Checkpointable``'s
    contract, without importing submitit where it is not installed)."""

    def __init__(self, fn: Callable[[dict, str], Any]):
        self.fn = fn

    def __call__(self, params: dict[str, Any], workdir: str):
        return self.fn(params, workdir)

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def make_executor(folder: Path, settings: dict[str, Any]):
    """A submitit ``AutoExecutor`` with the block's resources (the SLURM-only keys are ignored by ``local``)."""

    submitit = import_submitit()
    executor = submitit.AutoExecutor(folder=folder, cluster=settings["cluster"])
    slurm = {"slurm_array_parallelism": settings["array_parallelism"]}
    if settings["partition"]:
        slurm["slurm_partition"] = settings["partition"]
    executor.update_parameters(name="bber", timeout_min=settings["timeout_min"], mem_gb=settings["mem_gb"],
                               cpus_per_task=settings["cpus_per_task"], gpus_per_node=settings["gpus_per_node"],
                               tasks_per_node=1, nodes=1, **slurm)
    return executor


def run_groups(groups: list[list[Task]], workdir: str | os.PathLike, folder: Path, settings: dict[str, Any],
               fn: Callable[[dict, str], Any], progress: bool = True, poll_s: float | None = None) -> list[Path]:
    """Run every task as a submitit job and return the run folders (in the groups' order).

    A group's first task goes first; its other tasks are submitted when it has finished (they reuse its cached
    stage 1); at most ``array_parallelism`` jobs at once. Finished tasks are skipped; a task whose recorded job
    is still pending or running is waited for, not submitted again. Ctrl-C leaves the jobs running and prints
    one line saying how to reattach. When runs failed, ``RunsFailed`` names each with its log once every other
    job has ended."""

    driver = _Driver(groups, make_executor(folder, settings), settings, fn, str(workdir), folder)
    poll = poll_s if poll_s is not None else (0.5 if settings["cluster"] == "local" else 15.0)
    bar = tqdm(total=driver.total, desc="runs (submitit)", disable=not progress)
    try:
        while driver.step(bar):
            _sleep(poll)
    except KeyboardInterrupt:
        print(driver.interrupt_line(), file=sys.stderr, flush=True)
        raise
    finally:
        bar.close()
    if driver.failed:
        raise RunsFailed(driver.summary())
    return [t.run_dir for g in groups for t in g]


def _sleep(seconds: float) -> None:
    """Sleep in short slices (a kernel's interrupt is seen at once)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.2))


class _Driver:
    """The state of ``run_groups``: ready tasks, each group's waiting tasks, the jobs in flight, the failures."""

    def __init__(self, groups, executor, settings, fn, workdir, folder):
        self.ready = deque(g[0] for g in groups if g)
        self.after = {g[0].name: list(g[1:]) for g in groups if g}
        self.total = sum(len(g) for g in groups)
        self.executor, self.settings, self.job = executor, settings, TrainJob(fn)
        self.workdir, self.folder = workdir, folder
        self.running: dict[str, tuple[Task, Any]] = {}
        self.failed: list[tuple[Task, str, Any]] = []
        self.not_started: list[tuple[Task, str]] = []

    def step(self, bar) -> bool:
        """Submit what is ready, collect what ended; False once nothing is left to do."""
        submit = []
        while self.ready and len(self.running) + len(submit) < self.settings["array_parallelism"]:
            task = self.ready.popleft()
            if task.finished:
                self._finished(task, bar)
            elif (job := _reattach(task, self.settings["cluster"])) is not None:
                self.running[task.name] = (task, job)
            else:
                submit.append(task)
        if submit:
            self._submit(submit)
        for name, (task, job) in list(self.running.items()):
            if job.done():
                del self.running[name]
                reason = _failure(task, job)
                if reason is None:
                    self._finished(task, bar)
                else:
                    self.failed.append((task, reason, job))
                    self.not_started += [(t, task.name) for t in self.after.pop(task.name, [])]
        return bool(self.ready or self.running)

    def _finished(self, task: Task, bar) -> None:
        self.ready.extend(self.after.pop(task.name, []))
        bar.update(1)

    def _submit(self, tasks: list[Task]) -> None:
        """One array (``executor.batch``) of the ready tasks; each job's id goes to ``train/<run>/submitit.json``."""
        jobs = []
        try:  # submitit prints sbatch's complaint and raises it: one line instead
            with contextlib.redirect_stderr(io.StringIO()), self.executor.batch():
                for task in tasks:
                    jobs.append(self.executor.submit(self.job, task.params, self.workdir))
        except Exception as exc:  # noqa: BLE001 - sbatch refused them: a partition, a limit, a resource
            more = (f"; the {len(self.running)} job(s) submitted before keep running: run the same command again "
                    f"once it is fixed" if self.running else "")
            raise ConfigError(f"{self.settings['cluster']} refused the jobs: {_reason(str(exc))}; check the slurm "
                              f"block against the cluster (sinfo){more}") from None
        for task, job in zip(tasks, jobs):
            task.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(task.run_dir / RECORD, json.dumps(
                {"job_id": str(job.job_id), "cluster": self.settings["cluster"], "folder": str(self.folder)}))
            self.running[task.name] = (task, job)

    def interrupt_line(self) -> str:
        return (f"interrupted: {len(self.running)} submitit job(s) keep running (logs in {self.folder}); to "
                f"reattach, run the same command again: it waits for them, resubmits nothing that runs and skips "
                f"finished runs")

    def summary(self) -> str:
        lines = [f"{len(self.failed)} of {self.total} runs failed"
                 + (f" and {len(self.not_started)} were not started" if self.not_started else "")
                 + "; rerun the same command to resubmit them (finished runs are kept):"]
        for task, reason, job in self.failed:
            lines.append(f"  {task.name} (job {job.job_id}): {reason}; log: {_log_path(task, job)}")
        for task, first in self.not_started:
            lines.append(f"  {task.name}: not started, waits for {first} (its group's first run)")
        return "\n".join(lines)


def _failure(task: Task, job) -> str | None:
    """None when the job's run finished (its ``metrics.json`` exists), else why not, in one line."""
    try:
        job.result()
    except Exception as exc:  # noqa: BLE001 - the job's own error, reported
        return _reason(str(exc))
    if not (task.run_dir / "metrics.json").exists():
        return f"the job ended without writing {task.run_dir / 'metrics.json'}"
    return None


def _reason(text: str) -> str:
    """The error line of a job's failure: the exception line after the last traceback frame, else the first
    non-empty line (submitit's own messages: a job killed, timed out too often, never started)."""
    lines = text.splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    for line in lines[frames[-1] + 1:] if frames else []:
        if line.strip() and not line[0].isspace():
            return line.strip()[:300]
    return next((line.strip()[:300] for line in lines if line.strip()), "failed")


def _log_path(task: Task, job) -> str:
    """The run's ``train.log`` (what ``bber train`` printed) and the job's own stderr."""
    job_log = str(job.paths.stderr)
    train_log = task.run_dir / "train.log"
    return f"{train_log} (job log {job_log})" if train_log.exists() else job_log


def _reattach(task: Task, cluster: str):
    """The job recorded for ``task`` if it is still pending or running (an interrupted call submitted it), else
    None."""
    try:
        record = json.loads((task.run_dir / RECORD).read_text(encoding="utf-8"))
        job_id, folder = str(record["job_id"]), Path(record["folder"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("cluster") != cluster:
        return None
    submitit = import_submitit()
    if cluster == "local":
        return _Orphan(submitit.LocalJob(folder, job_id)) if _local_alive(job_id) else None
    job = submitit.SlurmJob(folder, job_id)
    return job if not job.paths.result_pickle.exists() and job.state.upper() in _ACTIVE_SLURM else None


class _Orphan:
    """A local job an earlier (interrupted) call started: done when its controller process has exited."""

    def __init__(self, job):
        self.job, self.job_id, self.paths = job, job.job_id, job.paths

    def done(self) -> bool:
        return not _local_alive(self.job_id)

    def result(self):
        return self.job.result()


def _local_alive(job_id: str) -> bool:
    """Whether the local executor's controller process ``job_id`` (its pid) still runs."""
    try:
        pid = int(job_id)
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ValueError, OSError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X") and b"submitit" in cmdline
