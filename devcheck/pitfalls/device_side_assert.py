"""Out-of-range labels: an IndexError on the CPU, an async device-side assert on CUDA."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom


def reproduce(device: str) -> None:
    import torch

    logits = torch.randn(4, 10, device=device)
    y = torch.tensor([1, 4, 7, 10], device=device)  # labels 1..10 for 10 classes
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.item()  # on CUDA the assert surfaces at the next sync


def fixed(device: str) -> str:
    import torch

    logits = torch.randn(4, 10, device=device)
    y = torch.tensor([1, 4, 7, 10], device=device) - 1  # shift 1-based labels to 0..9
    num_classes = logits.shape[1]
    if not bool(((y >= 0) & (y < num_classes)).all()):
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    loss = torch.nn.functional.cross_entropy(logits, y)
    return f"loss {loss.item():.3f} with labels in 0..{num_classes - 1}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="device_side_assert",
    title="Labels/indices out of range (CUDA: 'device-side assert triggered')",
    needs=("cpu", "cuda"),
    symptoms=(
        Symptom(r"device-side assert triggered", "device-side assert triggered",
                "RuntimeError: CUDA error: device-side assert triggered\nCUDA kernel errors "
                "might be asynchronously reported at some other API call, so the stacktrace "
                "below might be incorrect.\nFor debugging consider passing "
                "CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable "
                "device-side assertions."),
        Symptom(r"Assertion `t >= 0 && t < n_classes` failed", "t < n_classes",
                "/pytorch/aten/src/ATen/native/cuda/Loss.cu:250: nll_loss_forward_reduce_cuda"
                "_kernel_2d: block: [0,0,0], thread: [3,0,0] Assertion `t >= 0 && t < "
                "n_classes` failed.", weight=0.85),
        Symptom(r"Target -?\d+ is out of bounds", "is out of bounds",
                "IndexError: Target 10 is out of bounds.", variant="CPU"),
        Symptom(r"index -?\d+ is out of bounds for dimension \d+ with size \d+",
                "is out of bounds for dimension", "IndexError: index 10 is out of bounds for "
                "dimension 1 with size 10", weight=0.6,
                variant="from-scratch cross_entropy y_hat[range(n), y]"),
    ),
    mechanism=(
        "A label >= the number of classes (or < 0): 1-based labels, a wrong num_classes, "
        "padding ids. On the CPU the kernel raises at once; CUDA kernels assert "
        "asynchronously, so the error surfaces at a later, unrelated call and the CUDA "
        "context is unusable afterwards."
    ),
    source="aten/src/ATen/native/cuda/Loss.cu nll_loss kernels (CUDA_KERNEL_ASSERT); "
    "aten/src/ATen/native/LossNLL.cpp on the CPU",
    fixes=(
        Fix("Check labels against the number of classes before training",
            "assert 0 <= int(y.min()) and int(y.max()) < num_classes"),
        Fix("Rerun on the CPU (or with CUDA_LAUNCH_BLOCKING=1) for the real stack",
            "CUDA_LAUNCH_BLOCKING=1 python train.py"),
    ),
    hints=("cross_entropy", "nll_loss", "CUDA_LAUNCH_BLOCKING"),
    cuda_errors=(59, 710),
)
