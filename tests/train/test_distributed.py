"""Distributed training: the rank batches add up to the single-process ones, and a 2-process gloo run (DDP on
CPU) gives the single-process run's metrics."""

import json
import os
import socket

import numpy as np
import pytest

from bber_utils.train.samplers import BalancedCorpusSampler, RankBatchSampler, ShuffleSampler
from bber_utils.train.dataset import PaddedDataset

TOLERANCE = 1e-6  # metrics of the 2-process run vs the single-process one (dropout 0; see docs/scaling.md)


@pytest.mark.parametrize("n, batch_size, world", [(17, 4, 2), (17, 5, 3), (3, 8, 4), (20, 4, 2)])
@pytest.mark.parametrize("balanced", [False, True])
def test_rank_batches_add_up_to_the_single_process_batches(n, batch_size, world, balanced):
    corpora = ["a" if i % 3 else "b" for i in range(n)]
    order = BalancedCorpusSampler(corpora, seed=5) if balanced else ShuffleSampler(n, seed=5)
    for epoch in (0, 1):
        order.set_epoch(epoch)
        single = [b for b in RankBatchSampler(order, batch_size)]
        per_rank = []
        for r in range(world):
            rb = RankBatchSampler(order, batch_size, rank=r, world_size=world)
            rb.set_epoch(epoch)
            per_rank.append(list(rb))
            assert len(per_rank[-1]) == len(rb) == len(single)  # same number of steps on every rank
        for step, batch in enumerate(single):
            shares = [per_rank[r][step] for r in range(world)]
            assert all(len(s) >= 1 for s in shares)
            real = sorted(i for s in shares for i in s if i >= 0)
            assert real == sorted(batch)
            padding = [i for s in shares for i in s if i < 0]
            assert all(-1 - i in batch for i in padding)
    flat = [i for b in single for i in b]
    assert len(flat) == n


def test_rank_batch_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match="world_size=1"):
        RankBatchSampler(ShuffleSampler(10, rank=0, world_size=2), 4)
    with pytest.raises(ValueError, match="rank"):
        RankBatchSampler(ShuffleSampler(10), 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        RankBatchSampler(ShuffleSampler(10), 0)


def test_padding_items_carry_no_target():
    class DS:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"index": i, "target": np.eye(7, dtype=np.float32)[i], "has_soft": True}

    ds = PaddedDataset(DS())
    assert ds[1]["target"][1] == 1.0
    pad = ds[-2]
    assert pad["index"] == 1 and not pad["target"].any() and pad["has_soft"] is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_stores(tc, manifest):
    from tests.train.common import CLASSES, FakeStore, features_for

    ids = manifest["utt_id"].tolist()
    y = [CLASSES.index(lbl) for lbl in manifest["label"]]
    return (FakeStore(features_for(ids, y, 6, 0, "audio"), 6, "audio"),
            FakeStore(features_for(ids, y, 5, 1, "text"), 5, "text"))


def _worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    """One DDP rank (spawned): the torchrun environment, gloo on 127.0.0.1, then ``train``."""
    import bber_utils.train as T

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    T.inputs.build_feature_stores = _fake_stores
    try:
        res = T.train(cfg)
        with open(f"{out}.{rank}.json", "w") as f:
            json.dump({"metrics": res.metrics["metrics"], "unimodal": res.metrics["unimodal"],
                       "loss": res.history["train_loss"].tolist(), "best_epoch": res.best_epoch,
                       "dist": list(T.dist_info())}, f)
    finally:
        T.destroy_process_group()


def _metric_values(metrics: dict) -> dict:
    return {(c, s, m): v[m] for c, splits in metrics.items() for s, v in splits.items()
            for m in ("uar", "war", "mf1", "wf1")}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["biformer", "predictions_fusion"])
