"""Softmax regression from scratch, written the way the learner wrote it (d2l ch. 3.6).

This is the *broken* version, kept to show what goes wrong; learner_softmax_fixed.py is the
same file with only the device fix, and `softmax train --book` is the whole chapter made right.

    python examples/learner_softmax.py                 # runs, but you never see a plot
    python examples/learner_softmax.py --lr 100        # naive softmax: loss becomes nan
    python examples/learner_softmax.py --limit-batches 20 --epochs 1   # a quick look
    python examples/learner_softmax.py --data-root data --epochs 1

The data is found the way `softmax train` finds it, never downloaded first: --data-root DIR
(default $SOFTMAX_DATA_ROOT, else ./data) in torchvision's layout; else the four .gz archives
from a local mirror, Debian's /usr/share/datasets/fashion-mnist (apt install
dataset-fashion-mnist) or the folders in $SOFTMAX_MIRROR, unpacked into DIR; torchvision's
download only as the last resort. The second line printed says which one was used.

What fails, and where:
1. On a machine with CUDA, ``torch.set_default_device('cuda')`` makes the shuffled DataLoader
   fail at ``for X, y in train_iter`` with "Expected a 'cuda' device type for generator but
   found 'cpu'" (the sampler's randperm becomes a CUDA op fed a CPU generator, in the main
   process; `devcheck explain` tells the whole story).
2. With that fixed (e.g. a CUDA generator), nothing is on one device: ``torch.normal`` is not
   redirected by the default device, so ``W`` stays on the CPU while ``b`` (``torch.zeros``)
   goes to CUDA, and every batch arrives on the CPU (nothing moves X or y): ``net(X)`` fails
   with a mixed-device error; so does ``predict_ch3``.
3. ``float(...)`` on every batch makes a GPU wait for the host at every step (slow, silent).
4. ``softmax(X) = exp(X) / sum`` overflows for large logits: loss nan (try --lr 100; the
   book's closing asserts then fail with "AssertionError: nan").
5. The Animator calls IPython's display(): in a script it prints
   "Figure(350x250)" (or "<Figure size 350x250 with 1 Axes>") per epoch and shows nothing.
"""

import argparse

import torch
import torchvision
from torch.utils import data
from torchvision import transforms

from softmax.data import DataError, locate

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--data-root", default=None)
parser.add_argument("--limit-batches", type=int, default=None)
args = parser.parse_args()

if torch.cuda.is_available():
    print("CUDA is available! PyTorch is using the GPU.")
    torch.set_default_device("cuda")  # failure 1
else:
    print("CUDA is not available. PyTorch is using the CPU.")


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
W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), requires_grad=True)
b = torch.zeros(num_outputs, requires_grad=True)


def softmax(X):
    X_exp = torch.exp(X)  # failure 4
    partition = X_exp.sum(1, keepdim=True)
    return X_exp / partition


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
        display.display(self.fig)  # failure 5: in a script this prints the Figure's repr
        display.clear_output(wait=True)


def batches(it):
    for i, batch in enumerate(it):
        if args.limit_batches is not None and i >= args.limit_batches:
            return
        yield batch


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
    for X, y in batches(train_iter):  # failure 1 raises here; failure 2: X, y stay on CPU
        y_hat = net(X)
        l = loss(y_hat, y)  # noqa: E741
        l.sum().backward()
        updater(X.shape[0])
        metric.add(float(l.sum()), accuracy(y_hat, y), y.numel())
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
    preds = net(X).argmax(axis=1)  # failure 2 again: CPU images, model on the default device
    print("true:", y[:n].tolist())
    print("pred:", preds[:n].tolist())


if __name__ == "__main__":
    train_ch3(net, train_iter, test_iter, cross_entropy, args.epochs,
              lambda n: sgd([W, b], args.lr, n))
    predict_ch3(net, test_iter)
