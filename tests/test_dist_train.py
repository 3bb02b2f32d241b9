"""The reference trainer under torchrun, for real (2 gloo ranks), and its pieces on 2 ranks.

The end-to-end test runs ``python -m torch.distributed.run --standalone --nproc-per-node 2
-m softmax train`` on the real Fashion-MNIST for 2 epochs (the 10-epoch comparison is in
benchmarks/bench_dist.py), then resumes from its checkpoint with one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from devcheck.dist.spawn import run_ranks
from softmax import distributed
from softmax.model import ScratchSoftmax

ROOT = Path(__file__).resolve().parents[1]


def _softmax(args: list[str], *, ranks: int = 1, timeout: float = 400,
             ) -> subprocess.CompletedProcess[str]:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                str(ranks)] if ranks > 1 else []
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "LOCAL_RANK")}
    return subprocess.run([sys.executable, *launcher, "-m", "softmax", "train",
                           "--device", "cpu", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**env, "MPLBACKEND": "Agg"})


def test_torchrun_two_ranks_match_one_process_then_resume_with_one(
        tmp_path: Path, fashion_root: str) -> None:
    common = ["--epochs", "2", "--data-root", fashion_root]
    one = _softmax([*common, "--checkpoint-dir", str(tmp_path / "one"),
                    "--metrics-json", str(tmp_path / "one.json")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _softmax([*common, "--checkpoint-dir", str(tmp_path / "two"),
                    "--metrics-json", str(tmp_path / "two.json")], ranks=2)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    # rank 0 alone prints: each epoch line and the final line once
    for line in ("epoch 1/2", "epoch 2/2", "final: test acc"):
        assert two.stdout.count(line) == 1, two.stdout
    acc1 = json.loads((tmp_path / "one.json").read_text())["epochs"][-1]["test_acc"]
    metrics = json.loads((tmp_path / "two.json").read_text())
    acc2 = metrics["epochs"][-1]["test_acc"]
    assert abs(acc2 - acc1) <= 0.005, (acc1, acc2)  # same global batch, same algorithm
    assert metrics["epochs"][-1]["device"] == "cpu x2 (gloo)"
    files = sorted(p.name for p in (tmp_path / "two").iterdir() if p.suffix == ".pt")
    assert files == ["last.pt"]  # one checkpoint, written by rank 0, no temporaries left
    again = _softmax(["--epochs", "3", "--resume", "--data-root", fashion_root,
                      "--checkpoint-dir", str(tmp_path / "two")])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "after epoch 2" in again.stdout and "epoch 3/3" in again.stdout


def _tagged(tag: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if f"DEVCHECK_TEST_TAG={tag}".encode() in f.read().split(b"\0"):
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_ranks_end_when_torchrun_is_killed(tmp_path: Path, fashion_root: str) -> None:
    """SIGKILL of torchrun's agent (the OOM killer, `kill -9`) runs no clean-up: the ranks
    must end with it instead of training on under init."""
    import signal
    import time
    import uuid

    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "LOCAL_RANK")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", "-m", "softmax", "train", "--device", "cpu", "--epochs", "200", "--data-root",
         fashion_root, "--checkpoint-dir", str(tmp_path / "ck")], cwd=ROOT,
        env={**env, "MPLBACKEND": "Agg", "DEVCHECK_TEST_TAG": tag},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # rank 0's first epoch: both ranks are training
            if "epoch 1/200" in line:
                break
        ranks = [p for p in _tagged(tag) if p != proc.pid]
        assert len(ranks) >= 2, ranks
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while _tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _tagged(tag) == []
    finally:
        for pid in _tagged(tag):
            os.kill(pid, signal.SIGKILL)


def test_batch_must_split_over_ranks() -> None:
    ctx = distributed.DistContext(1, 2, 1, "gloo", torch.device("cpu"), False)
    assert distributed.local_batch(ctx, 256) == 128
    with pytest.raises(distributed.DistributedError, match="--batch-size 255 is the global "
                       "batch and does not split over 2 ranks.*pass --batch-size 254"):
        distributed.local_batch(ctx, 255)


def test_not_launched_means_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    with distributed.session("cpu") as ctx:
        assert ctx is None
    assert distributed.is_main_process()


# ---------------------------------------------------------------- on 2 real gloo ranks


def _ctx(rank: int, world: int) -> distributed.DistContext:
    return distributed.DistContext(rank, world, rank, "gloo", torch.device("cpu"), False)


def _models_with_seeds(rank: int, world: int, seeds: tuple[int, int]) -> str:
    model = ScratchSoftmax(torch.device("cpu"), torch.Generator().manual_seed(seeds[rank]))
    try:
        distributed.wrap_model(_ctx(rank, world), model)
    except distributed.DistributedError as exc:
        return str(exc)
    return "ok"


def test_start_up_check_names_the_odd_rank() -> None:
    out = run_ranks(_models_with_seeds, 2, args=((0, 1),), timeout_s=60)
    assert all(o.ok for o in out), [o.error_text for o in out]
    assert out[0].value.startswith("ranks disagree on the model at start-up: rank 1 has "
                                   "7850 parameters")
    same = run_ranks(_models_with_seeds, 2, args=((3, 3),), timeout_s=60)
    assert [o.value for o in same] == ["ok", "ok"]


def _step(rank: int, world: int) -> list[float]:
    g = torch.Generator().manual_seed(42)
    X, y = torch.rand(8, 784, generator=g), torch.randint(0, 10, (8,), generator=g)
    model = distributed.wrap_model(_ctx(rank, world), ScratchSoftmax(
        torch.device("cpu"), torch.Generator().manual_seed(0)))
    half = slice(rank * 4, rank * 4 + 4)  # each rank half of the global batch of 8
    model.train_step(X[half], y[half], 0.5)
    return model.state_dict()["W"].flatten().tolist()[:50] + model.b.tolist()


def test_data_parallel_step_equals_the_single_process_step() -> None:
    """Oracle: 2 ranks x 4 examples, gradients averaged == 1 process x 8 examples."""
    out = run_ranks(_step, 2, timeout_s=60)
    assert all(o.ok for o in out), [o.error_text for o in out]
    g = torch.Generator().manual_seed(42)
    X, y = torch.rand(8, 784, generator=g), torch.randint(0, 10, (8,), generator=g)
    single = ScratchSoftmax(torch.device("cpu"), torch.Generator().manual_seed(0))
    single.train_step(X, y, 0.5)
    want = single.state_dict()["W"].flatten().tolist()[:50] + single.b.tolist()
    for o in out:
        assert o.value == pytest.approx(want, abs=1e-6)


def _orders(rank: int, world: int) -> list[list[int]]:
    from torch.utils.data import DataLoader, DistributedSampler

    data: Any = list(range(12))
    sampler: DistributedSampler[Any] = DistributedSampler(
        data, num_replicas=world, rank=rank, shuffle=True, seed=5, drop_last=True)
    loader = distributed.RankLoader(DataLoader(data, 2, sampler=sampler), _ctx(rank, world),
                                    seed=5, start_epoch=1, sampler=sampler)
    return [[int(i) for b in loader for i in b] for _ in range(3)]


def test_rank_loader_calls_set_epoch_and_ranks_partition_the_data() -> None:
    out = run_ranks(_orders, 2, timeout_s=60, init=False)
    epochs = [o.value for o in out]
    for e in range(3):
        assert sorted(epochs[0][e] + epochs[1][e]) == list(range(12))
    assert epochs[0][0] != epochs[0][1] != epochs[0][2]  # a new order every epoch


def test_rank_prefix_only_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.rank_prefix() == ""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert distributed.rank_prefix() == "[rank 1 of 2] "
    assert not distributed.is_main_process()


@pytest.mark.requires_cuda
def test_torchrun_on_cuda_uses_nccl_one_rank_per_gpu(tmp_path: Path, fashion_root: str
                                                     ) -> None:
    n = torch.cuda.device_count()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "LOCAL_RANK")}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         str(n), "-m", "softmax", "train", "--device", "cuda", "--epochs", "2",
         "--data-root", fashion_root, "--checkpoint-dir", str(tmp_path / "ck"),
         "--metrics-json", str(tmp_path / "m.json")],
        capture_output=True, text=True, timeout=400, cwd=ROOT, env={**env, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    last = json.loads((tmp_path / "m.json").read_text())["epochs"][-1]
    assert last["device"] == f"cuda:0 x{n} (nccl)" and last["test_acc"] > 0.78
