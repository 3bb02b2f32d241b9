"""Checkpoints: atomic, weights-only, device-portable, and resumable after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision  # noqa: F401 - imported at collection: it sets TORCHINDUCTOR_CACHE_DIR
from click.testing import CliRunner

from softmax.checkpoint import (
    CheckpointError,
    CheckpointLock,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from softmax.cli import cli
from softmax.model import ScratchSoftmax

REPO = Path(__file__).parents[1]


def payload(model: ScratchSoftmax) -> dict:
    return {"format": 2, "epoch": 3, "model": "scratch", "state": model.state_dict(),
            "extra": {}, "history": [], "loader": "tensor", "device_type": "cpu",
            "generator": torch.Generator().manual_seed(0).get_state()}


def test_round_trip(tmp_path: Path) -> None:
    model = ScratchSoftmax(torch.device("cpu"), torch.Generator().manual_seed(4))
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload(model))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
    loaded = model_from_checkpoint(load_checkpoint(path, torch.device("cpu")),
                                   torch.device("cpu"))
    torch.testing.assert_close(loaded.W, model.W)
    torch.testing.assert_close(loaded.b, model.b)


def test_checkpoint_holds_no_code(tmp_path: Path) -> None:
    """A pickle that asks to call a function is refused unread, called unsafe, and torch's
    advice to retry with weights_only=False is not passed on."""
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "model": "scratch", "state": {}, "f": os.getcwd}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, torch.device("cpu"))
    msg = str(err.value)
    assert msg.startswith(f"checkpoint {path} is not a `softmax train` checkpoint and is unsafe")
    assert "getcwd" in msg and "\n" not in msg
    assert "weights_only" not in msg and "likely succeed" not in msg


def test_cuda_tagged_checkpoint_loads_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             fashion_root: str) -> None:
    """A checkpoint written on a GPU tags its storages 'cuda:0'. Write one here by patching the
    tag, show that a plain torch.load fails on a CPU-only machine, and that ours loads it."""
    model = ScratchSoftmax(torch.device("cpu"), torch.Generator().manual_seed(5))
    path = tmp_path / "gpu.pt"
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(path, payload(model))
    assert b"cuda:0" in path.read_bytes()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="deserialize object on a CUDA device"):
            torch.load(path, weights_only=True)
    loaded = load_checkpoint(path, torch.device("cpu"))
    assert loaded["state"]["W"].device.type == "cpu"
    torch.testing.assert_close(loaded["state"]["W"], model.state_dict()["W"])
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["predict", "--checkpoint", str(path), "--device", "cpu",
                                      "--data-root", fashion_root, "-n", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "of 8 wrong on cpu" in result.output and out.read_bytes()[:4] == b"\x89PNG"


def test_predict_with_missing_or_broken_checkpoint(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.pt", tmp_path / "half.pt"):
        if path.name == "half.pt":
            path.write_bytes(b"PK\x03\x04 truncated")
        result = CliRunner().invoke(cli, ["predict", "--checkpoint", str(path),
                                          "--device", "cpu"])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert str(path) in result.output


def test_kill_9_mid_epoch_then_resume(tmp_path: Path, fashion_root: str) -> None:
    """Slow epochs (the book's DataLoader, no workers, small batches) so the kill lands inside
    epoch 2; the checkpoint must still be epoch 1's, whole, and resume must run only 2..3."""
    ck = tmp_path / "ck"
    cmd = [sys.executable, "-m", "softmax", "train", "--device", "cpu", "--data-root",
           fashion_root, "--checkpoint-dir", str(ck), "--loader", "dataloader", "--workers",
           "0", "--batch-size", "128", "--epochs", "3"]
    env = dict(os.environ, SOFTMAX_OFFLINE="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (ck / "last.pt").exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        time.sleep(1.0)  # well inside epoch 2 (an epoch takes several seconds this way)
        assert proc.poll() is None, "the run ended before it could be killed mid-epoch"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(ck / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    result = CliRunner().invoke(cli, ["train", "--device", "cpu", "--data-root", fashion_root,
                                      "--checkpoint-dir", str(ck), "--epochs", "3", "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "after epoch 1" in result.output
    assert "epoch 1/3" not in result.output and "epoch 3/3" in result.output
    final = torch.load(ck / "last.pt", weights_only=True)
    assert final["epoch"] == 3 and [h["epoch"] for h in final["history"]] == [1, 2, 3]


@pytest.mark.requires_cuda
def test_predict_from_a_cuda_model(tmp_path: Path, fashion_root: str) -> None:
    ck = tmp_path / "ck"
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--device", "cuda", "--epochs", "2", "--data-root",
                                 fashion_root, "--checkpoint-dir", str(ck)])
    assert result.exit_code == 0, result.output
    for device in ("cuda", "cpu"):
        out = tmp_path / f"grid-{device}.png"
        result = runner.invoke(cli, ["predict", "--checkpoint", str(ck / "last.pt"), "--device",
                                     device, "--data-root", fashion_root, "-n", "16", "--out",
                                     str(out)])
        assert result.exit_code == 0, result.output
        assert out.is_file()


def test_resume_refuses_a_damaged_or_foreign_checkpoint(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "last.pt").write_bytes(b"PK\x03\x04 half a file")
    result = CliRunner().invoke(cli, ["train", "--device", "cpu", "--resume",
                                      "--checkpoint-dir", str(ck)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot be loaded" in result.output and "delete it to start over" in result.output
    model = ScratchSoftmax(torch.device("cpu"))
    save_checkpoint(ck / "last.pt", payload(model))
    result = CliRunner().invoke(cli, ["train", "--device", "cpu", "--resume", "--model",
                                      "concise", "--checkpoint-dir", str(ck)])
    assert result.exit_code == 1
    assert "holds a 'scratch' model; expected 'concise'" in result.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_or_device_is_refused_not_read(tmp_path: Path) -> None:
    """torch.load on a FIFO blocked forever, holding the checkpoint folder's lock."""
    fifo = tmp_path / "last.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match=r"last.pt is a FIFO \(named pipe\); expected "
                                              r"a regular file"):
        load_checkpoint(fifo, torch.device("cpu"))
    with pytest.raises(CheckpointError, match="is a device; expected a regular file"):
        load_checkpoint(Path(os.devnull), torch.device("cpu"))
    result = CliRunner().invoke(cli, ["train", "--device", "cpu", "--resume",
                                      "--checkpoint-dir", str(tmp_path)])
    assert result.exit_code == 1 and "is a FIFO" in result.output


def test_an_epoch_that_contradicts_the_history_is_damage(tmp_path: Path,
                                                          fashion_root: str) -> None:
    """epoch=999 over a 2-epoch history printed "after epoch 999" and then "after 2 epochs"."""
    ck = tmp_path / "ck"
    ck.mkdir()
    model = ScratchSoftmax(torch.device("cpu"))
    p = payload(model)
    p["history"] = [{"epoch": e, "train_loss": 0.5, "train_acc": 0.8, "test_acc": 0.8,
                     "seconds": 0.1, "train_seconds": 0.1, "samples_per_s": 1e5,
                     "device": "cpu"} for e in (1, 2)]
    p["epoch"] = 999
    save_checkpoint(ck / "last.pt", p)
    result = CliRunner().invoke(cli, ["train", "--device", "cpu", "--resume", "--epochs", "3",
                                      "--data-root", fashion_root, "--checkpoint-dir", str(ck)])
    assert result.exit_code == 1, result.output
    assert "says epoch 999 but its history ends at epoch 2" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content", ["dict-text", "no-keys", "tensor", "wrong-shape",
                                     "unknown-kind"])
def test_foreign_checkpoints_get_one_line_not_a_traceback(tmp_path: Path, content: str) -> None:
    """Files torch.load reads (or refuses with UnpicklingError) that are not our checkpoints:
    predict and resume both name the file and what was expected, and exit 1."""
    ck = tmp_path / "ck"
    path = ck / "last.pt"
    ck.mkdir()
    good = payload(ScratchSoftmax(torch.device("cpu")))
    if content == "dict-text":
        path.write_text("{}\n")  # weights_only unpickler: "Unsupported operand"
        expect = "cannot be loaded"
    elif content == "no-keys":
        torch.save({"weights": torch.zeros(3)}, path)
        expect = "found keys ['weights']; expected a dict with keys epoch, model, state"
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
        expect = "found a Tensor; expected a dict with keys"
    elif content == "wrong-shape":
        save_checkpoint(path, {**good, "state": {"W": torch.zeros(10, 5), "b": torch.zeros(10)}})
        expect = "with {'W': (10, 5), 'b': (10,)}; expected {'W': (10, 784), 'b': (10,)}"
    else:
        save_checkpoint(path, {**good, "model": "mlp"})
        expect = "holds a model of kind 'mlp'; expected one of scratch, concise"
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", "--checkpoint", str(path), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert str(path) in result.output and expect in result.output
    assert len(result.output.strip().splitlines()) == 1
    if content != "unknown-kind":  # resume checks --model first: covered elsewhere
        result = runner.invoke(cli, ["train", "--device", "cpu", "--resume",
                                     "--checkpoint-dir", str(ck)])
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert str(path) in result.output and "Traceback" not in result.output


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_forked_workers_do_not_keep_a_killed_trainers_lock(tmp_path: Path) -> None:
    """A flock belongs to the open file, which forked DataLoader workers share: after
    `kill -9` of the trainer they kept its lock for seconds and the next run was refused
    naming a dead pid. The lock must end with the process that took it."""
    code = (f"import os, sys, time\nsys.path.insert(0, {str(REPO)!r})\n"
            "from softmax.checkpoint import CheckpointLock\n"
            f"CheckpointLock({str(tmp_path)!r}).acquire()\n"
            "if os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)\n"
            "print('locked', flush=True)\ntime.sleep(30)\n")
    trainer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert trainer.stdout is not None and trainer.stdout.readline() == "locked\n"
    worker = [int(p) for p in open(f"/proc/{trainer.pid}/task/{trainer.pid}/children").read()
              .split()] if sys.platform.startswith("linux") else []
    try:
        trainer.kill()
        trainer.wait()
        lock = CheckpointLock(tmp_path).acquire()  # the worker still runs: not refused
        assert lock.took_over is not None and f"pid {trainer.pid}" in lock.took_over
        lock.release()
    finally:
        for pid in worker:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_lock_without_flock_still_refuses_a_live_holder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no fcntl: the lock falls back to the holder's pid (alive: busy)."""
    from softmax.checkpoint import CheckpointLock

    monkeypatch.setitem(sys.modules, "fcntl", None)  # ``import fcntl`` raises ImportError
    with CheckpointLock(tmp_path) as lock:
        assert (tmp_path / lock.path.name).read_text().split()[0] == str(os.getpid())
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / lock.path.name).write_text(f"{holder.pid} elsewhere 2026-01-01T00:00:00\n")
        with pytest.raises(Exception, match=str(holder.pid)):
            CheckpointLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with CheckpointLock(tmp_path) as again:  # a dead holder's lock is taken over
        assert again.took_over is not None
