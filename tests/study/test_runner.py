"""Notebook 07's study runner: the dependency schedule of parallel runs, the unimodal-stage groups, and the
process runner (``bber train`` in a child process). Fast: a fake runner or a fake ``bber train`` script."""

from __future__ import annotations

from bber_utils.study import cli
from bber_utils.study import registry as study_registry
from bber_utils.study import runner as study_runner
# ------------------------------------------------------------------------------ sweep values (issue 25)
from hypothesis import given, strategies as st  # noqa: E402
import _thread
import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from bber_utils.study import registry

from bber_utils.study import runner

from bber_utils.study import schedule
from tests.study.common import fake_runner, write_run
# --------------------------------------------------------------------------------------------- schedule

def _jobs(sizes: list[int]) -> list[dict]:
    """Groups of ``sizes`` runs: one seed per group, runs differing in an augmentation of the fusion model."""
    return [{"model": "biformer", "train_corpora": ["a", "b"], "seed": g, "sds_ratio": 0.5 * i}
            for g, n in enumerate(sizes) for i in range(n)]


def _recording_runner(first_s: float = 0.1, other_s: float = 0.4):
    """A fake training run: the group's first run is short, the others long; records (group, start, end)."""
    events, lock, firsts = [], threading.Lock(), set()

    def run(params):
        group = schedule._unimodal_group(params)
        with lock:
            first = group not in firsts
            firsts.add(group)
        start = time.monotonic()
        time.sleep(first_s if first else other_s)
        with lock:
            events.append((group, start, time.monotonic(), first))

    return run, events


def test_schedule_waits_for_each_groups_first_run_then_runs_the_rest_in_parallel():
    run, events = _recording_runner()
    schedule._run_scheduled(_jobs([3, 3, 2]), run, workers=2, progress=False)
    assert len(events) == 8 and len({e[0] for e in events}) == 3
    overlap_within_group = False
    for group in {e[0] for e in events}:
        runs = sorted((e for e in events if e[0] == group), key=lambda e: e[1])
        first_end = runs[0][2]
        assert all(start >= first_end for _, start, _, _ in runs[1:]), f"{group}: started before its first run ended"
        overlap_within_group |= any(a[1] < b[2] and b[1] < a[2] for a in runs[1:] for b in runs[1:] if a is not b)
    assert overlap_within_group, "no two runs of one group ever ran at once after its first run"


def test_schedule_stops_after_an_error_and_raises_it():
    started = []

    def run(params):
        started.append(params["seed"])
        if params["seed"] == 0:
            raise RuntimeError("run 0 failed")
        time.sleep(0.2)

    with pytest.raises(RuntimeError, match="run 0 failed"):
        schedule._run_scheduled(_jobs([1] * 6), run, workers=2, progress=False)
    assert started[0] == 0 and len(started) <= 2  # the run started beside the failing one ends; nothing new


def test_study_numbers_do_not_depend_on_workers(tmp_path):
    """The same study with 1 and 2 workers trains the same set of runs (a fake, deterministic runner)."""
    done = {1: [], 2: []}
    for workers in (1, 2):
        schedule._run_scheduled(_jobs([2, 2, 1]), lambda p, w=workers: done[w].append(sorted(p.items())),
                          workers=workers, progress=False)
    assert sorted(done[1]) == sorted(done[2]) and len(done[1]) == 5


# ---------------------------------------------------------------------------------------------- groups

def test_unimodal_groups_follow_what_stage_one_trains_on():
    fusion = {"model": "biformer", "train_corpora": ["demo_en", "demo_ru"], "seed": 1}
    group = schedule._unimodal_group
    # a fusion model's stage 1 trains on the original rows: one group for every augmentation of a seed
    assert group(fusion) == group({**fusion, "sds_ratio": 0.5}) == group({**fusion, "tug_ratio": 0.5,
                                                                            "ls_llm_p": 0.2, "label_smoothing": .1})
    assert group(fusion) == group({**fusion, "model": "bigraphformer"})
    assert group(fusion) != group({**fusion, "seed": 2})
    assert group(fusion) != group({**fusion, "train_corpora": ["demo_en"]})
    # a unimodal model trains on the augmented rows: its augmentations are groups of their own
    audio = {**fusion, "model": "audio_only"}
    assert group(audio) != group({**audio, "sds_ratio": 0.5}) != group({**audio, "tug_ratio": 0.5})
    assert group({**fusion, "model": "text_only"}) != group({**fusion, "model": "text_only", "ls_llm_p": 0.2})
    # augment_unimodal=True: stage 1 of a fusion model sees the augmentations too
    aug = {**fusion, "augment_unimodal": True}
    assert group(aug) != group({**aug, "sds_ratio": 0.5}) != group({**aug, "label_smoothing": 0.1})
    assert group({**aug, "sds_ratio": 0.5}) == group({**aug, "sds_ratio": 0.5, "model": "bimamba"})


