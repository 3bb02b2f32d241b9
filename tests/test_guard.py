"""The placement guard: one clear error per tensor role, and no value read before epoch end."""

from __future__ import annotations

import warnings

import pytest
import torch

from devcheck.guard import LabelRangeError, NonFiniteLossError, PlacementError, StepGuard

CPU = torch.device("cpu")

# torch sets TORCHINDUCTOR_CACHE_DIR in os.environ the first time it imports torch._dynamo
# (here: meta tensors' error path); trigger that at collection so the suite's leak check does
# not blame the test.
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def batch(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(4, 784, device=device), torch.zeros(4, dtype=torch.long, device=device)


def test_batch_left_on_cpu_names_the_source_and_the_fix() -> None:
    guard = StepGuard("meta", source="the DataLoader")
    X, y = batch("cpu")
    with pytest.raises(PlacementError) as err:
        guard.check_inputs(X, y)
    msg = str(err.value)
    assert msg.startswith("X came from the DataLoader on cpu")
    assert "expected meta" in msg and "X = X.to('meta')" in msg


def test_labels_on_wrong_device() -> None:
    guard = StepGuard("meta", source="the DataLoader")
    X = torch.rand(4, 784, device="meta")
    with pytest.raises(PlacementError, match=r"y \(the labels\) came from the DataLoader on cpu"):
        guard.check_inputs(X, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("X,y,role,seen", [
    (torch.rand(2, 784, dtype=torch.float64), torch.zeros(2, dtype=torch.long), "X (the batch)",
     "float64"),
    (torch.rand(2, 784), torch.zeros(2, dtype=torch.int32), "y (the labels)", "int32"),
])
def test_wrong_dtypes(X: torch.Tensor, y: torch.Tensor, role: str, seen: str) -> None:
    with pytest.raises(PlacementError) as err:
        StepGuard(CPU).check_inputs(X, y)
    assert str(err.value).startswith(f"{role} is on cpu with dtype {seen}; expected cpu")
    assert "Fix:" in str(err.value)


def test_parameter_on_wrong_device_is_named() -> None:
    X, y = batch()
    W = torch.zeros(784, 10, device="meta")
    with pytest.raises(PlacementError, match=r"parameter W is on meta .* expected cpu.*model\.to"):
        StepGuard(CPU).check_inputs(X, y, [("W", W), ("b", torch.zeros(10))])


def test_outputs_and_loss_are_checked() -> None:
    guard = StepGuard(CPU)
    with pytest.raises(PlacementError, match=r"^y_hat \(the model's output\) is on meta"):
        guard.check_outputs(torch.zeros(4, 10, device="meta"), torch.zeros(4))
    with pytest.raises(PlacementError, match=r"^loss is on cpu with dtype float16"):
        guard.check_outputs(torch.zeros(4, 10), torch.zeros(4, dtype=torch.float16))


def test_no_value_is_read_during_the_epoch() -> None:
    """Meta tensors have no values: reading one (.item(), .tolist(), bool()) raises. The guard
    takes 600 steps of them (crossing several flushes) and only fails when the epoch ends,
    where its single read happens."""
    guard = StepGuard("meta", num_classes=10, flush_every=64)
    with pytest.raises(Exception, match="meta"):  # noqa: B017 - torch's own meta error
        with guard.epoch(1):
            for _ in range(600):
                X, y = batch("meta")
                guard.check_inputs(X, y)
                y_hat = torch.zeros(4, 10, device="meta")
                guard.check_outputs(y_hat, torch.zeros(4, device="meta"))
    assert guard.reports[0].steps == 600


@pytest.mark.parametrize("flush_every", [1, 3, 256])
def test_non_finite_loss_names_epoch_and_first_bad_step(flush_every: int) -> None:
    guard = StepGuard(CPU, num_classes=10, flush_every=flush_every)
    with guard.epoch(1):
        for _ in range(5):
            X, y = batch()
            guard.check_inputs(X, y)
            guard.check_outputs(torch.zeros(4, 10), torch.ones(4))
    with pytest.raises(NonFiniteLossError) as err:
        with guard.epoch(2):
            for step in range(1, 8):
                X, y = batch()
                guard.check_inputs(X, y)
                bad = torch.tensor([1.0, float("nan") if step >= 5 else 1.0, 1.0, 1.0])
                guard.check_outputs(torch.zeros(4, 10), bad)
    assert (err.value.epoch, err.value.step) == (2, 5)
    assert "epoch 2, step 5" in str(err.value) and "--lr" in str(err.value)


def test_label_out_of_range() -> None:
    guard = StepGuard(CPU, num_classes=10)
    with pytest.raises(LabelRangeError, match=r"range over \[0, 10\]; expected .* \[0, 9\]"):
        with guard.epoch(1):
            X = torch.rand(3, 784)
            guard.check_inputs(X, torch.tensor([0, 10, 3]))
            guard.check_outputs(torch.zeros(3, 10), torch.ones(3))


def test_sync_counting_is_off_the_cpu() -> None:
    guard = StepGuard(CPU)
    with guard.epoch(1):
        guard.check_outputs(torch.zeros(1, 10), torch.ones(1))
    assert guard.reports[0].syncs is None


@pytest.mark.requires_cuda
def test_sync_counting_on_cuda() -> None:
    guard = StepGuard("cuda", num_classes=10)
    with guard.epoch(1):
        for _ in range(4):
            X, y = batch("cuda")
            guard.check_inputs(X, y)
            loss = X.sum(1)
            guard.check_outputs(torch.zeros(4, 10, device="cuda"), loss)
            float(loss.sum())  # the book's per-batch float(): one host sync per step
    report = guard.reports[0]
    assert report.steps == 4 and report.syncs is not None and report.syncs >= 4
    assert torch.cuda.get_sync_debug_mode() == 0


class FakeSyncDebug:
    """torch.cuda's sync debug switch, faked at the boundary so the counting runs on a CPU."""

    def __init__(self, mode: int) -> None:
        self.mode, self.history = mode, [mode]

    def get(self) -> int:
        return self.mode

    def set(self, mode: int | str) -> None:
        self.mode = mode if isinstance(mode, int) else {"default": 0, "warn": 1, "error": 2}[mode]
        self.history.append(self.mode)


@pytest.mark.parametrize("previous", [0, 2])
def test_sync_counting_counts_restores_and_hands_back_other_warnings(
        monkeypatch: pytest.MonkeyPatch, previous: int) -> None:
    """What torch does in 'warn' mode: TORCH_WARN("called a synchronizing CUDA operation") per
    sync, surfaced as a Python UserWarning. The guard must count exactly those, re-emit any
    other warning, and put the caller's mode back, also when the epoch fails."""
    fake = FakeSyncDebug(previous)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", fake.get)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", fake.set)
    guard = StepGuard(CPU)
    guard.count_syncs = True  # as on a CUDA device
    with pytest.warns(DeprecationWarning, match="someone else's"):
        with guard.epoch(1):
            assert fake.mode == 1
            for _ in range(3):
                guard.check_outputs(torch.zeros(1, 10), torch.ones(1))
                warnings.warn("called a synchronizing CUDA operation", UserWarning,
                              stacklevel=1)
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
            warnings.warn("someone else's", DeprecationWarning, stacklevel=1)
    assert guard.reports[0].syncs == 4 and guard.reports[0].syncs_per_step == pytest.approx(4 / 3)
    assert fake.mode == previous
    with pytest.raises(PlacementError):
        with guard.epoch(2):
            guard.check_outputs(torch.zeros(1, 10, dtype=torch.float64), torch.ones(1))
    assert fake.mode == previous and fake.history[-2:] == [1, previous]