def test_two_gloo_processes_match_a_single_process_run(tmp_path, monkeypatch, model):
    import torch.multiprocessing as mp

    import bber_utils.train as T
    from tests.train.common import TINY, tiny_config, make_workdir

    monkeypatch.setattr(T.inputs, "build_feature_stores", _fake_stores)
    cfg = dict(TINY, dropout=0.0)
    single_wd, ddp_wd = make_workdir(tmp_path / "single"), make_workdir(tmp_path / "ddp")
    kw = dict(model=model, run_name="r", num_threads=1, epochs=3, unimodal_epochs=2, batch_size=5, oof_folds=2,
              **cfg)
    single = T.train(tiny_config(single_wd, **kw))

    out = str(tmp_path / "rank")
    mp.start_processes(_worker, args=(2, _free_port(), tiny_config(ddp_wd, **kw), out), nprocs=2, join=True,
                       start_method="spawn")
    ranks = [json.loads(open(f"{out}.{r}.json").read()) for r in range(2)]
    assert [r.pop("dist") for r in ranks] == [[0, 2], [1, 2]]  # really one process group of two ranks
    assert ranks[0] == ranks[1]  # every rank returns the same result
    ddp = ranks[0]
    assert ddp["best_epoch"] == single.best_epoch
    np.testing.assert_allclose(ddp["loss"], single.history["train_loss"].tolist(), rtol=1e-4)
    a, b = _metric_values(single.metrics["metrics"]), _metric_values(ddp["metrics"])
    assert a.keys() == b.keys()
    assert max(abs(a[k] - b[k]) for k in a) <= TOLERANCE
    for name, per_corpus in single.metrics["unimodal"].items():
        a, b = _metric_values(per_corpus), _metric_values(ddp["unimodal"][name])
        assert max(abs(a[k] - b[k]) for k in a) <= TOLERANCE
    # rank 0 wrote the run folder, with the same metrics
    written = json.loads((ddp_wd.resolve() / "train" / "r" / "metrics.json").read_text())
    assert _metric_values(written["metrics"]) == _metric_values(ddp["metrics"])


def test_mixed_precision_is_off_on_cpu_and_chosen_on_cuda():
    import torch

    import bber_utils.train as T

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)  # a device object needs no GPU
    for amp in T.AMP_MODES:
        assert T.loop.amp_settings(T.TrainConfig(amp=amp), cpu) == (None, False)
    assert T.loop.amp_settings(T.TrainConfig(amp="bf16"), cuda) == (torch.bfloat16, False)
    assert T.loop.amp_settings(T.TrainConfig(amp="fp16"), cuda) == (torch.float16, True)  # fp16 needs a GradScaler
    assert T.loop.amp_settings(T.TrainConfig(amp="off"), cuda) == (None, False)


def test_compile_is_a_control_key():
    import bber_utils.train as T

    assert "compile" not in T.TrainConfig(compile=True).identity()  # same run hash with or without it


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BBER_TEST_COMPILE") != "1",
                    reason="torch.compile on CPU takes minutes here; set BBER_TEST_COMPILE=1 to run it")
def test_compiled_training_runs_on_cpu_and_matches(tmp_path, monkeypatch):
    """``compile=True``: the same losses as eager (passed here in 256 s on a busy 2-core CPU)."""
    import shutil

    import bber_utils.train as T
    from tests.train.common import TINY, tiny_config, make_workdir

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    monkeypatch.setattr(T.inputs, "build_feature_stores", _fake_stores)
    kw = dict(TINY, dropout=0.0, model="audio_only", epochs=1, unimodal_epochs=1, run_name="r", num_threads=1)
    plain = T.train(tiny_config(make_workdir(tmp_path / "plain"), **kw))
    compiled = T.train(tiny_config(make_workdir(tmp_path / "compiled"), compile=True, **kw))
    np.testing.assert_allclose(compiled.history["train_loss"], plain.history["train_loss"], rtol=1e-4)


@pytest.mark.slow
def test_bber_train_under_torchrun(tmp_path):
    """``torchrun --nproc_per_node 2 -m bber_utils.cli train``: a real demo work folder (features extracted by
    rank 0 while rank 1 waits), one metrics.json, the table printed once."""
    import subprocess
    import sys

    from bber_utils.cli import main
    from bber_utils.core.paths import REPO_ROOT

    wd = tmp_path / "wd"
    assert main(["prepare", "demo", "--out", str(wd), "--demo-per-class", "2"]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "bber_utils.cli", "train", "--config", "smoke", f"workdir={wd}",
           "run_name=ddp", "epochs=2", "unimodal_epochs=2", "progress=false"]
    out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("run folder:") == 1  # rank 0 prints
    metrics = json.loads((wd / "train" / "ddp" / "metrics.json").read_text())
    assert metrics["model"] == "biformer" and set(metrics["metrics"]) == {"demo_en", "demo_ru"}
    assert len(list((wd / "features").iterdir())) >= 2