# ---------------------------------------------------------------------------------------- process runner

FAKE_TRAIN = """#!/bin/sh
# a fake `bber train`: argv = -m bber_utils.cli train --config PARAMS
dir=$(dirname "$5")
echo $$ > "$dir/pid"
case "$FAKE_TRAIN" in
  fail) for i in $(seq 1 30); do echo "epoch line $i"; done; echo "ValueError: bad features" >&2; exit 3;;
  sleep) exec sleep 60;;
  *) echo '{"run": "fake", "metrics": {}}' > "$dir/metrics.json";;
esac
"""


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    """Replace the child command by a shell script; ``FAKE_TRAIN`` picks its behaviour. Yields the params."""
    script = tmp_path / "fake_bber"
    script.write_text(FAKE_TRAIN)
    script.chmod(0o755)
    real = runner._train_command(Path("p.yaml"))
    assert real[1:] == ["-m", "bber_utils.cli", "train", "--config", "p.yaml"] and "python" in Path(real[0]).name
    monkeypatch.setattr(runner, "_train_command", lambda config, nproc=1: [str(script), *real[1:-1], str(config)])
    yield {"model": "biformer", "seed": 7, "train_corpora": ["demo_en"], "epochs": 1, "sds_ratio": 0.5,
           "profile": "smoke", "ablation_workers": 2}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_process_runner_writes_params_with_the_run_name_and_logs(tmp_path, fake_train):
    run_dir = runner.run_one(fake_train, tmp_path / "work")
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert run_dir.name == registry.run_name_for(fake_train, tmp_path / "work") == params["run_name"]
    assert params["workdir"] == str(run_dir.parents[1]) and params["progress"] is False
    assert params["sds_ratio"] == 0.5 and "ablation_workers" not in params  # the training keys only
    assert (run_dir / "train.log").exists() and (run_dir / "metrics.json").exists()
    assert not (run_dir / "06_train.ipynb").exists()


def test_process_runner_never_redoes_a_finished_run(tmp_path, fake_train, monkeypatch):
    run_dir = runner.run_one(fake_train, tmp_path)
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns
    monkeypatch.setattr(runner, "_train_command", lambda config: pytest.fail("trained a finished run again"))
    assert runner.run_one(fake_train, tmp_path) == run_dir
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp


