"""softmax.book: the book's chapter 3.6 code, device-correct, checked against the fast path
and against the book's own (host-syncing) definitions."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils import data

from devcheck.guard import NonFiniteLossError, PlacementError, StepGuard
from softmax import book, book_run
from softmax.model import ScratchSoftmax


def book_cross_entropy(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.log(y_hat[range(len(y_hat)), y])  # the book's, with a Python range


def tiny_loaders(n: int = 96, batch: int = 32, seed: int = 0,
                 ) -> tuple[data.DataLoader, data.DataLoader]:
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, 28, 28, generator=g)
    y = (X.reshape(n, -1) @ torch.randn(784, 10, generator=g)).argmax(1)  # learnable labels
    ds = data.TensorDataset(X, y)
    return (data.DataLoader(ds, batch, shuffle=True, generator=torch.Generator().manual_seed(1)),
            data.DataLoader(ds, batch))


def test_init_params_shapes_and_device() -> None:
    W, b = book.init_params(torch.device("cpu"), torch.Generator().manual_seed(0))
    assert W.shape == (784, 10) and b.shape == (10,)
    assert W.requires_grad and b.requires_grad and W.is_leaf and b.is_leaf
    assert float(b.detach().abs().sum()) == 0.0 and 0.005 < float(W.detach().std()) < 0.015


def test_init_params_follow_device_not_the_default_device() -> None:
    """device= is explicit: a global default device (meta here) changes nothing."""
    torch.set_default_device("meta")
    try:
        W, b = book.init_params(torch.device("cpu"))
    finally:
        torch.set_default_device(None)
    assert W.device.type == "cpu" and b.device.type == "cpu"


def test_one_step_matches_the_fast_paths_hand_written_gradient() -> None:
    """Oracle: autograd's backward() + sgd in the book's layout equals the fast path's
    hand-written gradient in its transposed layout, on the same weights and batch."""
    torch.manual_seed(0)
    X, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    W, b = book.init_params(torch.device("cpu"))
    fast = ScratchSoftmax(torch.device("cpu"))
    fast.load_state_dict({"W": W.detach().T.clone(), "b": b.detach().clone()})
    net = book.make_net(W, b)
    loss = book.cross_entropy(net(X), y)
    loss.sum().backward()
    book.sgd([W, b], 0.1, len(y))
    _, fast_loss = fast.train_step(X.reshape(64, -1), y, 0.1)
    torch.testing.assert_close(loss.detach(), fast_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(W.detach(), fast.W, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.detach(), fast.b, rtol=1e-5, atol=1e-7)
    assert float(W.grad.abs().sum()) == 0.0  # the book's sgd zeroes the gradients


def test_cross_entropy_and_accuracy_equal_the_books() -> None:
    torch.manual_seed(1)
    y_hat = book.softmax(torch.randn(50, 10))
    y = torch.randint(0, 10, (50,))
    torch.testing.assert_close(book.cross_entropy(y_hat, y), book_cross_entropy(y_hat, y))
    correct = book.accuracy(y_hat, y)
    assert isinstance(correct, torch.Tensor) and correct.device == y.device  # no float()
    assert int(correct) == int((y_hat.argmax(1) == y).sum())


def test_accumulator_adds_on_the_device_and_reads_once(monkeypatch: pytest.MonkeyPatch,
                                                       ) -> None:
    metric = book.Accumulator(3, "cpu")
    metric.add(torch.tensor(2.5), torch.tensor(3), 4)
    metric.add(1.5, torch.tensor(1), 4)
    reads = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(1) or original(t))
    assert (metric[0], metric[1], metric[2]) == (4.0, 4.0, 8.0)
    assert len(reads) == 1  # three numbers, one host read
    metric.add(1, 1, 1)
    assert metric[2] == 9.0 and len(reads) == 2  # a new add invalidates the cached read
    with pytest.raises(ValueError, match="got 2 values; expected 3"):
        metric.add(1, 2)


def test_dataloader_workers_never_exceed_the_usable_cpus(monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    """One usable CPU: one worker, and torch (which checks the same affinity mask) stays
    quiet; the book's fixed 4 makes it warn."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert book.get_dataloader_workers() == 1
    ds = data.TensorDataset(torch.zeros(4, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data.DataLoader(ds, 2, num_workers=book.get_dataloader_workers()).check_worker_number_rationality()  # noqa: E501
        ours = [str(w.message) for w in caught]
        data.DataLoader(ds, 2, num_workers=4).check_worker_number_rationality()
        theirs = [str(w.message) for w in caught][len(ours):]
    assert not any("worker processes in total" in m for m in ours)
    assert any("worker processes in total" in m for m in theirs)  # the check is real


def test_train_ch3_learns_and_reports_each_epoch() -> None:
    train_iter, test_iter = tiny_loaders()
    W, b = book.init_params(torch.device("cpu"), torch.Generator().manual_seed(0))
    seen: list[book.BookEpoch] = []
    history = book.train_ch3(book.make_net(W, b), train_iter, test_iter, book.cross_entropy, 3,
                             lambda n: book.sgd([W, b], 0.03, n), torch.device("cpu"),
                             guard=StepGuard("cpu", num_classes=10),
                             params=[("W", W), ("b", b)], on_epoch=seen.append,
                             progress=False)
    assert seen == history and [m.epoch for m in history] == [1, 2, 3]
    assert history[-1].train_loss < history[0].train_loss  # it learns
    assert all(0.0 <= m.test_acc <= 1.0 and m.seconds > 0 for m in history)


def test_guard_names_a_batch_left_on_the_wrong_dtype() -> None:
    """float64 images already in [0, 1]: the fix converts, it does not divide by 255."""
    X = torch.rand(32, 1, 28, 28, dtype=torch.float64)
    loader = data.DataLoader(data.TensorDataset(X, torch.zeros(32, dtype=torch.int64)), 16)
    W, b = book.init_params(torch.device("cpu"))
    with pytest.raises(PlacementError, match="dtype float64") as info:
        book.train_epoch_ch3(book.make_net(W, b), loader, book.cross_entropy,
                             lambda n: book.sgd([W, b], 0.03, n), torch.device("cpu"),
                             StepGuard("cpu"), [("W", W), ("b", b)])
    assert "/ 255" not in str(info.value) and "torch.float32)" in str(info.value)


def test_nan_loss_stops_the_run_naming_the_step() -> None:
    """The book's naive softmax overflows at a huge learning rate: the guard says where."""
    train_iter, test_iter = tiny_loaders()
    W, b = book.init_params(torch.device("cpu"))
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+"):
        book.train_ch3(book.make_net(W, b), train_iter, test_iter, book.cross_entropy, 5,
                       lambda n: book.sgd([W, b], 1e6, n), torch.device("cpu"),
                       guard=StepGuard("cpu", num_classes=10), params=[("W", W), ("b", b)],
                       progress=False)


def test_nan_loss_without_the_guard_names_the_epoch() -> None:
    train_iter, test_iter = tiny_loaders()
    W, b = book.init_params(torch.device("cpu"))
    with pytest.raises(NonFiniteLossError, match="non-finite .* in epoch 1; expected"):
        book.train_ch3(book.make_net(W, b), train_iter, test_iter, book.cross_entropy, 3,
                       lambda n: book.sgd([W, b], 1e6, n), torch.device("cpu"), progress=False)


@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", 0), ("workers", -1),
                                         ("lr", float("nan")), ("lr", 0.0), ("lr", -1.0)])
