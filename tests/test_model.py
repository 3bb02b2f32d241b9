"""The from-scratch maths against torch's own: stability on huge logits, and the gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from softmax.model import (
    ConciseSoftmax,
    ScratchSoftmax,
    accuracy,
    cross_entropy,
    log_softmax,
    softmax,
)

# torch sets TORCHINDUCTOR_CACHE_DIR in os.environ the first time an optimizer is built (it
# lazily imports torch._dynamo); do that at collection, so the suite's leak check sees a
# variable set by torch before the test, not by the test.
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

HUGE = torch.tensor([[1e4, 0.0, -1e4], [88.0, 89.0, 90.0], [-1e30, 1e30, 0.0],
                     [0.1, 0.2, 0.3]])


def naive_softmax(X: torch.Tensor) -> torch.Tensor:  # the book's version, for contrast
    X_exp = torch.exp(X)
    return X_exp / X_exp.sum(1, keepdim=True)


def test_naive_softmax_really_overflows() -> None:
    assert torch.isnan(naive_softmax(HUGE)).any()


def test_softmax_matches_torch_on_huge_logits() -> None:
    ours = softmax(HUGE)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, torch.softmax(HUGE, dim=1))
    torch.testing.assert_close(log_softmax(HUGE), torch.log_softmax(HUGE, dim=1))


@pytest.mark.parametrize("target", [0, 1, 2])
def test_cross_entropy_matches_torch_and_is_finite(target: int) -> None:
    y = torch.full((len(HUGE),), target)
    ours = cross_entropy(HUGE, y)
    assert torch.isfinite(ours).all()  # the book's -log(softmax) gives inf here
    torch.testing.assert_close(ours, F.cross_entropy(HUGE, y, reduction="none"))
    naive = -torch.log(naive_softmax(HUGE)[range(len(y)), y])
    assert not torch.isfinite(naive).all()


def test_hand_written_gradient_matches_autograd() -> None:
    gen = torch.Generator().manual_seed(1)
    model = ScratchSoftmax(torch.device("cpu"), gen)
    X = torch.rand(37, 784, generator=gen)
    y = torch.randint(0, 10, (37,), generator=gen)
    model.b += torch.randn(10, generator=gen)
    W = model.W.detach().clone().requires_grad_()
    b = model.b.detach().clone().requires_grad_()
    cross_entropy(X @ W + b, y).mean().backward()
    dW, db = model.gradients(X, model.logits(X), y)
    torch.testing.assert_close(dW, W.grad)
    torch.testing.assert_close(db, b.grad)


def test_scratch_and_concise_take_the_same_step() -> None:
    cpu = torch.device("cpu")
    scratch = ScratchSoftmax(cpu, torch.Generator().manual_seed(3))
    concise = ConciseSoftmax(cpu, torch.Generator().manual_seed(3))
    torch.testing.assert_close(scratch.state_dict()["W"], concise.state_dict()["1.weight"])
    X, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    _, l1 = scratch.train_step(X, y, 0.5)
    _, l2 = concise.train_step(X, y, 0.5)
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(scratch.state_dict()["W"], concise.state_dict()["1.weight"])
    torch.testing.assert_close(scratch.state_dict()["b"], concise.state_dict()["1.bias"])


def test_state_dict_round_trip_keeps_fast_layout() -> None:
    a = ScratchSoftmax(torch.device("cpu"), torch.Generator().manual_seed(0))
    b = ScratchSoftmax(torch.device("cpu"), torch.Generator().manual_seed(9))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.W, b.W)
    assert b.W.shape == (784, 10) and b.W.stride() == (1, 784)


def test_accuracy_counts_on_device() -> None:
    y_hat = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    got = accuracy(y_hat, torch.tensor([1, 1, 1]))
    assert isinstance(got, torch.Tensor) and int(got) == 2


def test_seeded_init_is_the_same_on_every_device(device: str) -> None:
    """The trainer seeds the model with a CPU generator; on a CUDA device a random op refuses
    a CPU generator, so the weights are drawn where the generator lives and then moved."""
    cpu_ref = ScratchSoftmax(torch.device("cpu"), torch.Generator().manual_seed(4)).state_dict()
    target = torch.device(device)
    scratch = ScratchSoftmax(target, torch.Generator().manual_seed(4))
    concise = ConciseSoftmax(target, torch.Generator().manual_seed(4))
    assert scratch.W.device.type == target.type and concise.parameters()[0].device.type == (
        target.type)
    torch.testing.assert_close(scratch.state_dict()["W"].cpu(), cpu_ref["W"])
    torch.testing.assert_close(concise.state_dict()["1.weight"].cpu(), cpu_ref["W"])
    assert scratch.W.stride() == (1, 784)
