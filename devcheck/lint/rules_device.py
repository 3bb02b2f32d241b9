"""Rules about where tensors live: ``.to()``, availability checks, hard-coded CUDA."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from devcheck.lint._types import Edit, Hit, Rule
from devcheck.lint.scope import (
    TENSOR_NAME,
    Context,
    literal_is,
    literal_str,
)

DATALOADER = "torch.utils.data.DataLoader"
_CHECKS = frozenset({
    "torch.cuda.is_available", "torch.cuda.device_count", "torch.backends.mps.is_available",
    "torch.accelerator.is_available", "torch.accelerator.current_accelerator",
    "torch.xpu.is_available", "d2l.try_gpu", "d2l.try_all_gpus", "torch.cuda.is_initialized",
    # devcheck's own probes answer the same question (softmax asks through them)
    "devcheck.probe.devices.cuda_available", "devcheck.probe.devices.cuda_device_count",
    "devcheck.probe.devices.mps_available",
})

_CHECK_NAMES = frozenset(q.rsplit(".", 1)[1] for q in _CHECKS)


def is_cpu(node: ast.AST | None, ctx: Context) -> bool:
    """Is this device expression certainly the CPU (``'cpu'``, ``torch.device('cpu')``)?"""
    if literal_is(node, None):
        return True  # set_default_device(None) restores the CPU default
    text = literal_str(node)
    if text is None and isinstance(node, ast.Call) and ctx.qual(node) == "torch.device":
        text = literal_str(node.args[0]) if node.args else literal_str(ctx.kw(node, "type"))
    return text is not None and text.split(":")[0] == "cpu"


# Containers whose .to() moves them in place and returns self (Hugging Face BatchEncoding,
# PyG Data): a discarded .to() on these names is fine unless we know they are tensors.
_CONTAINER_NAMES = frozenset({"batch", "data", "sample", "samples", "inputs", "input"})


def _is_tensor_receiver(ctx: Context, expr: ast.expr) -> bool:
    """Known (or conventionally named) to be a tensor, and not a model."""
    if ctx.is_module_expr(expr):
        return False
    if isinstance(expr, ast.Attribute):
        return bool(TENSOR_NAME.match(expr.attr)) and expr.attr not in _CONTAINER_NAMES
    if not isinstance(expr, ast.Name):
        return False
    unknown = False
    for v in ctx.bindings(expr.id, expr):
        if isinstance(v, ast.Call):
            q = ctx.qual(v) or ""
            if q.startswith("torch.") and not q.startswith(("torch.nn.", "torch.optim.",
                                                            "torch.utils.")):
                return True
            unknown = True  # tokenizer(...), make_batch(...): maybe not a tensor
        elif isinstance(v, (ast.For, ast.AsyncFor, ast.comprehension)):
            if isinstance(v.target, (ast.Tuple, ast.List)):
                return True  # for X, y in loader: the parts of a batch
            unknown = unknown or expr.id in _CONTAINER_NAMES
        elif not isinstance(v, ast.arg):
            unknown = True
    return not unknown and bool(TENSOR_NAME.match(expr.id))


def _to_hits(ctx: Context) -> Iterator[Hit]:
    for stmt in ctx.nodes:
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
            continue
        call = stmt.value
        f = call.func
        if not (isinstance(f, ast.Attribute) and f.attr in ("to", "cuda", "cpu")):
            continue
        recv = f.value
        if not _is_tensor_receiver(ctx, recv):
            continue
        name = ctx.segment(recv)
        edits: tuple[Edit, ...] = ()
        if isinstance(recv, (ast.Name, ast.Attribute)) and "\n" not in name and \
                ctx.segment(recv) == ast.unparse(recv):
            line, col = ctx.start_of(stmt)
            edits = (Edit(line, col, line, col, f"{name} = "),)
        yield ctx.hit(call, (
            f"{ctx.segment(call)} is discarded: Tensor.{f.attr}() returns a new tensor and "
            f"leaves {name} where it was (only nn.Module.{f.attr}() moves in place)"),
            f"assign it: {name} = {ctx.segment(call)}", edits)


TENSOR_TO_NOT_INPLACE = Rule(
    id="tensor_to_not_inplace",
    summary="a discarded x.to(device) / x.cuda() on a tensor",
    why="Tensor.to() returns a copy (or the same tensor when nothing changes) and never "
    "moves the original; Module.to() moves a model in place. On its own line, x.to(device) "
    "does nothing and the next op mixes devices.",
    example="for X, y in train_iter:\n    X.to(device)\n    y.to(device)\n    l = loss(net(X), y)",
    fixed="for X, y in train_iter:\n    X, y = X.to(device), y.to(device)\n"
    "    l = loss(net(X), y)",
    check=_to_hits,
    covers=("mixed_devices",),
    autofix="turns `x.to(d)` into `x = x.to(d)`",
    needs=(".to(", ".cuda(", ".cpu("),
)


def availability_checks(ctx: Context) -> list[ast.AST]:
    """Every reference to torch.cuda.is_available() and friends (cached per module)."""
    found = ctx.memo.get("availability_checks")
    if found is None:
        found = ctx.memo["availability_checks"] = [
            n for n in ctx.nodes if isinstance(n, ast.Attribute) and n.attr in _CHECK_NAMES
            and ctx.qual(n) in _CHECKS] + [
            n for n in ctx.nodes if isinstance(n, ast.Name) and n.id in _CHECK_NAMES
            and ctx.qual(n) in _CHECKS]
    return found


def _moves_anything(ctx: Context) -> bool:
    for call in ctx.calls:
        f = call.func
        if isinstance(f, ast.Attribute) and f.attr in ("to", "cuda", "prepare", "setup",
                                                       "to_device"):
            return True
        if ctx.qual(call) == "torch.set_default_device" and call.args and \
                not is_cpu(call.args[0], ctx):
            return True
        for k in call.keywords:
            if k.arg in ("device", "map_location", "accelerator", "devices", "device_map",
                         "device_ids"):
                return True
        for a in [*call.args, *(k.value for k in call.keywords)]:
            if isinstance(a, ast.Name) and "dev" in a.id.lower():
                return True
    return False


def _has_work(ctx: Context) -> bool:
    """Builds a model, a DataLoader or calls backward(): there is something to move."""
    return any(ctx.is_module_call(c) or ctx.qual(c) == DATALOADER or (
        isinstance(c.func, ast.Attribute) and c.func.attr == "backward") for c in ctx.calls)


def _unused_hits(ctx: Context) -> Iterator[Hit]:
    checks = availability_checks(ctx)
    if not checks or _moves_anything(ctx) or not _has_work(ctx):
        return
    first = min(checks, key=lambda n: (n.lineno, n.col_offset))  # type: ignore[attr-defined]
    parent = ctx.parent_of(first)
    if isinstance(parent, ast.Call) and parent.func is first:
        first = parent  # report the call: torch.cuda.is_available()
    claim = next((text for c in ctx.calls if isinstance(c.func, ast.Name)
                  and c.func.id == "print" and c.args
                  and (text := literal_str(c.args[0])) and "using the gpu" in text.lower()), None)
    said = f" and it prints {claim!r}," if claim else ""
    yield ctx.hit(first, (
        f"{ctx.segment(first)} is checked{said} but nothing in this file moves a model or a "
        "tensor to a device (no .to(device), .cuda(), device=): everything still runs on the "
        "CPU"),
        "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu'); "
        "net.to(device); X, y = X.to(device), y.to(device)")


CUDA_AVAILABLE_BUT_UNUSED = Rule(
    id="cuda_available_but_unused",
    summary="torch.cuda.is_available() is checked (\"PyTorch is using the GPU\") but nothing "
    "is moved to it",
    why="is_available() only says a GPU could be used. Parameters and batches stay on the "
    "CPU until something puts them on the GPU: the script prints 'using the GPU' and trains "
    "on the CPU.",
    example="import torch\nfrom torch import nn\n\nif torch.cuda.is_available():\n"
    "    print('CUDA is available! PyTorch is using the GPU.')\n"
    "net = nn.Linear(784, 10)\nfor X, y in train_iter:\n    l = loss(net(X), y)",
    fixed="import torch\nfrom torch import nn\n\n"
    "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
    "net = nn.Linear(784, 10).to(device)\nfor X, y in train_iter:\n"
    "    X, y = X.to(device), y.to(device)\n    l = loss(net(X), y)",
    check=_unused_hits,
    needs=("is_available", "device_count", "try_gpu",
           "try_all_gpus", "current_accelerator", "is_initialized"),
)


def _hard_coded_cuda(ctx: Context) -> Iterator[ast.AST]:
    for call in ctx.calls:
        f = call.func
        if isinstance(f, ast.Attribute) and f.attr == "cuda" and not (
                ctx.qual(call) or "").startswith("torch.cuda"):
            yield call
            continue
        q = ctx.qual(call) or ""
        if (isinstance(f, ast.Attribute) and f.attr == "to") or q in (
                "torch.device", "torch.set_default_device"):
            values = [*call.args[:1], *(k.value for k in call.keywords if k.arg == "device")]
        elif q.startswith("torch."):  # device= of torch's own factories, not any dataclass
            values = [k.value for k in call.keywords if k.arg == "device"]
        else:
            continue
        for v in values:
            text = literal_str(v)
            if text is not None and text.split(":")[0] == "cuda":
                yield v


# Test suites gate GPU tests with markers instead of is_available() in the test body.
_GATES = ("requires_cuda", "requires_gpu", "mark.gpu", "skipif", "RunIf", "skip_if_no_cuda")


def _under_cuda_branch(ctx: Context, node: ast.AST) -> bool:
    """Inside ``if device.type == 'cuda':`` (or an ``x if use_gpu else y``): a choice made."""
    for a in ctx.ancestors(node):
        if isinstance(a, (ast.If, ast.IfExp, ast.While)) and any(
                w in ctx.segment(a.test).lower() for w in ("cuda", "gpu", "accelerator")):
            return True
    return False


def _fallback_hits(ctx: Context) -> Iterator[Hit]:
    if availability_checks(ctx) or any(g in ctx.source.text for g in _GATES):
        return
    places = [n for n in _hard_coded_cuda(ctx) if not _under_cuda_branch(ctx, n)]
    if not places:
        return
    first = places[0]
    more = f" (and {len(places) - 1} more in this file)" if len(places) > 1 else ""
    yield ctx.hit(first, (
        f"{ctx.segment(first)} hard-codes CUDA{more} and nothing here checks "
        "torch.cuda.is_available(): on a CPU-only machine or CI runner this fails with "
        "'Torch not compiled with CUDA enabled' / 'Found no NVIDIA driver'"),
        "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu') and use "
        ".to(device) / device=device")


NO_CPU_FALLBACK = Rule(
    id="no_cpu_fallback",
    summary="hard-coded 'cuda' / .cuda() with no availability check anywhere in the file",
    why="Code that names CUDA unconditionally cannot run on a laptop without an NVIDIA GPU, "
    "a Mac, or the CPU runners most CI uses; one device variable chosen at start-up runs "
    "everywhere.",
    example="net = Net().cuda()\nX = X.to('cuda')",
    fixed="import torch\n\ndevice = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
    "net = Net().to(device)\nX = X.to(device)",
    check=_fallback_hits,
    needs=("cuda",),
)


def _pin_hits(ctx: Context) -> Iterator[Hit]:
    if availability_checks(ctx):
        return
    for call in ctx.calls_to(DATALOADER):
        pin = ctx.kw(call, "pin_memory")
        if literal_is(pin, True):
            assert pin is not None
            yield ctx.hit(pin, (
                "DataLoader(pin_memory=True) with no accelerator check in this file: on a "
                "machine without a GPU torch warns \"'pin_memory' argument is set as true "
                "but no accelerator is found\" and pins nothing"),
                "pin_memory=torch.cuda.is_available() (or pin only when device.type == "
                "'cuda')")


PIN_MEMORY_WITHOUT_ACCELERATOR = Rule(
    id="pin_memory_without_accelerator",
    summary="DataLoader(pin_memory=True) with no accelerator check",
    why="Pinned (page-locked) host memory only speeds up copies to a GPU. Without one, "
    "torch warns on every loader and the pinning is wasted work.",
    example="from torch.utils.data import DataLoader\n\n"
    "loader = DataLoader(ds, batch_size=64, pin_memory=True)",
    fixed="import torch\nfrom torch.utils.data import DataLoader\n\n"
    "loader = DataLoader(ds, batch_size=64, pin_memory=torch.cuda.is_available())",
    check=_pin_hits,
    needs=("pin_memory",),
)

RULES = (TENSOR_TO_NOT_INPLACE, CUDA_AVAILABLE_BUT_UNUSED, NO_CPU_FALLBACK,
         PIN_MEMORY_WITHOUT_ACCELERATOR)
