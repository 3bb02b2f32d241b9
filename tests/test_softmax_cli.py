"""`softmax` under hostile input (issue 9): one-line errors before any work, nothing lost.

Each test names the defect it pins down. The slow ones (a real subprocess) are the ones
where the defect lives at the process boundary: a closed stdout, a file-size limit, a
second trainer on the same folder.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision  # noqa: F401 - imported at collection: it sets TORCHINDUCTOR_CACHE_DIR
from click.testing import CliRunner

from softmax import data
from softmax.checkpoint import (
    LOCK_NAME,
    CheckpointLock,
    CheckpointLockError,
    load_checkpoint,
    save_checkpoint,
)
from softmax.cli import cli
from softmax.config import ConfigError, TrainConfig
from softmax.devices import cpu_count
from softmax.model import ScratchSoftmax
from softmax.plot import page_paths, prediction_pages, supported_formats
from softmax.train import train_ch3

REPO = Path(__file__).parents[1]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.output


def one_line(code: int, output: str, exit_code: int = 1) -> str:
    """The output ends with one `Error:` line: no usage block, no traceback (progress lines
    such as "using Fashion-MNIST from ..." may come before it)."""
    assert code == exit_code, output
    lines = output.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], output
    assert "Traceback" not in output and "Usage:" not in output, output
    return errors[0]


def checkpoint_payload(epoch: object = 2) -> dict:
    model = ScratchSoftmax(torch.device("cpu"), torch.Generator().manual_seed(1))
    return {"format": 2, "epoch": epoch, "model": "scratch", "state": model.state_dict(),
            "extra": {}, "history": [], "loader": "tensor", "device_type": "cpu",
            "generator": torch.Generator().manual_seed(0).get_state()}


# -- (9) loose validation: one line, before any work -----------------------------------------
@pytest.mark.parametrize("args,expect", [
    (["--lr", "nan"], "'nan' is not a finite number"),
    (["--lr", "inf"], "'inf' is not a finite number"),
    (["--lr", "-1"], "-1 is outside (0, 3.40282e+38]"),
    (["--lr", "0"], "0 is outside (0, 3.40282e+38]"),
    (["--lr", "1e300"], "1e+300 is outside (0, 3.40282e+38]"),
    (["--epochs", "0"], "0 is not in the range 1<=x<=1000000"),
    (["--epochs", str(2**70)], "is not in the range 1<=x<=1000000"),
    (["--threads", "100000"], f"--threads 100000: expected 1..{cpu_count()} (the CPUs"),
    (["--batch-size", "0"], "0 is not in the range x>=1"),
])
def test_bad_numbers_are_one_line_usage_errors(tmp_path: Path, args: list[str],
                                                expect: str) -> None:
    line = one_line(*run("train", "--device", "cpu", "--checkpoint-dir", str(tmp_path / "ck"),
                         "--data-root", str(tmp_path / "none"), *args), exit_code=2)
    assert expect in line
    assert "lower the learning rate" not in line
    assert not (tmp_path / "ck").exists()  # rejected before any output was prepared


@pytest.mark.parametrize("field,value,expect", [
    ("lr_schedule", "bogus", "expected one of anneal, constant"),
    ("loader", "tensors", "expected one of tensor, dataloader"),
    ("model", "mlp", "expected one of scratch, concise"),
    ("lr", float("nan"), "expected a finite number > 0"),
    ("lr", -0.1, "expected a finite number > 0"),
    ("lr", 1e39, "expected a finite number > 0 and <= 3.4e38"),
    ("epochs", 0, "expected a whole number in 1..1000000"),
    ("epochs", 2.5, "expected a whole number in 1..1000000"),
    ("epochs", 10**7, "expected a whole number in 1..1000000"),
    ("batch_size", True, "expected a whole number >= 1"),
    ("threads", 0, "expected 1.."),
    ("threads", 10**6, "expected 1.."),
    ("workers", -1, "expected 0.."),
    ("seed", 2**70, "expected a whole number in"),
    ("device", " ", "expected auto, cpu"),
    ("metrics_json", "", "expected a non-empty path"),
])
def test_config_is_checked_on_construction(field: str, value: object, expect: str) -> None:
    """`lr_schedule="bogus"` used to train all but the last epoch; an unknown loader
    silently became the tensor loader."""
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: value})  # type: ignore[arg-type]
    msg = str(err.value)
    assert msg.startswith(f"TrainConfig.{field} = {value!r}: ") and expect in msg
    assert "\n" not in msg


# -- (1) output formats checked before any work ----------------------------------------------
@pytest.mark.parametrize("name,why", [("curves.txt", "cannot write format 'txt'"),
                                      ("curves", "has no suffix"),
                                      ("last.pt", "cannot write format 'pt'")])
def test_plot_format_is_checked_before_training(tmp_path: Path, name: str, why: str) -> None:
    line = one_line(*run("train", "--device", "cpu", "--checkpoint-dir", str(tmp_path / "ck"),
                         "--plot", str(tmp_path / name)), exit_code=2)
    assert f"--plot {tmp_path / name}: " in line and why in line
    for fmt in ("png", "pdf", "svg"):
        assert f".{fmt}" in line and fmt in supported_formats()
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("name,why", [("predictions", "has no suffix"),
                                      ("p.txt", "cannot write format 'txt'")])
def test_predict_out_format_is_checked_first(tmp_path: Path, name: str, why: str) -> None:
    """Checked before the checkpoint: the missing checkpoint here is never reported."""
    out = tmp_path / name
    line = one_line(*run("predict", "--checkpoint", str(tmp_path / "absent.pt"), "--device",
                         "cpu", "--out", str(out)), exit_code=2)
    assert line.startswith(f"Error: --out {out}: ") and why in line and ".png" in line


# -- (4) outputs must differ; one trainer per folder -----------------------------------------
@pytest.mark.parametrize("which", ["checkpoint", "plot", "lock", "default-plot"])
def test_outputs_that_would_overwrite_each_other_are_refused(tmp_path: Path,
                                                             which: str) -> None:
    ck = tmp_path / "ck"
    args = ["train", "--device", "cpu", "--checkpoint-dir", str(ck)]
    if which == "checkpoint":
        args += ["--metrics-json", str(ck / "last.pt")]
    elif which == "plot":
        args += ["--metrics-json", str(tmp_path / "m.png"), "--plot", str(tmp_path / "m.png")]
    elif which == "lock":
        args += ["--metrics-json", str(ck / LOCK_NAME)]
    else:
        args += ["--metrics-json", str(ck / "curves.png")]
    line = one_line(*run(*args), exit_code=2)
    assert "must all differ" in line
    assert not ck.exists()


def test_metrics_json_through_a_symlink_to_the_checkpoint(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "last.pt").write_bytes(b"keep me")
    (tmp_path / "m.json").symlink_to(ck / "last.pt")
    line = one_line(*run("train", "--device", "cpu", "--checkpoint-dir", str(ck),
                         "--metrics-json", str(tmp_path / "m.json")), exit_code=2)
    assert "the checkpoint" in line
    assert (ck / "last.pt").read_bytes() == b"keep me"


def test_a_second_trainer_on_the_same_folder_stops_at_once(tmp_path: Path,
                                                          fashion_root: str) -> None:
    ck = tmp_path / "ck"
    with CheckpointLock(ck) as lock:
        assert lock.path.read_text().split()[0] == str(os.getpid())
        code, out = run("train", "--device", "cpu", "--checkpoint-dir", str(ck),
                        "--data-root", fashion_root)
        assert code == 1 and "Traceback" not in out
        errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and out.strip().endswith(errors[0]), out
        line = errors[0]
        assert f"--checkpoint-dir {ck} is in use by another `softmax train` (pid " \
               f"{os.getpid()} on " in line
        assert "pass another --checkpoint-dir" in line
        with pytest.raises(CheckpointLockError):
            CheckpointLock(ck).acquire()
    assert not (ck / LOCK_NAME).exists()  # released and removed
    CheckpointLock(ck).acquire().release()


def test_a_stale_lock_is_taken_over_and_named(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / LOCK_NAME).write_text(f"{dead.pid} somehost 2026-01-01T00:00:00\n")
    lock = CheckpointLock(ck).acquire()
    try:
        assert lock.took_over is not None
        assert f"pid {dead.pid} on somehost" in lock.took_over
        assert "no longer running" in lock.took_over
        assert lock.path.read_text().split()[0] == str(os.getpid())
    finally:
        lock.release()


# -- (1)(9) checkpoints that are not ours ----------------------------------------------------
@pytest.mark.parametrize("epoch,shown", [("two", "'two'"), (-5, "-5"), (0, "0"),
                                         (True, "True"), (2.0, "2.0")])
def test_resume_refuses_a_bad_epoch(tmp_path: Path, epoch: object, shown: str) -> None:
    ck = tmp_path / "ck"
    save_checkpoint(ck / "last.pt", checkpoint_payload(epoch))
    line = one_line(*run("train", "--device", "cpu", "--resume", "--checkpoint-dir", str(ck)))
    assert f"checkpoint {ck / 'last.pt'} has epoch {shown}; expected a whole number >= 1" \
        in line


def test_resume_refuses_a_checkpoint_without_generator(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    payload = checkpoint_payload()
    del payload["generator"]
    save_checkpoint(ck / "last.pt", payload)
    line = one_line(*run("train", "--device", "cpu", "--resume", "--checkpoint-dir", str(ck)))
    assert "has no 'generator' key; expected the shuffling generator's state" in line


@pytest.mark.parametrize("kind", ["garbage", "plain-pickle", "code"])
def test_foreign_or_hostile_files_never_get_torchs_advice(tmp_path: Path, kind: str) -> None:
    """torch suggests weights_only=False, i.e. running the file's code: never quoted."""
    import pickle

    path = tmp_path / "x.pt"
    if kind == "garbage":
        path.write_bytes(b"hello, not a checkpoint")
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps({"epoch": 1}, protocol=4))
    else:
        torch.save({"epoch": 1, "run": os.system}, path)
    line = one_line(*run("predict", "--checkpoint", str(path), "--device", "cpu"))
    assert "weights_only" not in line and "likely succeed" not in line
    assert str(path) in line
    if kind == "code":
        assert "is not a `softmax train` checkpoint and is unsafe to load" in line
        assert "system" in line
    else:
        assert "cannot be loaded: it is not a complete torch.save file" in line