def test_a_failing_run_names_the_run_and_quotes_its_log(tmp_path, fake_train, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN", "fail")
    name = registry.run_name_for(fake_train, tmp_path)
    with pytest.raises(RuntimeError) as err:
        runner.run_one(fake_train, tmp_path)
    msg = str(err.value)
    assert name in msg and "status 3" in msg and "ValueError: bad features" in msg and "epoch line 30" in msg
    assert "epoch line 10" not in msg  # only the tail


def test_an_unknown_study_runner_is_a_config_error(tmp_path):
    from bber_utils.core.errors import ConfigError

    with pytest.raises(ConfigError, match="study_runner 'papermill'.*notebook"):
        schedule.run_study({}, [], [1], tmp_path, study_runner="papermill")


def _interrupt_when_started(pid_files: list[Path], delay: float = 0.2) -> threading.Thread:
    """Interrupt the main thread (as Ctrl-C in a kernel does) once every pid file exists."""
    def go():
        deadline = time.monotonic() + 20
        while not all(p.exists() and p.read_text().strip() for p in pid_files) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        _thread.interrupt_main()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_ctrl_c_stops_the_training_process(tmp_path, fake_train, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN", "sleep")
    pid_file = tmp_path / "train" / registry.run_name_for(fake_train, tmp_path) / "pid"
    _interrupt_when_started([pid_file])
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run_one(fake_train, tmp_path)
    pid = int(pid_file.read_text())
    try:
        assert not _alive(pid), "the training process outlived the interrupt"
        assert time.monotonic() - t0 < 30
    finally:
        if _alive(pid):
            os.kill(pid, 9)


def test_ctrl_c_during_a_parallel_study_stops_every_training_process(tmp_path, fake_train, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN", "sleep")
    jobs = [{**fake_train, "seed": s} for s in (1, 2)]
    pid_files = [tmp_path / "train" / registry.run_name_for(j, tmp_path) / "pid" for j in jobs]
    _interrupt_when_started(pid_files)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        schedule._run_scheduled(jobs, lambda p: runner.run_one(p, tmp_path), workers=2, progress=False)
    pids = [int(p.read_text()) for p in pid_files]
    try:
        assert not [p for p in pids if _alive(p)], "a training process outlived the interrupt"
        assert time.monotonic() - t0 < 30, "the interrupt waited for the training processes to end by themselves"
    finally:
        for p in pids:
            if _alive(p):
                os.kill(p, 9)


_PLAIN = st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True)
_ITEM = st.one_of(
    _PLAIN,
    st.lists(_PLAIN, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),            # a YAML flow list
    st.lists(_PLAIN, min_size=1, max_size=3).map(lambda xs: "'" + ",".join(xs) + "'"),  # a quoted string
    st.lists(_PLAIN, min_size=1, max_size=2).map(lambda xs: "{a: [" + ",".join(xs) + "]}"),
)





def test_sweep_is_resumable(tmp_path):
    calls = []
    runner = fake_runner(tmp_path, calls)
    first = study_runner.run_sweep({"model": "m"}, [{"sds_ratio": 0.5}], [1, 2], tmp_path, runner, progress=False)
    assert len(first) == 2 and all((d / "metrics.json").exists() for d in first)
    stamp = [(d / "metrics.json").stat().st_mtime_ns for d in first]
    again = study_runner.run_sweep({"model": "m"}, [{"sds_ratio": 0.5}], [1, 2], tmp_path, runner, progress=False)
    assert again == first and stamp == [(d / "metrics.json").stat().st_mtime_ns for d in again]


def test_run_one_skips_finished_runs_without_executing(tmp_path, monkeypatch):
    params = {"model": "m", "seed": 3}
    write_run(tmp_path, study_registry.run_name_for(params), params, {("x", "test"): .1})
    monkeypatch.setattr("bber_utils.core.papermill.run_notebook", lambda *a, **k: pytest.fail("re-ran a finished run"))
    assert study_runner.run_one(params, tmp_path).name == study_registry.run_name_for(params)


@given(st.lists(_ITEM, min_size=1, max_size=5))
def test_sweep_values_split_on_the_commas_outside_brackets_and_quotes(items):
    assert cli.split_sweep_values(",".join(items)) == items


@pytest.mark.parametrize("text, values", [
    ("biformer,bimamba", ["biformer", "bimamba"]),
    ("[a,b],[c]", ["[a,b]", "[c]"]),
    ("[a, b]", ["[a, b]"]),
    ('"x,y",z', ['"x,y"', "z"]),
    ("it's,b", ["it's", "b"]),                # an apostrophe inside a plain value is not a quote
    ("1,2,", ["1", "2"]),
])
def test_sweep_values_examples(text, values):
    assert cli.split_sweep_values(text) == values


@pytest.mark.parametrize("text", ["[a,b", "a]", "'a,b", "{a: [1}"])
def test_unbalanced_sweep_values_are_refused(text):
    from bber_utils.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unbalanced"):
        cli.split_sweep_values(text)


def test_both_runners_train_every_training_key_of_the_run(tmp_path, monkeypatch):
    """The process runner's params.yaml and notebook 06 (given the run as ``profile_params``) train one config: every
    training key of the run, also those notebook 06's parameters cell does not declare (``grad_clip`` here; they
    used to fall back to their defaults)."""
    from bber_utils.core.papermill import injected_parameters
    from bber_utils.train import TrainConfig, load_profile

    base = {**load_profile("smoke"), "grad_clip": 0.5, "feature_device": "cpu", "progress": False}
    seen = {}

    def process(name, run_dir, cfg, nproc_per_node=1):
        seen["process"] = cfg
        (run_dir / "metrics.json").write_text("{}")

    def notebook(src, dst, params):
        seen["notebook"] = injected_parameters(src, params)
        (dst.parent / "metrics.json").write_text("{}")

    monkeypatch.setattr(runner, "_train_process", process)
    monkeypatch.setattr(runner, "run_notebook", notebook)
    by_process = runner.run_one(base, tmp_path / "a")
    by_notebook = runner.run_one(base, tmp_path / "b", study_runner="notebook")
    assert by_process.name == by_notebook.name
    trained = [TrainConfig.from_dict({**cfg, "workdir": "w"}).to_dict()
               for cfg in (seen["process"], seen["notebook"]["profile_params"])]
    assert trained[0] == trained[1] == TrainConfig.from_dict({**base, "workdir": "w", "run_name": by_process.name})\
        .to_dict()
    assert "ablation_seeds" not in seen["process"]  # params.yaml holds training keys only
