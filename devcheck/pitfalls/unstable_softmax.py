"""A from-scratch softmax that overflows: exp(large logits) -> inf/inf -> nan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devcheck.pitfalls._base import Fix, Pitfall, Symptom

if TYPE_CHECKING:
    import torch


def _logits(device: str) -> torch.Tensor:
    import torch

    return torch.tensor([[10.0, 100.0, 1000.0], [1.0, 2.0, 3.0]], device=device,
                        requires_grad=True)


def reproduce(device: str) -> None:
    import torch

    X, y = _logits(device), torch.tensor([0, 2], device=device)
    with torch.autograd.detect_anomaly(check_nan=True):
        X_exp = torch.exp(X)  # the book's softmax: exp(1000) = inf
        y_hat = X_exp / X_exp.sum(1, keepdim=True)  # inf / inf = nan
        loss = -torch.log(y_hat[range(len(y_hat)), y]).mean()
        loss.backward()  # anomaly mode names the op that produced nan


def fixed(device: str) -> str:
    import torch

    X, y = _logits(device), torch.tensor([0, 2], device=device)
    with torch.autograd.detect_anomaly(check_nan=True):
        shifted = X - X.max(dim=1, keepdim=True).values.detach()  # subtract the row max
        log_probs = shifted - torch.logsumexp(shifted, dim=1, keepdim=True)
        loss = -log_probs[range(len(log_probs)), y].mean()
        loss.backward()
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"loss is {loss.item()}")
    return f"finite loss {loss.item():.1f}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="unstable_softmax",
    title="Naive softmax / cross-entropy overflows: nan or inf loss",
    needs=("cpu", "cuda", "mps"),
    symptoms=(
        Symptom(r"Function '\w+Backward\d*' returned nan values in its \d+th output",
                "returned nan values in its", "RuntimeError: Function 'LogBackward0' "
                "returned nan values in its 0th output."),
        Symptom(r"\bloss\b[^\n]{0,40}?\b(?:nan|inf)\b", "loss",
                "epoch 1, loss nan, train acc 0.100", weight=0.55, variant="training log"),
    ),
    mechanism=(
        "softmax(X) = exp(X) / sum(exp(X)) overflows float32 for logits above ~88: "
        "exp gives inf and inf/inf gives nan; tiny probabilities underflow to 0 and "
        "log(0) = -inf. Subtracting the row maximum leaves softmax unchanged and keeps "
        "exp in range; log-softmax avoids log(0)."
    ),
    source="the from-scratch softmax/cross_entropy (d2l 3.6); torch's own "
    "F.cross_entropy uses log_softmax and is stable",
    fixes=(
        Fix("Subtract the row max, work in log space",
            "X = X - X.max(dim=1, keepdim=True).values\n"
            "log_probs = X - torch.logsumexp(X, dim=1, keepdim=True)\n"
            "loss = -log_probs[range(len(y)), y].mean()"),
        Fix("Or use the built-in", "loss = torch.nn.functional.cross_entropy(logits, y)"),
    ),
    hints=("softmax", "nan", "exp"),
)