def test_config_rejects_bad_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"BookConfig.{field}="):
        book_run.BookConfig(**{field: value})  # type: ignore[arg-type]


def test_progress_bar_is_plain_without_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from tqdm import tqdm as plain

    real_import = builtins.__import__

    def no_ipywidgets(name: str, *args: object, **kwargs: object) -> object:
        if name == "ipywidgets":
            raise ImportError("no ipywidgets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ipywidgets)
    assert book.progress_bar_class() is plain


def test_run_book_one_epoch_on_real_data(fashion_root: str, tmp_path: Path) -> None:
    """The whole command path on the real data: log lines, checkpoint `softmax predict`
    reads, metrics JSON. One epoch of the book's DataLoader loop (~10 s here)."""
    from softmax.checkpoint import load_checkpoint, model_from_checkpoint

    lines: list[str] = []
    config = book_run.BookConfig(epochs=1, device="cpu", data_root=fashion_root,
                             checkpoint_dir=str(tmp_path / "run"),
                             metrics_json=str(tmp_path / "m.json"))
    result = book_run.run_book(config, log=lines.append, progress=False)
    assert lines[0] == f"using Fashion-MNIST from {Path(fashion_root) / 'FashionMNIST' / 'raw'}"
    assert lines[1].startswith("the book's code path (ch. 3.6) on cpu: autograd, DataLoader")
    assert lines[2].startswith("epoch 1/1  train loss ")
    assert result.epochs[0].test_acc > 0.7
    payload = load_checkpoint(Path(result.checkpoint or ""), torch.device("cpu"))
    model = model_from_checkpoint(payload, torch.device("cpu"))
    assert payload["book"] is True and tuple(model.W.shape) == (784, 10)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["book"] is True and math.isclose(metrics["epochs"][0]["test_acc"],
                                                    result.epochs[0].test_acc)


@pytest.mark.requires_cuda
def test_run_book_on_cuda_has_no_host_sync_per_step(fashion_root: str, tmp_path: Path) -> None:
    config = book_run.BookConfig(epochs=1, device="cuda", data_root=fashion_root,
                             checkpoint_dir=None)
    result = book_run.run_book(config, log=lambda _: None, progress=False)
    assert result.device.startswith("cuda") and result.epochs[0].test_acc > 0.7
    assert result.epochs[0].syncs_per_step is not None
    assert result.epochs[0].syncs_per_step < 0.05  # the book's float() per batch: >= 2


# -- the command line: softmax train --book -------------------------------------------------
@pytest.mark.parametrize("args,flag", [(["--model", "concise"], "--model concise"),
                                       (["--resume"], "--resume"),
                                       (["--loader", "tensor"], "--loader tensor"),
                                       (["--lr-schedule", "anneal"], "--lr-schedule anneal")])
def test_book_refuses_options_it_would_ignore(args: list[str], flag: str) -> None:
    from click.testing import CliRunner

    from softmax.cli import cli

    result = CliRunner().invoke(cli, ["train", "--book", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{flag} cannot be combined with --book" in lines[0]


def test_book_flag_runs_the_book_path_with_the_validated_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from softmax.cli import cli

    seen: list[book_run.BookConfig] = []

    def fake_run_book(config: book_run.BookConfig, *, on_epoch: object, log: object,
                      **_: object) -> book_run.BookResult:
        seen.append(config)
        m = book.BookEpoch(1, 0.5, 0.8, 0.79, 1.0, 0.9, 60000 / 0.9, "cpu")
        on_epoch(m)  # type: ignore[operator]
        return book_run.BookResult("cpu", config, [m], 2, str(tmp_path / "last.pt"))

    monkeypatch.setattr(book_run, "run_book", fake_run_book)
    result = CliRunner().invoke(cli, [
        "train", "--book", "--epochs", "1", "--device", "cpu", "--loader", "dataloader",
        "--lr-schedule", "constant", "--checkpoint-dir", str(tmp_path), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert seen and seen[0].epochs == 1 and seen[0].workers == 0 and seen[0].lr == 0.1
    assert f"curves: {tmp_path / 'curves.png'}" in result.output
    assert "after 1 epoch on cpu (the book's code path)" in result.output  # singular
    assert (tmp_path / "curves.png").is_file()


def test_fast_path_says_where_the_data_came_from_and_counts_epochs(
        fashion_root: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from softmax.cli import cli, epochs_text

    assert (epochs_text(1), epochs_text(2)) == ("1 epoch", "2 epochs")
    result = CliRunner().invoke(cli, ["train", "--epochs", "1", "--device", "cpu",
                                      "--data-root", fashion_root,
                                      "--checkpoint-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("using Fashion-MNIST from ")
    assert sum(ln.startswith("using Fashion-MNIST") for ln in lines) == 1  # said once
    assert "after 1 epoch on cpu" in result.output and "1 epochs" not in result.output
