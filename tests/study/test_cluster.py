"""The submitit launcher (``study_runner: submitit``, ``bber sweep --launcher submitit``): the slurm block's checks
and the sbatch script it asks for; then runs as jobs of submitit's local executor (real processes, real job
folders): each group's first run goes first, failures are named with their logs, a rerun resubmits only them,
Ctrl-C leaves the jobs running and a rerun reattaches, a preempted job is requeued; and a smoke study whose table
is the process runner's."""

from __future__ import annotations

import _thread
import functools
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from bber_utils.cli import main
from bber_utils.core.errors import ConfigError
from bber_utils.core.paths import run_dirs
from bber_utils.study import cluster, runner, schedule
from tests.study.common import cluster_fake_run

REPO = Path(__file__).resolve().parents[2]
LOCAL = {"cluster": "local", "array_parallelism": 2, "timeout_min": 5}


# ------------------------------------------------------------------------------------------ the slurm block

@pytest.mark.parametrize("block, says", [
    ({"partitoin": "gpu"}, "unknown slurm key 'partitoin' (did you mean 'partition'?)"),
    ({"mem_gb": "16G"}, "slurm.mem_gb: '16G' is not a number of GB > 0"),
    ({"mem_gb": 0}, "slurm.mem_gb: 0 is not"),
    ({"gpus_per_node": -1}, "slurm.gpus_per_node: -1 is not a whole number >= 0"),
    ({"timeout_min": 1.5}, "slurm.timeout_min: 1.5 is not a whole number >= 1"),
    ({"array_parallelism": True}, "slurm.array_parallelism: True is not"),
    ({"cpus_per_task": "4"}, "slurm.cpus_per_task: '4' is not"),
    ({"partition": "gpu long"}, "slurm.partition: 'gpu long' is not a partition name"),
    ({"cluster": "slrum"}, "unknown slurm.cluster 'slrum' (did you mean 'slurm'?)"),
    ("gpu", "slurm: 'gpu' is not a mapping"),
])
def test_a_bad_slurm_block_is_one_line(block, says):
    with pytest.raises(ConfigError) as err:
        cluster.slurm_settings(block)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_the_slurm_block_fills_in_defaults():
    assert cluster.slurm_settings(None) == cluster.SLURM_DEFAULTS
    assert cluster.slurm_settings({"gpus_per_node": 4, "mem_gb": 7.5})["mem_gb"] == 7.5


def test_a_bad_block_stops_the_study_before_anything_is_submitted(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "make_executor", lambda *a: pytest.fail("submitted despite a bad slurm block"))
    base = {"model": "biformer", "slurm": {"cluster": "local", "gpus": 1}}
    with pytest.raises(ConfigError, match="unknown slurm key 'gpus'"):
        schedule.run_study(base, [{"study": "s", "setting": "a"}], [1], tmp_path, study_runner="submitit")
    assert not (tmp_path / "submitit").exists()


def test_submitit_missing_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    with pytest.raises(ConfigError) as err:
        cluster.check({"cluster": "local"})
    assert "pip install 'bber[cluster]'" in str(err.value) and "\n" not in str(err.value)


def test_no_slurm_here_is_one_line(monkeypatch):
    monkeypatch.setattr(cluster.shutil, "which", lambda tool: None)
    with pytest.raises(ConfigError, match="sbatch and srun are not on this machine's PATH.*cluster: local"):
        cluster.check({"partition": "gpu"})


