"""``set_default_device`` does not reach every tensor: torch.normal, numpy, ToTensor.

The book's chapter 3.6 parameters are ``W = torch.normal(...)`` and ``b = torch.zeros(...)``;
under ``torch.set_default_device('cuda')`` only ``b`` follows (``torch.normal`` is not one of
the factories the default-device mode rewrites on torch 2.14), and the images from numpy or
torchvision's ToTensor are CPU tensors by design. The first ``net(X)`` mixes devices.
On a CPU-only machine the ``meta`` device plays the accelerator: the same mode, the same
factories, a real error from torch (its text differs from CUDA's).
"""

from __future__ import annotations

from typing import Any

from devcheck.pitfalls._base import Fix, Pitfall, Symptom


def _default(device: str) -> str:
    kind = device.split(":")[0]
    return device if kind in ("cuda", "mps") else "meta"


def _make_book_tensors() -> tuple[Any, Any, Any, str]:
    import numpy as np
    import torch

    W = torch.normal(0, 0.01, size=(784, 10), requires_grad=True)  # not redirected
    b = torch.zeros(10, requires_grad=True)  # redirected to the default device
    X = torch.from_numpy(np.zeros((4, 784), dtype=np.float32))  # numpy memory: CPU
    where = (f"W (torch.normal) on {W.device}, b (torch.zeros) on {b.device}, "
             f"X (torch.from_numpy) on {X.device}")
    try:
        import PIL.Image
        import torchvision.transforms as T

        img = T.ToTensor()(PIL.Image.new("L", (28, 28)))
        where += f", ToTensor() image on {img.device}"
    except ImportError:
        pass
    return W, b, X, where


def reproduce(device: str) -> None:
    import torch

    default = _default(device)
    torch.set_default_device(default)
    try:
        W, b, X, where = _make_book_tensors()
        try:
            torch.matmul(X.reshape(-1, 784), W) + b  # the book's net(X) before softmax
        except RuntimeError as exc:
            raise RuntimeError(f"{exc} [under torch.set_default_device({default!r}): "
                               f"{where}]") from exc
    finally:
        torch.set_default_device(None)


def fixed(device: str) -> str:
    import numpy as np
    import torch

    dev = torch.device(_default(device))  # explicit device=, no global default
    W = torch.normal(0, 0.01, size=(784, 10), device=dev, requires_grad=True)
    b = torch.zeros(10, device=dev, requires_grad=True)
    X = torch.from_numpy(np.zeros((4, 784), dtype=np.float32)).to(dev)
    out = torch.matmul(X.reshape(-1, 784), W) + b
    return f"W on {W.device}, b on {b.device}, X moved to {X.device}: output on {out.device}"


_MIXED = (r"(?:Expected all tensors to be on the same device|Tensor on device \w+(?::\d+)? is "
          r"not on the expected device|Input type \(torch\.\w+\) and weight type)")

PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="default_device_not_applied",
    title="set_default_device does not reach torch.normal, numpy or ToTensor tensors",
    needs=("cpu", "cuda", "mps"),
    symptoms=(
        Symptom(_MIXED, "expected all tensors to be on the same device",
                "RuntimeError: Expected all tensors to be on the same device, but got mat2 is "
                "on cpu, different from other tensors on cuda:0 (when checking argument in "
                "method wrapper_CUDA_mm)\n(the script called torch.set_default_device('cuda'))",
                weight=0.95, variant="mixed devices under a global default device",
                requires="set_default_device"),
        Symptom(_MIXED, "is not on the expected device",
                "RuntimeError: Tensor on device meta is not on the expected device cpu! "
                "[under torch.set_default_device('meta'): W (torch.normal) on cpu, b "
                "(torch.zeros) on meta, X (torch.from_numpy) on cpu]", weight=0.95,
                variant="meta standing in for the GPU", requires="set_default_device"),
        Symptom(_MIXED, "expected all tensors to be on the same device",
                "RuntimeError: Expected all tensors to be on the same device, but found at "
                "least two devices, cuda:0 and cpu!\n(after "
                "torch.set_default_tensor_type('torch.cuda.FloatTensor'))", weight=0.95,
                variant="the older global default: set_default_tensor_type",
                requires="set_default_tensor_type"),
        Symptom(r"set_default_device\(\s*['\"](?P<device>cuda|mps)[^)\n]*\)[\s\S]{0,600}?"
                r"torch\.(?:normal|from_numpy)\(", "set_default_device",
                "torch.set_default_device('cuda')\nW = torch.normal(0, 0.01, size=(784, 10))\n"
                "print(W.device)  # cpu", weight=0.8,
                variant="code: torch.normal / from_numpy after set_default_device "
                "(pytorch#166104, #114691)"),
    ),
    mechanism=(
        "torch.set_default_device('{device}') only rewrites the factory functions listed in "
        "torch.utils._device._device_constructors() (zeros, ones, empty, full, rand, randn, "
        "randint, randperm, arange, tensor, ...). torch.normal is not among them on "
        "torch 2.14 (pytorch#166104), so the book's W = torch.normal(0, 0.01, size=(784, 10)) "
        "stays on the CPU while b = torch.zeros(10) goes to {device}. torch.from_numpy and "
        "torchvision's ToTensor() wrap CPU memory by design, so every image batch from the "
        "DataLoader is a CPU tensor too. The first X @ W + b mixes devices. A global "
        "default device is not 'torch uses the GPU': new tensors from some functions go "
        "there, everything else stays where it was made."
    ),
    source="torch/utils/_device.py (_device_constructors and DeviceContext.__torch_function__)",
    fixes=(
        Fix("Give the book's parameters an explicit device and move each batch (the book's "
            "net is a function over W and b, so there is no net.to(device))",
            "device = torch.device('{device}' if torch.cuda.is_available() else 'cpu')\n"
            "W = torch.normal(0, 0.01, size=(784, 10), device=device, requires_grad=True)\n"
            "b = torch.zeros(10, device=device, requires_grad=True)\n"
            "for X, y in train_iter:\n    X, y = X.to(device), y.to(device)"),
        Fix("With an nn.Module model: move it once, then each batch",
            "net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to(device)\n"
            "X, y = X.to(device), y.to(device)"),
        Fix("See the whole script fixed this way",
            "python examples/learner_softmax_fixed.py\n"
            "diff examples/learner_softmax.py examples/learner_softmax_fixed.py"),
    ),
    warnings=(
        "Dropping set_default_device also removes the shuffled-DataLoader error "
        "(default_device_sampler_generator); keeping it and patching the sampler only "
        "moves you on to this mixed-device error.",
    ),
    hints=("torch.normal", "from_numpy", "ToTensor", "set_default_device"),
    cpu_note="on the CPU the 'meta' device stands in for the GPU: same mode, same factories, "
    "torch's meta error text",
    related=("default_device_sampler_generator", "mixed_devices"),
)