def test_resume_with_fewer_epochs_than_done_says_so(fashion_root: str, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    code, out = run("train", "--epochs", "2", "--device", "cpu", "--data-root", fashion_root,
                    "--checkpoint-dir", str(ck))
    assert code == 0, out
    before = (ck / "last.pt").read_bytes()
    code, out = run("train", "--epochs", "1", "--resume", "--device", "cpu", "--data-root",
                    fashion_root, "--checkpoint-dir", str(ck))
    assert code == 0, out
    assert f"nothing to train: {ck / 'last.pt'} already holds 2 epoch(s)" in out
    assert "pass --epochs 3 or more" in out
    assert f"checkpoint {ck / 'last.pt'}" in out and "None" not in out
    assert (ck / "last.pt").read_bytes() == before


# -- (5) --resume repeats the uninterrupted run, with either loader --------------------------
@pytest.fixture
def tiny_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A 24/8-image Fashion-MNIST in the torchvision layout (specs swapped to match)."""
    counts = {"train": 24, "t10k": 8}
    specs, root = [], tmp_path / "tiny"
    data.raw_dir(root).mkdir(parents=True)
    for i, spec in enumerate(data.FILES):
        count = counts[spec.name.split("-")[0]]
        gen = torch.Generator().manual_seed(i)
        if spec.magic == data.IMAGE_MAGIC:
            body = torch.randint(0, 256, (count * 784,), dtype=torch.uint8, generator=gen)
            content = struct.pack(">IIII", spec.magic, count, 28, 28) + bytes(body.tolist())
        else:
            body = torch.randint(0, 10, (count,), dtype=torch.uint8, generator=gen)
            content = struct.pack(">II", spec.magic, count) + bytes(body.tolist())
        (data.raw_dir(root) / spec.name).write_bytes(content)
        specs.append(data.IdxSpec(spec.name, hashlib.md5(gzip.compress(content)).hexdigest(),
                                  hashlib.md5(content).hexdigest(), spec.magic, count))
    monkeypatch.setattr(data, "FILES", tuple(specs))
    monkeypatch.setenv("SOFTMAX_OFFLINE", "1")
    return str(root)


@pytest.mark.parametrize("loader,workers", [("dataloader", 0), ("dataloader", 2),
                                            ("tensor", 0)])
def test_resume_after_an_epoch_boundary_is_bitwise_the_same_run(
        tiny_root: str, tmp_path: Path, loader: str, workers: int) -> None:
    """The state a kill at the end of epoch 2 leaves on disk, resumed in a fresh start,
    must give the same parameters as 4 uninterrupted epochs: with the DataLoader this needs
    the sampler's generator state (and the workers' seeds drawn from it) restored."""
    _assert_resume_repeats_the_run(tiny_root, tmp_path, loader, workers, "cpu")


@pytest.mark.requires_cuda
@pytest.mark.parametrize("loader", ["tensor", "dataloader"])
def test_resume_on_cuda_is_bitwise_the_same_run(tiny_root: str, tmp_path: Path,
                                                loader: str) -> None:
    """On CUDA the tensor loader shuffles with a CUDA generator (Philox): its state too."""
    _assert_resume_repeats_the_run(tiny_root, tmp_path, loader, 0, "cuda")


def _assert_resume_repeats_the_run(tiny_root: str, tmp_path: Path, loader: str, workers: int,
                                   device: str) -> None:
    def config(ck: Path, epochs: int, resume: bool = False) -> TrainConfig:
        return TrainConfig(epochs=epochs, lr=0.5, batch_size=5, device=device,
                           data_root=tiny_root, loader=loader, workers=workers,
                           checkpoint_dir=str(ck), resume=resume, seed=3,
                           lr_schedule="constant")

    quiet = {"log": lambda _: None, "progress": False}
    train_ch3(config(tmp_path / "a", 4), **quiet)
    train_ch3(config(tmp_path / "b", 2), **quiet)
    resumed = train_ch3(config(tmp_path / "b", 4, resume=True), **quiet)
    assert resumed.resumed_from_epoch == 3
    a = load_checkpoint(tmp_path / "a" / "last.pt", torch.device("cpu"))
    b = load_checkpoint(tmp_path / "b" / "last.pt", torch.device("cpu"))
    for key in ("W", "b"):
        assert torch.equal(a["state"][key], b["state"][key]), key
    assert torch.equal(a["generator"], b["generator"])
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


# -- (6) predict draws pages, linearly -------------------------------------------------------
def test_many_predictions_are_drawn_as_pages(tmp_path: Path) -> None:
    n = 300
    images = torch.randint(0, 256, (n, 784), dtype=torch.uint8)
    labels = [i % 10 for i in range(n)]
    preds = [(i % 10) if i % 7 else (i + 1) % 10 for i in range(n)]
    paths = prediction_pages(images, labels, preds, [str(i) for i in range(10)],
                             tmp_path / "p.png")
    assert paths == [tmp_path / "p-1.png", tmp_path / "p-2.png", tmp_path / "p-3.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p-1.png", "p-2.png", "p-3.png"]
    from PIL import Image

    sizes = [Image.open(p).size for p in paths]
    assert sizes[0] == sizes[1] and sizes[2][1] < sizes[0][1]  # last page: 44 images
    assert page_paths(tmp_path / "x.png", 1) == [tmp_path / "x.png"]
    assert page_paths(tmp_path / "x.pdf", 12)[0] == tmp_path / "x-01.pdf"


def test_wrong_predictions_are_framed_in_red(tmp_path: Path) -> None:
    """Pixels, not just PNG bytes: the wrong image has a red frame, the right one none."""
    from PIL import Image

    images = torch.zeros(2, 784, dtype=torch.uint8)
    out = prediction_pages(images, [0, 1], [0, 2], [str(i) for i in range(10)],
                           tmp_path / "g.png", cols=2)[0]
    import numpy as np

    pixels = torch.from_numpy(np.asarray(Image.open(out).convert("RGB")).copy())
    red = ((pixels[..., 0] > 200) & (pixels[..., 1] < 50) & (pixels[..., 2] < 50))
    cols_with_red = red.any(dim=0).nonzero().flatten()
    assert len(cols_with_red) > 0
    cell = 28 * 3 + 36
    assert int(cols_with_red.min()) >= cell  # only in the second cell (the wrong one)


# -- (4) full disk / ulimit -f: no temporaries, the file named -------------------------------
def _limited(limit_bytes: int):  # type: ignore[no-untyped-def]
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return preexec


def test_file_size_limit_while_unpacking_leaves_no_temporary(tmp_path: Path) -> None:
    mirror = data.DEBIAN_MIRROR
    if not (mirror / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Requires: Debian's dataset-fashion-mnist package")
    root = tmp_path / "root"
    env = dict(os.environ, SOFTMAX_OFFLINE="1", SOFTMAX_MIRROR=str(mirror))
    proc = subprocess.run([sys.executable, "-m", "softmax", "train", "--device", "cpu",
                           "--data-root", str(root), "--checkpoint-dir", str(tmp_path / "ck")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
                          preexec_fn=_limited(1 << 20))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot write Fashion-MNIST file" in err[0]
    assert "ulimit -f" in err[0] and str(data.raw_dir(root)) in err[0]
    assert not [p for p in data.raw_dir(root).iterdir() if ".tmp" in p.name]


def test_file_size_limit_on_the_checkpoint_names_it(fashion_root: str, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    env = dict(os.environ, SOFTMAX_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "softmax", "train", "--device", "cpu",
                           "--epochs", "1", "--data-root", fashion_root,
                           "--checkpoint-dir", str(ck)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
                          preexec_fn=_limited(16 << 10))  # the checkpoint is ~40 kB
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and f"cannot write checkpoint {ck / 'last.pt'}" in err[0]
    assert sorted(p.name for p in ck.iterdir()) == []  # no temporary, no lock left


# -- (4) a closed stdout is not a --data-root problem ----------------------------------------
def test_closed_stdout_ends_quietly(fashion_root: str, tmp_path: Path) -> None:
    """`softmax train | head -1`: the second line finds the pipe closed."""
    env = dict(os.environ, SOFTMAX_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "softmax", "train", "--device", "cpu",
                             "--epochs", "3", "--data-root", fashion_root,
                             "--checkpoint-dir", str(tmp_path / "ck")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, stderr
    assert first.strip()  # whatever the first line is, the next write finds the pipe closed
    assert stderr == ""
    assert not (tmp_path / "ck" / LOCK_NAME).exists()


@pytest.mark.parametrize("holder_alive", [True, False])
def test_without_flock_the_pid_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       holder_alive: bool) -> None:
    """Where the filesystem has no flock (ENOLCK, some NFS), a live holder still blocks."""
    import errno
    import fcntl

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_flock)
    if holder_alive:
        pid = os.getppid()
    else:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        pid = dead.pid
    (tmp_path / LOCK_NAME).write_text(f"{pid} host 2026-01-01T00:00:00\n")
    if holder_alive:
        with pytest.raises(CheckpointLockError, match=f"in use by another .* \\(pid {pid} "):
            CheckpointLock(tmp_path).acquire()
    else:
        lock = CheckpointLock(tmp_path).acquire()
        assert lock.took_over is not None and "no longer running" in lock.took_over
        lock.release()


# -- a broken or missing torch: one line (the subprocess cases: test_softmax_hostile_env) ----
def test_torch_not_installed_says_install_it() -> None:
    from softmax.startup import torch_import_message as _torch_import_message

    missing = ModuleNotFoundError("No module named 'torch'", name="torch")
    assert _torch_import_message(missing) == (
        f"cannot import torch: it is not installed for {sys.executable}; expected PyTorch in "
        f"this environment. Fix: pip install torch (pick the index for your driver on "
        f"https://pytorch.org/get-started/locally/)")
    broken = ModuleNotFoundError("No module named 'torch._C'", name="torch._C")
    assert _torch_import_message(broken).startswith(
        "cannot import torch (ModuleNotFoundError: No module named 'torch._C'): this torch "
        "installation is broken")


@pytest.mark.parametrize("args", [
    ["train", "--metrics-json", "{tmp}/nope/deeper/m.json"],
    ["train", "--plot", "{tmp}/nope/c.png"],
    ["train", "--book", "--metrics-json", "{tmp}/nope/m.json"],
    ["train", "--book", "--plot", "{tmp}/nope/c.png"],
    ["predict", "--out", "{tmp}/nope/p.png"],
])
def test_a_file_output_in_a_missing_folder_is_refused_not_created(tmp_path: Path,
                                                                  args: list[str]) -> None:
    """A typo in a folder name used to create it silently, and the output sat where nobody
    would look; only --checkpoint-dir is created."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    line = one_line(*run(*args, "--device", "cpu", "--checkpoint-dir", str(tmp_path / "ck"),
                         "--data-root", str(tmp_path / "none")) if args[0] == "train" else
                    run(*args, "--device", "cpu", "--checkpoint", str(tmp_path / "x.pt")))
    assert "its directory" in line and "does not exist; create it first (mkdir -p" in line
    assert not (tmp_path / "nope").exists() and not (tmp_path / "ck").exists()


def test_predict_names_a_device_checkpoint_instead_of_missing(tmp_path: Path) -> None:
    line = one_line(*run("predict", "--device", "cpu", "--checkpoint", os.devnull, "--out",
                         str(tmp_path / "p.png")))
    assert f"checkpoint {os.devnull} is a device; expected a regular file" in line
