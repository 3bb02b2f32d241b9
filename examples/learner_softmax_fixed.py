"""The learner's script, fixed with devcheck: same structure, same names, right on any device.

    python examples/learner_softmax_fixed.py                    # auto: cuda, mps or cpu
    python examples/learner_softmax_fixed.py --device cpu --epochs 3

The five fixes (numbers match learner_softmax.py):
1. No global default device: one explicit ``device``; the DataLoader stays a CPU object.
2. Every batch is moved (``X, y = X.to(device), y.to(device)``), and devcheck's StepGuard
   checks batch, labels, parameters, outputs and loss at every step, naming the tensor and
   the fix if one is misplaced; ``predict_ch3`` moves the images to the model's device.
3. Metrics stay on the device; the host reads them once per epoch (the guard counts syncs on
   CUDA and prints them).
4. Stable softmax / cross-entropy from softmax.model (row max subtracted, log-softmax).
5. LivePlot: updates in place in Jupyter, writes a PNG per epoch (path printed) elsewhere.
"""

import argparse

import torch
import torchvision
from torch.utils import data
from torchvision import transforms

from devcheck.guard import LabelRangeError, NonFiniteLossError, PlacementError, StepGuard
from softmax.data import CLASSES, DataError, locate
from softmax.model import cross_entropy, softmax
from softmax.plot import LivePlot, prediction_grid
from softmax.train import DeviceError, resolve_device

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--device", default="auto")
parser.add_argument("--data-root", default=None)
parser.add_argument("--workers", type=int, default=2)
parser.add_argument("--limit-batches", type=int, default=None)
parser.add_argument("--plot", default="runs/learner/curves.png")
parser.add_argument("--predictions", default="runs/learner/predictions.png")
args = parser.parse_args()

try:
    device = resolve_device(args.device)  # fix 1: explicit, checked, never global
except DeviceError as exc:  # one line saying why (e.g. cuda:7 on a one-GPU machine), no traceback
    parser.exit(1, f"error: {exc}\n")
print(f"training on {device}")


def load_data_fashion_mnist(batch_size):
    try:
        root = str(locate(args.data_root))  # verified local copy first, download last
    except DataError as exc:  # names the damaged file, or every place it looked
        parser.exit(1, f"error: {exc}\n")
    trans = transforms.ToTensor()
    mnist_train = torchvision.datasets.FashionMNIST(root=root, train=True, transform=trans)
    mnist_test = torchvision.datasets.FashionMNIST(root=root, train=False, transform=trans)
    pin = device.type == "cuda"  # pinned batches copy without a host sync (see batches())
    return (data.DataLoader(mnist_train, batch_size, shuffle=True, num_workers=args.workers,
                            pin_memory=pin),
            data.DataLoader(mnist_test, batch_size, shuffle=False, num_workers=args.workers,
                            pin_memory=pin))


batch_size = 256
train_iter, test_iter = load_data_fashion_mnist(batch_size)
num_inputs, num_outputs = 784, 10
W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), device=device, requires_grad=True)
b = torch.zeros(num_outputs, device=device, requires_grad=True)


def logits(X):
    return torch.matmul(X.reshape((-1, W.shape[0])), W) + b


def net(X):
    return softmax(logits(X))  # fix 4: stable


def accuracy(y_hat, y):
    return (y_hat.argmax(axis=1) == y).sum()  # fix 3: a tensor, no float()


def batches(it):
    for i, (X, y) in enumerate(it):
        if args.limit_batches is not None and i >= args.limit_batches:
            return
        # fix 2: move every batch; from pinned memory non_blocking=True is a true async copy
        # (a plain .to(device) from pageable memory waits for the GPU: 2 syncs per step)
        yield X.to(device, non_blocking=True), y.to(device, non_blocking=True)


def evaluate_accuracy(data_iter):
    correct = torch.zeros((), device=device)
    n = 0
    with torch.no_grad():
        for X, y in batches(data_iter):
            correct += accuracy(logits(X), y)
            n += len(y)
    return correct.item() / n  # one read per evaluation


def sgd(params, lr, batch_size):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


guard = StepGuard(device, num_classes=10, source="the DataLoader")


def train_epoch_ch3(epoch):
    sums = torch.zeros(2, device=device)  # fix 3: loss and correct, summed on the device
    n = 0
    with guard.epoch(epoch):
        for X, y in batches(train_iter):
            guard.check_inputs(X, y, [("W", W), ("b", b)])
            y_hat = logits(X)
            l = cross_entropy(y_hat, y)  # noqa: E741 - the book's name
            guard.check_outputs(y_hat, l)
            l.sum().backward()
            sgd([W, b], args.lr, X.shape[0])
            sums += torch.stack([l.detach().sum(), accuracy(y_hat, y).float()])
            n += len(y)
    loss_sum, correct = sums.tolist()
    return loss_sum / n, correct / n


def train_ch3(num_epochs):
    live = LivePlot(args.plot, epochs=num_epochs)  # fix 5
    for epoch in range(1, num_epochs + 1):
        train_loss, train_acc = train_epoch_ch3(epoch)
        test_acc = evaluate_accuracy(test_iter)
        path = live.add(epoch, (train_loss, train_acc, test_acc))
        syncs = guard.reports[-1].syncs_per_step
        print(f"epoch {epoch}: loss {train_loss:.4f}, train acc {train_acc:.4f}, "
              f"test acc {test_acc:.4f}" + (f", syncs/step {syncs:.2f}" if syncs is not None
                                            else "") + (f"; curves: {path}" if path else ""))


def predict_ch3(test_iter, n=8, out=args.predictions):
    X, y = next(iter(test_iter))
    with torch.no_grad():
        preds = logits(X.to(device)).argmax(axis=1)  # fix 2: images to the model's device
    path = prediction_grid(X[:n], y[:n].tolist(), preds[:n].tolist(), CLASSES, out)
    print(f"predictions: {path}")


if __name__ == "__main__":
    try:
        train_ch3(args.epochs)
    except (PlacementError, NonFiniteLossError, LabelRangeError) as exc:
        parser.exit(1, f"error: {exc}\n")  # the guard's message already says the fix
    predict_ch3(test_iter)
