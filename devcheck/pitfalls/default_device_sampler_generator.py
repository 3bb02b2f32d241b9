"""``set_default_device('cuda')`` + a shuffled DataLoader: CPU generator, CUDA randperm."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom, accelerator


def reproduce(device: str) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    dev = accelerator(device)
    data = TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
    torch.set_default_device(dev)
    try:
        loader = DataLoader(data, batch_size=16, shuffle=True)  # num_workers is irrelevant
        for _X, _y in loader:  # RandomSampler.__iter__ -> torch.randperm(n, generator=cpu_gen)
            break
    finally:
        torch.set_default_device(None)


def fixed(device: str) -> str:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    dev = torch.device(accelerator(device))
    data = TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
    net = torch.nn.Linear(4, 3).to(dev)  # fix 1: no global default, explicit moves
    seen = 0
    for X, y in DataLoader(data, batch_size=16, shuffle=True):
        X, y = X.to(dev), y.to(dev)
        seen += int(torch.nn.functional.cross_entropy(net(X), y).isfinite())
    # fix 2 as well: a generator on the default device keeps randperm consistent
    torch.set_default_device(dev)
    try:
        gen = torch.Generator(device=dev)
        for _X, _y in DataLoader(data, batch_size=16, shuffle=True, generator=gen):
            break
    finally:
        torch.set_default_device(None)
    return f"{seen} batches on {dev}; generator=torch.Generator(device={str(dev)!r}) also works"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="default_device_sampler_generator",
    title="set_default_device(accelerator) breaks a shuffled DataLoader (CPU generator)",
    needs=("cuda", "mps"),
    symptoms=(
        Symptom(
            r"Expected a '(?P<device>cuda|mps|xpu)(?::\d+)?' device type for generator but "
            r"found 'cpu'",
            "device type for generator",
            "RuntimeError: Expected a 'cuda' device type for generator but found 'cpu'",
            variant="CUDA (torch 1.x-2.14)",
        ),
        Symptom(
            r"Expected a '(?P<device>mps|cuda|xpu)(?::\d+)?' generator device but found 'cpu'",
            "generator device but found",
            "RuntimeError: Expected a 'mps:0' generator device but found 'cpu'",
            variant="MPS (pytorch#110820)",
        ),
        Symptom(
            r"Expected a 'cpu' device type for generator but found '(cuda|mps)",
            "device type for generator",
            "RuntimeError: Expected a 'cpu' device type for generator but found 'cuda'",
            weight=0.7,
            variant="reverse: an accelerator generator with a CPU randperm",
        ),
    ),
    mechanism=(
        "torch.set_default_device('{device}') pushes a DeviceContext (a TorchFunctionMode) "
        "that injects device='{device}' into factory functions called without a device, "
        "torch.randperm included. torch.Generator() is not a factory it intercepts: "
        "RandomSampler (generator=None) builds a CPU torch.Generator(), so its "
        "torch.randperm(n, generator=generator) becomes a {device} randperm fed a CPU "
        "generator, and the kernel rejects it. The sampler runs in the MAIN process whatever "
        "num_workers is (workers only receive lists of indices), so num_workers is "
        "irrelevant: 'worker processes don't inherit the default device' is the wrong "
        "explanation. With workers it fails at iter(loader) (index prefetch), with "
        "num_workers=0 at the first next(). random_split and DistributedSampler fall into "
        "the same trap."
    ),
    source=(
        "torch/utils/data/sampler.py RandomSampler.__iter__ (the torch.randperm(n, "
        "generator=generator) line) via torch/utils/_device.py "
        "DeviceContext.__torch_function__; check_generator in ATen's randperm"
    ),
    fixes=(
        Fix(
            "Don't set a global default device: move the model once and each batch",
            "device = torch.device('cuda')\nnet = net.to(device)\nfor X, y in train_iter:\n"
            "    X, y = X.to(device), y.to(device)\n"
            "# or scope construction only:\nwith torch.device('cuda'):\n    net = Net()",
        ),
        Fix(
            "Give the DataLoader a generator on the default device",
            "DataLoader(ds, batch_size=256, shuffle=True,\n"
            "           generator=torch.Generator(device='cuda'))",
        ),
        Fix(
            "Iterate the loader under a CPU device scope (around the iteration, not the "
            "construction)",
            "with torch.device('cpu'):\n    for X, y in train_iter:\n        ...",
        ),
    ),
    warnings=(
        "Next trap with fix 2 and num_workers>0 on Linux: fork-started workers inherit the "
        "default-device mode, and the parent has already initialised CUDA, so the first "
        "CUDA tensor a worker makes (default_collate's torch.tensor on int labels) raises "
        "'Cannot re-initialize CUDA in forked subprocess' (see default_device_fork_worker); "
        "use multiprocessing_context='spawn' or drop the global default.",
        "Even with num_workers=0, default_collate under a default device gives mixed "
        "batches: images from numpy stay on the CPU, labels made by torch.tensor follow the "
        "default device.",
    ),
    frames=("torch/utils/data/sampler.py", "torch/utils/_device.py"),
    hints=("set_default_device", "randperm", "RandomSampler", "shuffle=True"),
    cpu_note="needs CUDA or MPS: on the CPU (or 'meta') the failure takes another form",
    related=("default_device_fork_worker", "mixed_devices"),
)
