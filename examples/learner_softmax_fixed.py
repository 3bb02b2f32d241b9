"""The learner's script with the device fix, and nothing else (diff it with learner_softmax.py).

    python examples/learner_softmax_fixed.py --limit-batches 20 --epochs 1
    python examples/learner_softmax_fixed.py --device cpu --epochs 3

Fixes 1 and 2 of learner_softmax.py: no global default device, one explicit ``device``;
``W`` and ``b`` created with ``device=device`` (``torch.normal`` ignores the default device);
every batch moved with ``.to(device)``, and devcheck's StepGuard naming any tensor left
elsewhere. Failures 3-5 (a ``float()`` per batch, the naive softmax, the notebook-only
Animator) are left as they were: `softmax train --book` is the whole chapter made right
(guarded, metrics kept on the device, curves in a PNG). The data is found as in
learner_softmax.py (--data-root, $SOFTMAX_DATA_ROOT, ./data, Debian's mirror).
"""

import argparse

import torch
import torchvision
from torch.utils import data
from torchvision import transforms

from devcheck.guard import StepGuard
from softmax.data import DataError, locate
from softmax.devices import DeviceError, resolve_device

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--data-root", default=None)
parser.add_argument("--limit-batches", type=int, default=None)
parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
args = parser.parse_args()

try:
    device = resolve_device(args.device)  # fix 1: one explicit device, never a global default
except DeviceError as exc:  # says why (e.g. no driver) and what to use instead
    parser.exit(1, f"error: {exc}\n")
print(f"PyTorch is using {device}.")


def get_dataloader_workers():
    return 4


def load_data_fashion_mnist(batch_size):
    try:
        root = str(locate(args.data_root, log=print))  # a local copy first, download last
    except DataError as exc:  # names every place it looked, and how to get the data
        parser.exit(1, f"error: {exc}\n")
    trans = transforms.ToTensor()
    mnist_train = torchvision.datasets.FashionMNIST(root=root, train=True, transform=trans)
    mnist_test = torchvision.datasets.FashionMNIST(root=root, train=False, transform=trans)
    return (data.DataLoader(mnist_train, batch_size, shuffle=True,
                            num_workers=get_dataloader_workers()),
            data.DataLoader(mnist_test, batch_size, shuffle=False,
                            num_workers=get_dataloader_workers()))


batch_size = 256
train_iter, test_iter = load_data_fashion_mnist(batch_size)
num_inputs, num_outputs = 784, 10
W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), device=device, requires_grad=True)
b = torch.zeros(num_outputs, device=device, requires_grad=True)  # fix 2: both on device
guard = StepGuard(device, source="the DataLoader")  # names a tensor left on another device


def softmax(X):
    X_exp = torch.exp(X)  # failure 4
    partition = X_exp.sum(1, keepdim=True)
    return X_exp / partition  # failure 4, kept  # devcheck: ignore[unstable_softmax]


def net(X):
    return softmax(torch.matmul(X.reshape((-1, W.shape[0])), W) + b)


def cross_entropy(y_hat, y):
    return -torch.log(y_hat[range(len(y_hat)), y])


def accuracy(y_hat, y):
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())  # failure 3


class Accumulator:
    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + float(b) for a, b in zip(self.data, args)]  # noqa: B905

    def __getitem__(self, idx):
        return self.data[idx]


class Animator:
    """d2l's Animator, reduced: draws with matplotlib, shows with IPython's display()."""

    def __init__(self, legend):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        self.fig, self.axes = plt.subplots(figsize=(3.5, 2.5))
        self.legend, self.X, self.Y = legend, [], [[] for _ in legend]

    def add(self, x, ys):
        from IPython import display
        for i, y in enumerate(ys):
            self.Y[i].append(y)
        self.X.append(x)
        self.axes.cla()
        for y in self.Y:
            self.axes.plot(self.X, y)
        self.axes.legend(self.legend)
        display.display(self.fig)  # failure 5, kept  # devcheck: ignore[notebook_plot_in_script]
        display.clear_output(wait=True)  # devcheck: ignore[notebook_plot_in_script]


def batches(it):
    for i, (X, y) in enumerate(it):
        if args.limit_batches is not None and i >= args.limit_batches:
            return
        yield X.to(device), y.to(device)  # fix 2: every batch moved (train and evaluation)


def evaluate_accuracy(net, data_iter):
    metric = Accumulator(2)
    with torch.no_grad():
        for X, y in batches(data_iter):
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


def sgd(params, lr, batch_size):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def train_epoch_ch3(net, train_iter, loss, updater):
    metric = Accumulator(3)
    for X, y in batches(train_iter):
        guard.check_inputs(X, y, [("W", W), ("b", b)])
        y_hat = net(X)
        l = loss(y_hat, y)  # noqa: E741
        l.sum().backward()
        updater(X.shape[0])
        metric.add(float(l.sum()), accuracy(y_hat, y),  # devcheck: ignore[hidden_host_sync]
                   y.numel())
    return metric[0] / metric[2], metric[1] / metric[2]


def train_ch3(net, train_iter, test_iter, loss, num_epochs, updater):
    animator = Animator(legend=["train loss", "train acc", "test acc"])
    for epoch in range(num_epochs):
        train_metrics = train_epoch_ch3(net, train_iter, loss, updater)
        test_acc = evaluate_accuracy(net, test_iter)
        animator.add(epoch + 1, train_metrics + (test_acc,))
        print(f"epoch {epoch + 1}: loss {train_metrics[0]:.4f}, test acc {test_acc:.4f}")
    train_loss, train_acc = train_metrics
    if args.limit_batches is not None:
        return  # the book's checks below assume full epochs
    assert train_loss < 0.5, train_loss
    assert 0.7 < train_acc <= 1, train_acc
    assert 0.7 < test_acc <= 1, test_acc


def predict_ch3(net, test_iter, n=6):
    for X, y in test_iter:  # noqa: B007 - the book's way to take one batch
        break
    preds = net(X.to(device)).argmax(axis=1)  # fix 2: images to the parameters' device
    print("true:", y[:n].tolist())
    print("pred:", preds[:n].tolist())


if __name__ == "__main__":
    train_ch3(net, train_iter, test_iter, cross_entropy, args.epochs,
              lambda n: sgd([W, b], args.lr, n))
    predict_ch3(net, test_iter)