def test_bber_sweep_with_a_bad_slurm_block_exits_2_with_one_line(tmp_path, capsys):
    profile = tmp_path / "p.yaml"
    profile.write_text(f"workdir: {tmp_path / 'nowhere'}\nslurm: {{mem_gb: 16G}}\n")
    rc = main(["sweep", "--profile", str(profile), "--launcher", "submitit", "model=biformer"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "bber sweep: error: slurm.mem_gb: '16G' is not a number of GB > 0 (e.g. 32)"


def test_bber_reproduce_checks_the_slurm_block_before_notebook_01():
    from bber_utils.notebook.pipeline import validate_request

    with pytest.raises(ConfigError, match="unknown slurm key 'gpu'"):
        validate_request("smoke", None, None, {"study_runner": "submitit", "slurm": {"cluster": "local", "gpu": 1}})
    assert validate_request("smoke", None, None, {"study_runner": "submitit", "slurm": {"cluster": "local"}})


def _stand_in_slurm(folder: Path, monkeypatch, sbatch: str = "exit 0") -> None:
    """``srun`` and ``sbatch`` scripts on PATH (there is no SLURM here)."""
    for tool, body in (("srun", "exit 0"), ("sbatch", sbatch)):
        (folder / tool).write_text(f"#!/bin/sh\n{body}\n")
        (folder / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_the_job_script_asks_slurm_for_the_blocks_resources(tmp_path, monkeypatch):
    """The sbatch script submitit would submit."""
    _stand_in_slurm(tmp_path, monkeypatch)
    settings = cluster.slurm_settings({"partition": "gpu", "gpus_per_node": 2, "cpus_per_task": 8, "timeout_min": 720,
                                       "mem_gb": 32, "array_parallelism": 3})
    executor = cluster.make_executor(tmp_path / "jobs", settings)
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--time=720", "--mem=32GB",
                 "--nodes=1", "--ntasks-per-node=1", "--signal=USR2"):
        assert f"#SBATCH {line}" in script, line
    assert executor._executor.parameters["array_parallelism"] == 3


def test_sbatch_refusing_the_jobs_is_one_line(tmp_path, monkeypatch, capsys):
    _stand_in_slurm(tmp_path, monkeypatch, "echo 'sbatch: error: invalid partition specified: gpux' >&2\n"
                                           "echo 'sbatch: error: Batch job submission failed' >&2\nexit 1")
    jobs = [{"model": m, "seed": 1, "train_corpora": ["x"]} for m in ("biformer", "bimamba")]
    with pytest.raises(ConfigError) as err:
        runner.run_on_cluster(jobs, tmp_path / "w", {"partition": "gpux"}, cluster_fake_run, progress=False)
    assert str(err.value) == ("slurm refused the jobs: sbatch: error: invalid partition specified: gpux; check the "
                              "slurm block against the cluster (sinfo)")
    assert "sbatch" not in capsys.readouterr().err  # not submitit's print of it as well


def test_a_multi_gpu_job_trains_under_torchrun(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(cluster, "run_groups", lambda groups, wd, folder, settings, fn, progress: seen.update(fn=fn))
    runner.run_on_cluster([{"model": "biformer", "seed": 1}], tmp_path, {"cluster": "local", "gpus_per_node": 4})
    assert seen["fn"].keywords == {"study_runner": "process", "nproc_per_node": 4}
    command = runner._train_command(Path("p.yaml"), 4)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert command[6:] == ["bber_utils.cli", "train", "--config", "p.yaml"]


def test_a_job_is_requeued_with_the_same_call():
    job = cluster.TrainJob(functools.partial(os.path.join, "/runs"))
    again = job.checkpoint({"seed": 1}, "/w")
    assert again.function is job and again.args == ({"seed": 1}, "/w")
    assert job("train", "r") == "/runs/train/r"


def test_the_reason_of_a_failure_is_the_exception_line():
    trace = ('Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent '
             'call last):\n  File "x.py", line 3, in f\n    raise RuntimeError(msg)\nRuntimeError: run r: `bber '
             'train` exited with status 3; the last lines of /w/train.log:\nepoch 1\n')
    assert cluster._reason(trace) == "RuntimeError: run r: `bber train` exited with status 3; the last lines of " \
                                     "/w/train.log:"
    assert cluster._reason("Job 12 has not produced any output (state: TIMEOUT)") == \
        "Job 12 has not produced any output (state: TIMEOUT)"


# ---------------------------------------------------------------------- jobs of submitit's local executor

@pytest.fixture
def local_jobs(tmp_path, monkeypatch):
    """Jobs of the local executor import ``tests.study.common`` (the fake run): the checkout on their path. A job
    a failed test leaves behind is killed (by the pid its record names)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    yield
    for record in tmp_path.glob("**/train/*/submitit.json"):
        job_id = json.loads(record.read_text())["job_id"]
        if cluster._local_alive(job_id):
            os.kill(int(job_id), signal.SIGKILL)


def _study(workdir, jobs, **kw):
    return runner.run_on_cluster(jobs, workdir, LOCAL, cluster_fake_run, progress=False, **kw)


def _submitted(workdir) -> int:
    return len(list((workdir / "submitit").glob("*_submitted.pkl")))


def _times(workdir, job) -> tuple[float, float]:
    name = runner.plan_run(job, workdir)[0]
    start, end = (run_dirs(workdir).train / name / "times").read_text().split()
    return float(start), float(end)


def test_jobs_wait_for_their_groups_first_run_failures_are_named_and_a_rerun_resubmits_only_them(tmp_path,
                                                                                                   local_jobs):
    jobs = [{"model": m, "seed": s, "train_corpora": ["x"]}
            for s, models in ((1, ("text_only", "biformer", "bimamba")), (2, ("biformer", "bimamba"))) for m in models]
    (tmp_path / "fail-s1-bimamba").touch()   # a run after its group's first
    (tmp_path / "fail-s2-biformer").touch()  # a group's first run: its other run waits
    with pytest.raises(cluster.RunsFailed) as err:
        _study(tmp_path, jobs)
    lines = str(err.value).splitlines()
    names = {(j["seed"], j["model"]): runner.plan_run(j, tmp_path)[0] for j in jobs}
    assert lines[0].startswith("2 of 5 runs failed and 1 were not started; rerun the same command")
    for key in ((1, "bimamba"), (2, "biformer")):
        line = next(line for line in lines if names[key] in line)
        assert f"RuntimeError: run {names[key]}: made to fail; log: " in line
        assert Path(line.split("; log: ")[1]).is_file() and "made to fail" in Path(line.split("; log: ")[1]).read_text()
    assert any(names[2, "bimamba"] in line and "not started, waits for " + names[2, "biformer"] in line
               for line in lines)
    first_end = _times(tmp_path, jobs[1])[1]  # seed 1's biformer: text_only trains no audio stage 1, never first
    assert _times(tmp_path, jobs[0])[0] >= first_end
    assert _submitted(tmp_path) == 4

    for marker in tmp_path.glob("fail-*"):
        marker.unlink()
    folders = _study(tmp_path, jobs)
    assert all((f / "metrics.json").is_file() for f in folders) and len(set(folders)) == 5
    assert _submitted(tmp_path) == 4 + 3, "a rerun submitted a finished run again"
    assert _times(tmp_path, jobs[4])[0] >= _times(tmp_path, jobs[3])[1]


def _interrupt_when(path: Path) -> None:
    def go():
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        _thread.interrupt_main()

    threading.Thread(target=go, daemon=True).start()


def test_ctrl_c_leaves_the_jobs_running_and_a_rerun_reattaches(tmp_path, local_jobs, capsys):
    job = {"model": "biformer", "seed": 1, "train_corpora": ["x"]}
    run_dir = runner.plan_run(job, tmp_path)[1]
    (tmp_path / "hold").touch()
    _interrupt_when(run_dir / "pid")
    with pytest.raises(KeyboardInterrupt):
        _study(tmp_path, [job])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted: 1 submitit job(s) keep running") and "run the same command again" in err[-1]
    record = (run_dir / "submitit.json").read_text()
    job_id = json.loads(record)["job_id"]
    assert cluster._local_alive(job_id), "Ctrl-C stopped the job"

    (tmp_path / "hold").unlink()
    assert _study(tmp_path, [job]) == [run_dir] and (run_dir / "metrics.json").is_file()
    assert _submitted(tmp_path) == 1 and (run_dir / "submitit.json").read_text() == record
    assert len((run_dir / "calls").read_text().split()) == 1, "the run was started twice"


def test_a_preempted_job_is_requeued_and_finishes(tmp_path, local_jobs):
    """SIGUSR2 is what SLURM sends before preempting a job (``--signal=USR2@90``): submitit calls the job's
    ``checkpoint`` and requeues the same call."""
    job = {"model": "biformer", "seed": 1, "train_corpora": ["x"]}
    run_dir = runner.plan_run(job, tmp_path)[1]
    (tmp_path / "preempt").touch()

    def preempt():
        deadline = time.monotonic() + 60
        while not (run_dir / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(int((run_dir / "pid").read_text()), signal.SIGUSR2)

    threading.Thread(target=preempt, daemon=True).start()
    assert _study(tmp_path, [job]) == [run_dir]
    assert len((run_dir / "calls").read_text().split()) == 2 and (run_dir / "metrics.json").is_file()
    logs = "".join(p.read_text() for p in (tmp_path / "submitit").glob("*_log.err"))
    assert "Caught signal SIGUSR2" in logs


def test_bber_sweep_launcher_submitit_runs_jobs_and_names_the_failed_run(tmp_path, local_jobs, monkeypatch, capsys):
    from tests.train.common import make_workdir

    real = runner.run_on_cluster
    monkeypatch.setattr(runner, "run_on_cluster", lambda jobs, wd, slurm, fn, progress: real(
        jobs, wd, slurm, cluster_fake_run, progress=False))
    wd = make_workdir(tmp_path)
    profile = tmp_path / "p.yaml"
    profile.write_text(f"workdir: {wd}\nslurm: {{cluster: local}}\n")
    argv = ["sweep", "--profile", str(profile), "--seeds", "1", "--launcher", "submitit",
            "model=biformer,bimamba,biformer"]  # biformer twice: one run
    (wd / "fail-s1-bimamba").touch()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "bber sweep: 1 of 2 runs failed; rerun the same command to resubmit them (finished runs are kept):"
    assert "bimamba-" in err[1] and "made to fail; log: " in err[1]
    (wd / "fail-s1-bimamba").unlink()
    assert main(argv) == 0
    assert "bimamba" in capsys.readouterr().out and _submitted(wd) == 3


def test_the_paper_profiles_example_block_is_valid():
    lines = [line for line in (REPO / "configs" / "paper.yaml").read_text().splitlines()
             if line.startswith("# slurm: {")]
    assert len(lines) == 1
    block = yaml.safe_load(lines[0][2:])["slurm"]
    assert cluster.slurm_settings(block)["gpus_per_node"] == 1
    assert set(block) == set(cluster.SLURM_DEFAULTS) - {"cluster"}


# ---------------------------------------------------------------------------------- a real smoke study

@pytest.mark.slow
def test_a_smoke_study_as_submitit_jobs_gives_the_process_runners_table(tmp_path, local_jobs):
    """Four real runs (audio only, text only, BiFormer, BiFormer + SDS; one seed: the three after the first wait
    for its stage 1), each ``bber train`` inside a job of the local executor; the SDS run fails (its clip folder
    is a file), is named with its train.log, and a rerun trains only it. The table equals the process runner's
    on a copy of the same prepared folder."""
    from bber_utils import corpora
    from bber_utils.train.profiles import load_profile
    from bber_utils.study import paper_study

    process, jobs = tmp_path / "process", tmp_path / "submitit"
    corpora.prepare("demo", process, demo_per_class=2, progress=False)
    base = {**load_profile("smoke"), "epochs": 1, "unimodal_epochs": 1, "progress": False}
    settings = paper_study(corpora.available_corpora(process), ["biformer"], augment={"sds_ratio": 0.5},
                           single_corpus=False)
    expected = schedule.run_study({**base, "workdir": str(process)}, settings, [42], process, workers=2)
    for sub in ("data", "manifests", "features"):  # the prepared corpus and its features; no run, no stage 1
        shutil.copytree(process / sub, jobs / sub, symlinks=True)
    (jobs / "sds").mkdir()
    (jobs / "sds" / "wavs").write_text("")  # SDS cannot write its clips: the SDS run fails
    base = {**base, "workdir": str(jobs), "slurm": LOCAL}
    with pytest.raises(cluster.RunsFailed) as err:
        schedule.run_study(base, settings, [42], jobs, study_runner="submitit")
    failed = str(err.value).splitlines()
    assert failed[0].startswith("1 of 4 runs failed") and len(failed) == 2
    log = Path(failed[1].split("; log: ")[1].split(" (job log ")[0])
    assert "biformer-sds0.5" in failed[1] and log.name == "train.log" and "wavs" in log.read_text()

    (jobs / "sds" / "wavs").unlink()
    table = schedule.run_study(base, settings, [42], jobs, study_runner="submitit")
    assert len(expected) == 8 and table.equals(expected)
    assert _submitted(jobs) == 5
