"""A study's runs forked from a training server (``bber_utils/study/forked.py``): the same run as a fresh
``python -m bber_utils.cli train``, a failing run quoted from its log, a run stopped by its signal without
stopping the server, a dead server replaced, and the runs' CPU time counted once the servers are closed."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from bber_utils.study import forked, runner
from tests.train.common import real_workdir, tiny_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the training server forks (Linux)")

# A server whose command sleeps argv[0] seconds, or burns CPU for argv[1] seconds, then exits with argv[2].
SERVER = [sys.executable, "-c", """
import sys, time
from bber_utils.study import forked
def command(argv):
    time.sleep(float(argv[0]))
    end = time.process_time() + float(argv[1])
    while time.process_time() < end:
        pass
    print("ran", argv)
    return int(argv[2])
sys.exit(forked.serve(command))
"""]


def _params(wd, **kw):
    return tiny_config(wd, model="biformer", epochs=2, unimodal_epochs=2, audio_encoder="logmel",
                       text_encoder="hashgram", text_max_tokens=8, audio_pool=2, num_threads=1, **kw)


def _strip(metrics: dict) -> dict:
    """metrics.json without what differs between two runs of the same config (times, paths, the process)."""
    return {k: v for k, v in metrics.items() if k in ("metrics", "best_epoch", "data", "unimodal", "config")}


def test_a_forked_run_is_the_run_a_fresh_bber_train_makes(tmp_path, monkeypatch):
    import torch

    starts = []
    real_start = forked.TrainServer.start
    monkeypatch.setattr(forked.TrainServer, "start", lambda self, argv, log: starts.append(argv) or
                        real_start(self, argv, log))
    runs = {}
    for how in ("fresh", "forked"):
        wd = real_workdir(tmp_path / how)
        if how == "fresh":  # run_one on its own: a fresh `python -m bber_utils.cli train`
            runs[how] = runner.run_one(_params(wd, run_name="r"), wd)
        else:
            with forked.serving():  # as in a study or sweep
                runs[how] = runner.run_one(_params(wd, run_name="r"), wd)
    assert len(starts) == 1 and starts[0][:2] == ["train", "--config"] and not forked._SERVERS
    a, b = (json.loads((runs[h] / "metrics.json").read_text()) for h in ("fresh", "forked"))
    assert _strip(a)["metrics"] and _strip(a) == {**_strip(b), "config": {**_strip(b)["config"],
                                                                          "workdir": a["config"]["workdir"]}}
    sa, sb = (torch.load(runs[h] / "best.pt", weights_only=True)["model"] for h in ("fresh", "forked"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert "run folder:" in (runs["forked"] / "train.log").read_text()


def test_a_failing_forked_run_names_the_run_and_quotes_its_log(tmp_path, monkeypatch):
    wd = real_workdir(tmp_path)
    with forked.serving(), pytest.raises(RuntimeError) as err:
        runner.run_one(_params(wd, run_name="bad", train_corpora=["demo_ru"]), wd)
    msg = str(err.value)
    assert "run bad" in msg and "exited with status 1" in msg and "demo_ru" in msg, msg


def test_a_run_stopped_by_its_signal_leaves_the_server_serving(tmp_path):
    server = forked.TrainServer(SERVER)
    try:
        log = tmp_path / "a.log"
        run = server.start(["60", "0", "0"], log)
        with pytest.raises(subprocess.TimeoutExpired):
            run.wait(0.3)
        assert run.poll() is None
        run.terminate()
        assert run.wait(10) == -15
        with pytest.raises(ProcessLookupError):
            os.kill(run.pid, 0)
        again = server.start(["0", "0", "3"], tmp_path / "b.log")  # the same server goes on
        assert again.wait(30) == 3 and "ran" in (tmp_path / "b.log").read_text()
    finally:
        server.close()


def test_a_dead_server_ends_its_run_and_is_replaced(tmp_path, monkeypatch):
    first = _server(monkeypatch)
    run = first.start(["60", "0", "0"], tmp_path / "a.log")
    first.proc.kill()
    assert run.wait(10) == -signal.SIGKILL
    for _ in range(50):  # its run dies with it (PR_SET_PDEATHSIG), not left writing into the run folder
        if not _alive(run.pid):
            break
        time.sleep(0.1)
    assert not _alive(run.pid)
    second = forked.server_for_this_thread()
    assert second is not first and second.start(["0", "0", "0"], tmp_path / "b.log").wait(30) == 0
    forked.stop_servers()


def _server(monkeypatch):
    """This thread's server, started with the test command."""
    forked.stop_servers()
    real = forked.TrainServer.__init__
    monkeypatch.setattr(forked.TrainServer, "__init__", lambda self, command=None: real(self, SERVER))
    return forked.server_for_this_thread()


def test_the_runs_cpu_time_counts_once_the_servers_are_closed(tmp_path, monkeypatch):
    server = _server(monkeypatch)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert server.start(["0", "1.0", "0"], tmp_path / "a.log").wait(60) == 0
    time.sleep(0.1)
    forked.stop_servers()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime >= 0.9


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped yet) is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_ctrl_c_while_a_worker_waits_never_hangs(tmp_path):
    """The study's worker thread waits for its run while the main thread stops it (Ctrl-C): both read the
    server's answers; each gets the run's status, and neither blocks."""
    import threading

    server = forked.TrainServer(SERVER)
    try:
        for i in range(6):
            run = server.start(["60", "0", "0"], tmp_path / f"{i}.log")
            got = []
            worker = threading.Thread(target=lambda: got.append(runner._wait(run)), daemon=True)
            worker.start()
            time.sleep(0.1)
            t0 = time.monotonic()
            runner._stop(run)  # terminate, then wait (killed after 10 s): the status comes at once
            stopped = time.monotonic() - t0
            worker.join(15)
            assert not worker.is_alive() and got == [-signal.SIGTERM] and run.wait(1) == -signal.SIGTERM
            assert stopped < 5, stopped
    finally:
        server.close()


def test_a_new_run_after_one_never_waited_for_starts_cleanly(tmp_path):
    server = forked.TrainServer(SERVER)
    try:
        first = server.start(["60", "0", "0"], tmp_path / "a.log")
        second = server.start(["0", "0", "4"], tmp_path / "b.log")  # the first is killed and its answer read
        assert first.wait(1) == -signal.SIGKILL and second.wait(30) == 4
    finally:
        server.close()
