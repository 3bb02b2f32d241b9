"""``torch.load`` without ``weights_only=True`` runs whatever code the checkpoint's pickle holds.

A checkpoint is a zip of tensor storages plus a pickle; unpickling may call any importable
callable the file names. Before torch 2.6 ``weights_only`` defaulted to False, so loading
a downloaded ``.pt`` file was running a program from its author. The reproduction builds
such a file here (its payload only raises, to prove it ran) and loads it both ways.
"""

from __future__ import annotations

import builtins
import io

from devcheck.pitfalls._base import Fix, Pitfall, Symptom

_PAYLOAD_MESSAGE = (
    "code from the checkpoint ran during torch.load(weights_only=False): an attacker's "
    "pickle could do anything this process can"
)


class _Payload:
    """Pickles as ``exec(<source>)``: what a malicious checkpoint carries.

    The source only raises, so the reproduction shows the execution without doing harm.
    """

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.exec, (f"raise RuntimeError({_PAYLOAD_MESSAGE!r})",))


def _malicious_checkpoint() -> io.BytesIO:
    """A real torch.save file: a plausible state dict plus one entry whose pickle runs code."""
    import torch

    state = dict(torch.nn.Linear(4, 2).state_dict())
    buf = io.BytesIO()
    torch.save({"state_dict": state, "meta": _Payload()}, buf)
    buf.seek(0)
    return buf


def reproduce(device: str) -> None:
    import torch

    # The pre-2.6 default, spelled out: the payload's exec() runs inside the unpickler.
    torch.load(_malicious_checkpoint(), map_location="cpu", weights_only=False)


def fixed(device: str) -> str:
    import pickle

    import torch

    try:
        torch.load(_malicious_checkpoint(), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = next((ln.strip() for ln in str(exc).splitlines()
                        if "Unsupported global" in ln), str(exc).splitlines()[0])
    else:
        raise RuntimeError("weights_only=True loaded a checkpoint that calls exec()")
    # A plain state dict still loads with the safe unpickler.
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(4, 2).state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, map_location="cpu", weights_only=True)
    net = torch.nn.Linear(4, 2)
    net.load_state_dict(state)
    return f"weights_only=True refused the payload ({refused[:90]}); a state_dict loaded fine"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="torch_load_weights_only",
    title="torch.load without weights_only=True executes code stored in the checkpoint",
    needs=("cpu",),
    symptoms=(
        Symptom(r"code from the checkpoint ran during torch\.load",
                "code from the checkpoint ran", f"RuntimeError: {_PAYLOAD_MESSAGE}",
                variant="the lab's harmless payload (on a real attack: no error at all)"),
        Symptom(r"Weights only load failed", "weights only load failed",
                "_pickle.UnpicklingError: Weights only load failed. This file can still be "
                "loaded, to do so you have two options, do those steps only if you trust the "
                "source of the checkpoint.", weight=0.95,
                variant="torch >= 2.6 refuses a checkpoint that holds Python objects"),
        Symptom(r"You are using `torch\.load` with `weights_only=False`",
                "you are using `torch.load` with `weights_only=false`",
                "FutureWarning: You are using `torch.load` with `weights_only=False` (the "
                "current default value), which uses the default pickle module implicitly.",
                weight=0.9, variant="torch 2.4-2.5 warning"),
    ),
    mechanism=(
        "torch.save pickles the object graph; unpickling calls the callables the pickle "
        "names (GLOBAL + REDUCE), so a crafted .pt file runs arbitrary code at "
        "torch.load. weights_only=True swaps in a restricted unpickler that accepts tensors, "
        "containers and primitive types only. Its default changed from False to True in "
        "torch 2.6: older torch (and any call passing weights_only=False) is exposed."
    ),
    source="torch/serialization.py torch.load (weights_only, _weights_only_unpickler.py "
    "Unpickler: 'Unsupported global')",
    fixes=(
        Fix("Pass weights_only=True and save state dicts, not pickled objects",
            "torch.save(model.state_dict(), path)\n"
            "state = torch.load(path, map_location='cpu', weights_only=True)\n"
            "model.load_state_dict(state)"),
        Fix("An old checkpoint from a source you trust that holds a few classes: allow them",
            "with torch.serialization.safe_globals([MyConfig]):\n"
            "    ckpt = torch.load(path, weights_only=True)"),
        Fix("Prefer safetensors for weights you download",
            "from safetensors.torch import load_file\nstate = load_file('model.safetensors')"),
    ),
    hints=("torch.load", "weights_only", "pickle", "unpickling"),
    related=("gpu_checkpoint_on_cpu",),
)
