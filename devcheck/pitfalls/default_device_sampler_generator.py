"""``set_default_device('cuda')`` + a shuffled DataLoader: CPU generator, CUDA randperm."""

from __future__ import annotations

from typing import Any

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom, accelerator


class _Recorded(Exception):
    """Stops the sampler once its randperm call has been recorded (nothing is faked)."""


def cpu_view() -> str:
    """Without an accelerator: show the mechanism for real, with 'meta' as the default.

    A recording TorchFunctionMode sees the sampler's ``torch.randperm`` call as the sampler
    made it (no device), lets it continue through set_default_device's DeviceContext (which
    torch keeps at the bottom of the mode stack) and reads where the result landed.
    RandomSampler is given the same CPU ``torch.Generator()`` it builds for itself (its own
    seeding line, ``torch.empty(()).random_().item()``, cannot run on 'meta').
    """
    import os
    import traceback

    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils.data import RandomSampler

    seen: list[str] = []

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is not torch.randperm:
                return func(*args, **kwargs)
            gen = kwargs.get("generator")
            where = next((f"{f.filename.replace(os.sep, '/').split('site-packages/')[-1]}"
                          f":{f.lineno} in {f.name}" for f in traceback.extract_stack()
                          if f.filename.replace(os.sep, "/").endswith(
                              "torch/utils/data/sampler.py")), "torch's sampler")
            call = (f"torch.randperm({args[0] if args else ''}, generator=<Generator on "
                    f"{getattr(gen, 'device', None)}>, device={kwargs.get('device')!r})")
            try:
                out = func(*args, **kwargs)  # on through the default-device mode
                landed = f"which the default-device mode ran on {out.device}"
            except Exception as exc:  # a real error from torch is reported as it is
                landed = f"which raised {type(exc).__name__}: {exc}"
            seen.append(f"{where} called {call}, {landed}, with a generator on "
                        f"{getattr(gen, 'device', None)}")
            raise _Recorded

    torch.set_default_device("meta")
    try:
        with Recorder():
            next(iter(RandomSampler(range(10), generator=torch.Generator())))
    except _Recorded:
        pass
    finally:
        torch.set_default_device(None)
    if not seen:
        return "RandomSampler did not call torch.randperm on this torch version"
    return (f"{seen[0]}, in the main process (pid {os.getpid()}). On CUDA, randperm "
            "checks that the generator is a CUDA one and raises \"Expected a 'cuda' device "
            "type for generator but found 'cpu'\"")


def reproduce(device: str) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    if device.split(":")[0] not in ("cuda", "mps"):
        raise Skip("the CUDA error itself needs a GPU (none used here), so it is not shown. "
                   "What runs here, for real, with 'meta' standing in for 'cuda' under "
                   f"torch.set_default_device: {cpu_view()}. See the error itself with "
                   "--device cuda (or mps) on a machine that has one.")
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
    needs=("cuda", "mps", "cpu"),
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
            r"Expected a 'cpu' device type for generator but found '(?P<device>cuda|mps|xpu)",
            "device type for generator",
            "RuntimeError: Expected a 'cpu' device type for generator but found 'cuda'",
            weight=0.9,
            variant="reverse: an accelerator generator with a CPU randperm",
            mechanism=(
                "The reverse case: a {device} torch.Generator reached a randperm that runs on "
                "the CPU. Usually generator=torch.Generator(device='{device}') was passed to "
                "a DataLoader, random_split or a sampler (often copied as the fix for the "
                "forward error) while no default device is set, or the loader is iterated "
                "under `with torch.device('cpu')`, in another thread, or after "
                "set_default_device was removed: torch.randperm then runs on the CPU and "
                "rejects the {device} generator. Like the forward case it happens in the "
                "main process, whatever num_workers is."
            ),
            fixes=(
                Fix("Use a CPU generator (the default): drop the generator argument, or "
                    "seed a CPU one",
                    "DataLoader(ds, batch_size=256, shuffle=True)   # no generator=\n"
                    "# reproducible: generator=torch.Generator().manual_seed(0)\n"
                    "train, val = random_split(ds, [0.9, 0.1], "
                    "generator=torch.Generator().manual_seed(0))"),
                Fix("Keep devices explicit instead of a global default (the book's W and b "
                    "get device=, each batch is moved)",
                    "device = torch.device('{device}')\n"
                    "W = torch.normal(0, 0.01, size=(784, 10), device=device, "
                    "requires_grad=True)\n"
                    "b = torch.zeros(10, device=device, requires_grad=True)\n"
                    "for X, y in train_iter:\n    X, y = X.to(device), y.to(device)"),
            ),
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
            "Don't set a global default device: create the book's W and b on the device "
            "(its net is a function over them, so there is no net.to(device)) and move "
            "each batch; the whole script: examples/learner_softmax_fixed.py",
            "device = torch.device('{device}')   # no torch.set_default_device(...)\n"
            "W = torch.normal(0, 0.01, size=(784, 10), device=device, requires_grad=True)\n"
            "b = torch.zeros(10, device=device, requires_grad=True)\n"
            "for X, y in train_iter:\n    X, y = X.to(device), y.to(device)",
        ),
        Fix(
            "With an nn.Module model: move it once (or build it under a device scope), and "
            "move each batch",
            "net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to(device)\n"
            "# or: with torch.device('{device}'): net = Net()\n"
            "for X, y in train_iter:\n    X, y = X.to(device), y.to(device)",
        ),
        Fix(
            "If you keep the global default: give the DataLoader a generator on that device "
            "(then torch.normal/numpy tensors still stay on the CPU: see "
            "default_device_not_applied)",
            "DataLoader(ds, batch_size=256, shuffle=True,\n"
            "           generator=torch.Generator(device='{device}'))",
        ),
        Fix(
            "Or iterate the loader under a CPU device scope (around the iteration, not the "
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
    cpu_note="the error needs CUDA or MPS; on the CPU, `pitfalls run` records the mechanism "
    "for real with 'meta' as the default device (the sampler's randperm gets device='meta' "
    "and a CPU generator) and reports it as skipped: no CUDA error is ever faked",
    related=("default_device_fork_worker", "mixed_devices"),
)
