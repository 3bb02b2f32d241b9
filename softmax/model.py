"""Softmax regression, d2l ch. 3.6: from scratch (book names, stable maths) and concise.

The book's ``softmax(X) = exp(X) / sum`` overflows to ``inf/inf = nan`` once a logit passes
~88 (float32), and ``-log(y_hat[range(n), y])`` is ``inf`` when a probability underflows to 0.
Both are fixed the standard way: subtract each row's maximum before ``exp``, and compute the
cross-entropy from logits through log-softmax, never through ``log(softmax)``.

The from-scratch model also writes its gradient by hand (it is short: ``softmax - onehot``),
which the tests check against autograd. Parameters keep the book's shapes (``W`` is 784x10),
but ``W`` is stored column-major (a transposed 10x784 tensor), and the products are taken as
``W.T @ X.T`` and ``G.T @ X``: on this CPU these small matmuls run 1.6-3.5x faster in that
orientation than as written in the book (``X @ W``, ``X.T @ G``).
"""

from __future__ import annotations

import torch
from torch import nn

from softmax.data import NUM_CLASSES, NUM_INPUTS


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax, stable for any finite logits."""
    exp = torch.exp(logits - logits.amax(dim=1, keepdim=True))
    return exp / exp.sum(dim=1, keepdim=True)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    Z = logits - logits.amax(dim=1, keepdim=True)
    return Z - torch.exp(Z).sum(dim=1, keepdim=True).log()


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example loss from logits, not probabilities: that is the stability fix."""
    return -log_softmax(logits).gather(1, y.unsqueeze(1)).squeeze(1)


def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions, as a tensor on the device (no ``float()``: no host sync)."""
    return (y_hat.argmax(dim=1) == y).sum()


def _normal(shape: tuple[int, int], device: torch.device,
            generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 0.01) weights drawn where ``generator`` lives, then moved to ``device``.

    Why: a random op on a CUDA tensor refuses a CPU generator ("Expected a 'cuda' device type
    for generator but found 'cpu'"), and the seed-derived CPU generator the trainer passes
    should give the same initial weights on every device."""
    where = generator.device if generator is not None else device
    return torch.normal(0, 0.01, shape, device=where, generator=generator).to(device)


class ScratchSoftmax:
    """The book's ``W``, ``b``, ``net`` and ``sgd``, with a hand-written gradient."""

    kind = "scratch"

    def __init__(self, device: torch.device, generator: torch.Generator | None = None) -> None:
        W = _normal((NUM_CLASSES, NUM_INPUTS), device, generator)
        self.W = W.T  # shape (784, 10), column-major
        self.b = torch.zeros(NUM_CLASSES, device=device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.W, self.b]

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return [("W", self.W), ("b", self.b)]

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """``X @ W + b``, computed as ``(W.T @ X.T + b).T``: the same numbers, and on one CPU
        thread this orientation of the small matmul runs in ~57 us instead of ~92 us."""
        return torch.addmm(self.b.unsqueeze(1), self.W.T, X.reshape(-1, self.W.shape[0]).T).T

    def net(self, X: torch.Tensor) -> torch.Tensor:
        """The book's ``net``: class probabilities."""
        return softmax(self.logits(X))

    def gradients(self, X: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                  probs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """d(mean cross-entropy)/dW and /db: ``G = (softmax(logits) - onehot(y)) / n``.

        ``probs``, if given, is ``softmax(logits)`` already computed (and is overwritten)."""
        X = X.reshape(-1, self.W.shape[0])
        G = softmax(logits) if probs is None else probs
        rows = y.unsqueeze(1)
        G.scatter_(1, rows, G.gather(1, rows) - 1)  # minus onehot(y), without a host sync
        G /= len(y)
        return (G.T @ X).T, G.sum(dim=0)  # (G.T @ X).T == X.T @ G, in W's fast layout

    def train_step(self, X: torch.Tensor, y: torch.Tensor, lr: float,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One minibatch SGD step; returns (logits, per-example loss) of the batch."""
        logits = self.logits(X)
        log_probs = log_softmax(logits)
        loss = -log_probs.gather(1, y.unsqueeze(1)).squeeze(1)  # cross_entropy(logits, y)
        dW, db = self.gradients(X, logits, y, probs=log_probs.exp())
        self.W.sub_(dW, alpha=lr)  # sgd: the book divides the summed gradient by batch size
        self.b.sub_(db, alpha=lr)
        return logits, loss

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"W": self.W.detach().T.contiguous(), "b": self.b.detach().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.b.device
        self.W = state["W"].to(device=device, dtype=torch.float32).contiguous().T
        self.b = state["b"].to(device=device, dtype=torch.float32).clone()

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        pass


class ConciseSoftmax:
    """ch. 3.7: ``nn.Linear`` + ``nn.CrossEntropyLoss`` + ``torch.optim.SGD`` (autograd)."""

    kind = "concise"

    def __init__(self, device: torch.device, generator: torch.Generator | None = None,
                 lr: float = 0.1) -> None:
        linear = nn.Linear(NUM_INPUTS, NUM_CLASSES, device=device)
        self.module = nn.Sequential(nn.Flatten(), linear)
        with torch.no_grad():
            linear.weight.copy_(_normal((NUM_CLASSES, NUM_INPUTS), device, generator))
            linear.bias.zero_()
        self.loss_fn = nn.CrossEntropyLoss(reduction="none")
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=lr)  # after .to(device)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.module.parameters())

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return list(self.module.named_parameters())

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        return self.module(X.reshape(-1, NUM_INPUTS))

    def net(self, X: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(X), dim=1)

    def train_step(self, X: torch.Tensor, y: torch.Tensor, lr: float,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.module.train()
        logits = self.logits(X)
        loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        self.optimizer.step()
        return logits.detach(), loss.detach()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])


Model = ScratchSoftmax | ConciseSoftmax


def make_model(kind: str, device: torch.device, generator: torch.Generator | None = None,
               lr: float = 0.1) -> Model:
    if kind == "scratch":
        return ScratchSoftmax(device, generator)
    if kind == "concise":
        return ConciseSoftmax(device, generator, lr)
    raise ValueError(f"model {kind!r}: expected 'scratch' or 'concise'")
