"""numpy (and matplotlib) cannot read accelerator memory."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom, accelerator


def reproduce(device: str) -> None:
    import torch

    losses = torch.rand(5, device=accelerator(device))
    losses.numpy()  # what plt.plot(losses) does through Tensor.__array__


def fixed(device: str) -> str:
    import torch

    losses = torch.rand(5, device=accelerator(device), requires_grad=True) * 1
    a = losses.detach().cpu().numpy()
    b = losses.numpy(force=True)
    return f"numpy arrays {a.shape} and {b.shape} on the host"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="cuda_tensor_to_numpy",
    title="Calling .numpy() / plotting a tensor that lives on the GPU",
    needs=("cuda", "mps"),
    symptoms=(
        Symptom(
            r"can't convert (?P<device>cuda|mps|xpu|meta)(?::\d+)? device type tensor to "
            r"numpy",
            "device type tensor to numpy",
            "TypeError: can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to "
            "copy the tensor to host memory first.",
            variant="torch >= 1.8 (cuda:N, mps:0)",
        ),
        Symptom(
            r"can't convert CUDA tensor to numpy",
            "can't convert cuda tensor to numpy",
            "TypeError: can't convert CUDA tensor to numpy. Use Tensor.cpu() to copy the "
            "tensor to host memory first.",
            variant="torch < 1.8",
        ),
    ),
    mechanism=(
        "numpy needs host memory; a {device} tensor's storage is in device memory, so "
        "Tensor.numpy() refuses. matplotlib's plt.plot(t), np.asarray(t) and "
        "pandas go through Tensor.__array__, which calls .numpy()."
    ),
    source="torch/csrc/utils/tensor_numpy.cpp tensor_to_numpy (via torch/_tensor.py "
    "Tensor.__array__)",
    fixes=(
        Fix("Copy to the host first (once per epoch, not per batch)",
            "arr = t.detach().cpu().numpy()"),
        Fix("Or let torch do the detach + copy", "arr = t.numpy(force=True)"),
    ),
    hints=("plt.plot", "__array__", ".numpy()"),
    cpu_note="needs an accelerator; a 'meta' tensor shows the same code path on CPU",
    related=("numpy_on_requires_grad",),
    # raised inside torch's own sampler: a default device made its randperm a GPU tensor
    yields_to=(("torch/utils/data/sampler.py", "default_device_sampler_generator"),),
)
