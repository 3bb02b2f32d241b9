"""`softmax train` end to end: accuracy, outputs, plots, and every bad input's one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision  # noqa: F401 - imported at collection: it sets TORCHINDUCTOR_CACHE_DIR
from click.testing import CliRunner

from softmax import devices
from softmax import train as train_mod
from softmax.cli import cli

torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # same reason, for optimizers


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def assert_one_clean_line(code: int, output: str) -> str:
    assert code == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("model", ["scratch", "concise"])
def test_ten_epochs_on_cpu_reach_book_accuracy(fashion_root: str, tmp_path: Path,
                                               model: str) -> None:
    metrics = tmp_path / "m.json"
    code, out = run("train", "--epochs", "10", "--device", "cpu", "--model", model,
                    "--data-root", fashion_root, "--checkpoint-dir", str(tmp_path / "ck"),
                    "--metrics-json", str(metrics))
    assert code == 0, out
    payload = json.loads(metrics.read_text())
    epochs = payload["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, 11))
    assert epochs[-1]["test_acc"] >= 0.83
    assert epochs[-1]["train_loss"] < 0.5
    assert payload["device"] == "cpu" and payload["settings"]["lr"] == 0.1
    assert payload["settings"]["batch_size"] == 256 and payload["settings"]["model"] == model
    for e in epochs:
        assert {"epoch", "train_loss", "train_acc", "test_acc", "seconds"} <= set(e)
        assert e["seconds"] > 0 and e["samples_per_s"] > 0
    assert "epoch 10/10" in out and "samples/s" in out and "test acc" in out


def test_headless_run_writes_plot_each_epoch_and_prints_path(fashion_root: str,
                                                            tmp_path: Path) -> None:
    plot = tmp_path / "curves.png"
    code, out = run("train", "--epochs", "2", "--device", "cpu", "--data-root", fashion_root,
                    "--checkpoint-dir", str(tmp_path / "ck"), "--plot", str(plot))
    assert code == 0, out
    assert out.count(f"curves: {plot}") == 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dataloader_pipeline_and_no_guard(fashion_root: str, tmp_path: Path) -> None:
    code, out = run("train", "--epochs", "1", "--device", "cpu", "--data-root", fashion_root,
                    "--loader", "dataloader", "--workers", "0", "--no-guard",
                    "--checkpoint-dir", str(tmp_path / "ck"))
    assert code == 0, out
    assert "epoch 1/1" in out


def test_cuda_without_cuda_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    line = assert_one_clean_line(*run("train", "--device", "cuda"))
    assert "--device cuda: CUDA is not usable here:" in line and "--device cpu" in line
    assert len(line) > len("Error: --device cuda: CUDA is not usable here: . ")


def test_cuda_reason_is_the_doctors(monkeypatch: pytest.MonkeyPatch) -> None:
    """softmax never words a reason of its own: whatever the doctor says is what it says."""
    import devcheck.checkup
    from devcheck.facts import DeviceAvailability

    fake = DeviceAvailability(cuda_reason="no NVIDIA driver (fake doctor)", mps_reason="nope")
    monkeypatch.setattr(devcheck.checkup, "device_availability", lambda **kw: fake)
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    assert train_mod.cuda_reason() == "no NVIDIA driver (fake doctor)"
    line = assert_one_clean_line(*run("train", "--device", "cuda:0"))
    assert "CUDA is not usable here: no NVIDIA driver (fake doctor). Use --device cpu" in line


def test_mps_without_mps_says_why_in_doctors_words(monkeypatch: pytest.MonkeyPatch) -> None:
    from devcheck.checkup import device_availability

    monkeypatch.setattr(devices, "mps_available", lambda: False)
    expected = device_availability(live=False).mps_reason
    line = assert_one_clean_line(*run("train", "--device", "mps"))
    assert "--device mps: MPS is not usable here:" in line and "--device cpu" in line
    assert expected and expected in line


def test_cuda_index_beyond_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    line = assert_one_clean_line(*run("train", "--device", "cuda:7"))
    assert "1 visible CUDA device(s) (cuda:0..cuda:0)" in line and "--device cuda:0" in line


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "meta"])
def test_unknown_device(spec: str) -> None:
    line = assert_one_clean_line(*run("train", "--device", spec))
    assert spec in line and "expected auto, cpu, cuda, cuda:N or mps" in line


def test_resolve_device() -> None:
    assert devices.resolve_device("CPU") == torch.device("cpu")
    assert devices.resolve_device("auto").type in {"cpu", "cuda", "mps"}


def test_missing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTMAX_MIRROR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("SOFTMAX_OFFLINE", "1")
    line = assert_one_clean_line(*run("train", "--device", "cpu", "--data-root",
                                      str(tmp_path / "d"), "--checkpoint-dir", str(tmp_path)))
    assert "Fashion-MNIST not found" in line and "--data-root" in line


def test_corrupt_data(tmp_path: Path, fashion_root: str) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (Path(fashion_root) / "FashionMNIST" / "raw").iterdir():
        if not f.name.startswith(".") and not f.name.endswith(".gz"):
            (raw / f.name).symlink_to(f)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(
        (Path(fashion_root) / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()[:500])
    line = assert_one_clean_line(*run("train", "--device", "cpu", "--data-root", str(tmp_path),
                                      "--checkpoint-dir", str(tmp_path / "ck")))
    assert "t10k-labels-idx1-ubyte" in line and "10008 bytes" in line and "truncated" in line


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(fashion_root: str,
                                                              tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    code, out = run("train", "--epochs", "1", "--device", "cpu", "--data-root", fashion_root,
                    "--checkpoint-dir", str(ck))
    assert code == 0, out
    before = (ck / "last.pt").read_bytes()
    line = assert_one_clean_line(*run(
        "train", "--epochs", "3", "--lr", "1e38", "--resume", "--device", "cpu",
        "--data-root", fashion_root, "--checkpoint-dir", str(ck)))
    assert "non-finite" in line and "at epoch 2, step " in line
    assert f"last good checkpoint is kept: {ck / 'last.pt'}" in line
    assert (ck / "last.pt").read_bytes() == before
    payload = torch.load(ck / "last.pt", weights_only=True)
    assert payload["epoch"] == 1


def test_non_finite_loss_without_guard_names_the_epoch(fashion_root: str,
                                                       tmp_path: Path) -> None:
    line = assert_one_clean_line(*run(
        "train", "--epochs", "2", "--lr", "1e38", "--no-guard", "--device", "cpu",
        "--data-root", fashion_root, "--checkpoint-dir", str(tmp_path / "ck")))
    assert "non-finite" in line and "in epoch 1" in line
    assert not (tmp_path / "ck" / "last.pt").exists()


@pytest.mark.requires_cuda
def test_ten_epochs_on_cuda(fashion_root: str, tmp_path: Path) -> None:
    metrics = tmp_path / "m.json"
    code, out = run("train", "--epochs", "10", "--device", "cuda", "--data-root", fashion_root,
                    "--checkpoint-dir", str(tmp_path / "ck"), "--metrics-json", str(metrics))
    assert code == 0, out
    payload = json.loads(metrics.read_text())
    assert payload["device"].startswith("cuda:")
    last = payload["epochs"][-1]
    assert last["test_acc"] >= 0.83 and last["peak_memory_bytes"] > 0
    # the only sync inside the training epoch is the one read of its sums (1 of ~235 steps)
    assert last["syncs_per_step"] is not None and last["syncs_per_step"] < 0.01
    assert "peak mem" in out and "syncs/step" in out


@pytest.mark.parametrize("option", ["--checkpoint-dir", "--metrics-json", "--plot", "--out"])
def test_unwritable_outputs_fail_before_training(tmp_path: Path, option: str) -> None:
    """A path below a regular file can never be created: one line naming the option, the
    path and the fix, before any data is loaded or any epoch is run."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = str(blocker / "sub" / ("ck" if option == "--checkpoint-dir" else "x.png"))
    data = str(tmp_path / "no-data")  # never reached: the check comes first
    if option == "--out":
        args = ["predict", "--checkpoint", str(tmp_path / "none.pt"), "--device", "cpu",
                "--data-root", data, option, bad]
    else:
        args = ["train", "--device", "cpu", "--data-root", data, option, bad]
        if option != "--checkpoint-dir":
            args += ["--checkpoint-dir", str(tmp_path / "ck")]
    line = assert_one_clean_line(*run(*args))
    if option == "--checkpoint-dir":
        assert line.startswith(f"Error: {option} {bad}: cannot write in ")
        assert f"Fix: pass another {option}" in line
    else:  # a file option: devcheck.fileio.check_writable's words
        assert line == (f"Error: cannot write {option} {bad}: {blocker} is a file, not a "
                        f"folder; choose another path for the {option}")
    assert not (tmp_path / "no-data").exists()


def test_os_errors_mid_run_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "ck" / "last.pt"))

    monkeypatch.setattr(train_mod, "train_ch3", full_disk)
    line = assert_one_clean_line(*run("train", "--device", "cpu", "--checkpoint-dir",
                                      str(tmp_path / "ck")))
    assert "last.pt: the disk is full (No space left on device); expected a path" in line
    assert "Fix: check --data-root, --checkpoint-dir" in line


def test_accumulator_reads_once_on_any_device(device: str) -> None:
    """Sums stay on the device (float64 where it exists; MPS has none) until totals()."""
    acc = train_mod.Accumulator()
    for _ in range(3):
        logits = torch.tensor([[2.0, 1.0], [0.0, 3.0]], device=device)
        acc.add(logits, torch.tensor([0, 0], device=device),
                torch.tensor([0.25, 0.5], device=device))
    assert acc.totals() == (2.25, 3.0, 6)
