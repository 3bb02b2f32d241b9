"""The learner's d2l ch. 3.6 loop, as they wrote it: the anchor for bench_train.py.

torchvision + ToTensor + DataLoader with 4 workers, the naive softmax and cross-entropy,
``float()`` on every batch through ``Accumulator``, and ``d2l.sgd``. Nothing is moved to a
device (the book's CPU code). Written anew after the seed conversation; no d2l import (d2l
1.0.3 no longer ships ``train_ch3``).

    python benchmarks/book_loop.py --epochs 1
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from torch.utils import data
from torchvision import transforms


def get_dataloader_workers() -> int:
    return 4  # the book's hard-coded value


def load_data_fashion_mnist(batch_size: int, root: str):  # type: ignore[no-untyped-def]
    trans = transforms.Compose([transforms.ToTensor()])
    mnist_train = torchvision.datasets.FashionMNIST(root=root, train=True, transform=trans)
    mnist_test = torchvision.datasets.FashionMNIST(root=root, train=False, transform=trans)
    return (data.DataLoader(mnist_train, batch_size, shuffle=True,
                            num_workers=get_dataloader_workers()),
            data.DataLoader(mnist_test, batch_size, shuffle=False,
                            num_workers=get_dataloader_workers()))


num_inputs, num_outputs = 784, 10
W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), requires_grad=True)
b = torch.zeros(num_outputs, requires_grad=True)


def softmax(X):  # type: ignore[no-untyped-def]
    X_exp = torch.exp(X)
    partition = X_exp.sum(1, keepdim=True)
    return X_exp / partition


def net(X):  # type: ignore[no-untyped-def]
    return softmax(torch.matmul(X.reshape((-1, W.shape[0])), W) + b)


def cross_entropy(y_hat, y):  # type: ignore[no-untyped-def]
    return -torch.log(y_hat[range(len(y_hat)), y])


def accuracy(y_hat, y):  # type: ignore[no-untyped-def]
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


class Accumulator:
    def __init__(self, n):  # type: ignore[no-untyped-def]
        self.data = [0.0] * n

    def add(self, *args):  # type: ignore[no-untyped-def]
        self.data = [a + float(b) for a, b in zip(self.data, args, strict=True)]

    def __getitem__(self, idx):  # type: ignore[no-untyped-def]
        return self.data[idx]


def evaluate_accuracy(net, data_iter):  # type: ignore[no-untyped-def]
    metric = Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


def sgd(params, lr, batch_size):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def train_epoch_ch3(net, train_iter, loss, updater):  # type: ignore[no-untyped-def]
    metric = Accumulator(3)
    for X, y in train_iter:
        y_hat = net(X)
        l = loss(y_hat, y)  # noqa: E741 - the book's name
        l.sum().backward()
        updater(X.shape[0])
        metric.add(float(l.sum()), accuracy(y_hat, y), y.numel())
    return metric[0] / metric[2], metric[1] / metric[2]


def run(epochs: int, root: str, lr: float = 0.1, batch_size: int = 256,
        seed: int = 0) -> list[dict[str, float]]:
    """train_ch3 without the Animator; returns each epoch's figures and wall time."""
    torch.manual_seed(seed)
    with torch.no_grad():
        W.copy_(torch.normal(0, 0.01, size=(num_inputs, num_outputs)))
        b.zero_()
    train_iter, test_iter = load_data_fashion_mnist(batch_size, root)
    out = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        train_loss, train_acc = train_epoch_ch3(net, train_iter, cross_entropy,
                                                lambda n: sgd([W, b], lr, n))
        test_acc = evaluate_accuracy(net, test_iter)
        out.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                    "test_acc": test_acc, "seconds": time.perf_counter() - t0})
        print(f"book epoch {epoch}: loss {train_loss:.4f} train acc {train_acc:.4f} "
              f"test acc {test_acc:.4f} {out[-1]['seconds']:.2f} s", flush=True)
    return out


if __name__ == "__main__":
    from softmax.data import locate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    run(args.epochs, str(locate(args.data_root)))
