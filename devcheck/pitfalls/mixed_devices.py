"""A CUDA model fed CPU tensors (or the reverse)."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom, accelerator


def reproduce(device: str) -> None:
    import torch

    net = torch.nn.Linear(784, 10).to(accelerator(device))
    X = torch.randn(18, 784)  # e.g. predict_ch3 feeding test images straight from the loader
    net(X)


def fixed(device: str) -> str:
    import torch

    dev = torch.device(accelerator(device))
    net = torch.nn.Linear(784, 10).to(dev)
    X = torch.randn(18, 784)
    out = net(X.to(dev))
    return f"output on {out.device}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="mixed_devices",
    title="Tensors on different devices in one operation (model on GPU, batch on CPU)",
    needs=("cuda", "mps"),
    symptoms=(
        Symptom(
            r"Expected all tensors to be on the same device, but (?:got \w+ is on |found "
            r"at least two devices, )(?P<device>cuda|xpu):(\d+)[^\n]{0,80}?\b(?:cuda|xpu):(?!\2\b)"
            r"\d+",
            "expected all tensors to be on the same device",
            "RuntimeError: Expected all tensors to be on the same device, but found at least "
            "two devices, cuda:0 and cuda:1! (when checking argument for argument index in "
            "method wrapper_CUDA_scatter__value)",
            weight=0.95,
            variant="two GPUs (cuda:0 and cuda:1)",
            mechanism=(
                "Two tensors are on two different GPUs: torch never copies between GPUs "
                "implicitly, so one kernel cannot take both. Typical causes: the model on "
                "cuda:0 (a bare .cuda() or .to('cuda') means the *current* device, usually "
                "0) while the batch went to cuda:1 (or the reverse); a checkpoint loaded "
                "with its saved device; a model split across GPUs (device_map='auto', manual "
                "pipeline) whose layer outputs are not moved to the next layer's GPU; "
                "DataParallel with the model not on device_ids[0]."
            ),
            fixes=(
                Fix("Use one torch.device object for the model and every batch",
                    "device = torch.device('cuda:1')   # the one GPU this process uses\n"
                    "net = net.to(device)\nX, y = X.to(device), y.to(device)"),
                Fix("Move inputs to wherever the model (or the next layer) lives",
                    "X = X.to(next(net.parameters()).device)"),
                Fix("Select the GPU outside the program, then use cuda:0 inside it",
                    "CUDA_VISIBLE_DEVICES=1 python train.py   # inside: device = 'cuda:0'"),
                Fix("Load checkpoints onto the device in use",
                    "state = torch.load(path, map_location=device)"),
            ),
        ),
        Symptom(
            r"Expected all tensors to be on the same device, but got \w+ is on "
            r"(?:cpu|cuda|mps)",
            "expected all tensors to be on the same device",
            "RuntimeError: Expected all tensors to be on the same device, but got mat1 is on "
            "cpu, different from other tensors on cuda:0 (when checking argument in method "
            "wrapper_CUDA_addmm)",
            variant="torch >= 2.6",
        ),
        Symptom(
            r"Expected all tensors to be on the same device, but found at least two "
            r"devices",
            "expected all tensors to be on the same device",
            "RuntimeError: Expected all tensors to be on the same device, but found at least "
            "two devices, cuda:1 and cpu! (when checking argument for argument mat1 in method "
            "wrapper_addmm)",
            variant="torch 1.x - 2.5",
        ),
        Symptom(
            r"Expected all tensors to be on the same device",
            "expected all tensors to be on the same device",
            "RuntimeError: Expected all tensors to be on the same device",
            weight=0.75,
            variant="cut",
        ),
        Symptom(
            r"Input type \(torch\.(?:cuda\.)?\w+\) and weight type \(torch\.(?:cuda\.|mps\.)?"
            r"\w+\) should be the same",
            "and weight type",
            "RuntimeError: Input type (torch.FloatTensor) and weight type "
            "(torch.cuda.FloatTensor) should be the same or input should be a MKLDNN tensor "
            "and weight is a dense tensor",
            weight=0.8,
            variant="convolutions",
        ),
        Symptom(
            r"Expected object of device type \w+ but got device type \w+",
            "expected object of device type",
            "RuntimeError: Expected object of device type cuda but got device type cpu for "
            "argument #1 'self' in call to _th_addmm",
            weight=0.85,
            variant="torch <= 1.4",
        ),
        Symptom(
            r"Placeholder storage has not been allocated on MPS device",
            "placeholder storage has not been allocated",
            "RuntimeError: Placeholder storage has not been allocated on MPS device!",
            weight=0.8,
            variant="MPS",
        ),
        Symptom(
            r"Tensor on device \w+(?::\d+)? is not on the expected device \w+",
            "is not on the expected device",
            "RuntimeError: Tensor on device meta is not on the expected device cpu!",
            weight=0.75,
            variant="meta / fake tensors",
        ),
        Symptom(
            r"indices should be either on cpu or on the same device as the indexed tensor",
            "indices should be either on cpu",
            "RuntimeError: indices should be either on cpu or on the same device as the "
            "indexed tensor (cpu)",
            weight=0.75,
            variant="indexing",
        ),
    ),
    mechanism=(
        "A kernel is chosen by the device of its tensor arguments and requires all of them "
        "on one device; torch never copies between devices implicitly. Typical cause: the "
        "model was moved with net.to(device) but a batch was not (d2l's predict_ch3 / "
        "evaluate_accuracy feeding loader batches to a GPU model), or x.to(device) was "
        "called without assigning the result."
    ),
    source="the dispatcher's device check (aten/src/ATen/native/TensorCompare / "
    "c10::impl::check_and_update_common_device), e.g. wrapper_CUDA_addmm for nn.Linear",
    fixes=(
        Fix("The book's from-scratch net is a function over W and b (no net.to): create "
            "them on the device, and move every batch at the loop boundary",
            "device = torch.device('{device}')\n"
            "W = torch.normal(0, 0.01, size=(784, 10), device=device, requires_grad=True)\n"
            "b = torch.zeros(10, device=device, requires_grad=True)\n"
            "for X, y in train_iter:\n    X, y = X.to(device), y.to(device)"),
        Fix("An nn.Module model: move it once, then every batch",
            "net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to(device)\n"
            "for X, y in loader:\n    X, y = X.to(device), y.to(device)"),
        Fix("Read the device from the model instead of hard-coding it",
            "device = next(net.parameters()).device\nX = X.to(device)"),
    ),
    hints=("to(device)", "predict_ch3", "evaluate_accuracy"),
    cpu_note="the CUDA/MPS text needs an accelerator; on CPU, 'meta' gives another text",
    related=("tensor_to_not_inplace", "cuda_available_but_unused"),
)
