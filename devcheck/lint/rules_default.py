"""Rules about the global default device (``torch.set_default_device``) and what it misses.

"Reachable" is a light dataflow: a DataLoader or factory counts when it runs after a
non-CPU ``set_default_device`` in the same scope, or inside a function called after it
(transitively), or inside a ``with torch.device('cuda'):`` block.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from devcheck.lint._types import Hit, Rule
from devcheck.lint.rules_device import DATALOADER, is_cpu
from devcheck.lint.scope import Context, literal_is, literal_str


def device_text(node: ast.AST | None, ctx: Context) -> str:
    if node is None:
        return "?"
    if isinstance(node, ast.Call) and ctx.qual(node) == "torch.device" and node.args:
        node = node.args[0]
    text = literal_str(node)
    return repr(text) if text is not None else ctx.segment(node)


def default_devices(ctx: Context) -> list[ast.Call]:
    """``torch.set_default_device(X)`` calls whose X is not certainly the CPU."""
    if "default_devices" not in ctx.memo:
        ctx.memo["default_devices"] = [c for c in ctx.calls_to("torch.set_default_device")
                                       if c.args and not is_cpu(c.args[0], ctx)]
    found: list[ast.Call] = ctx.memo["default_devices"]
    return found


def _enclosing_functions(ctx: Context, node: ast.AST) -> list[str]:
    return [a.name for a in ctx.ancestors(node)
            if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _called_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _live_after(ctx: Context, point: ast.AST) -> set[str]:
    """Functions that may run after ``point``: called later in its scope, and what they call."""
    key = f"live_after:{id(point)}"
    if key not in ctx.memo:
        ctx.memo[key] = _compute_live_after(ctx, point)
    live: set[str] = ctx.memo[key]
    return live


def _compute_live_after(ctx: Context, point: ast.AST) -> set[str]:
    scope = ctx.scope_of(point)
    pos = (point.lineno, point.col_offset)  # type: ignore[attr-defined]
    live = {n for c in ctx.calls if ctx.scope_of(c) is scope and (c.lineno, c.col_offset) > pos
            and (n := _called_name(c)) is not None}
    todo = list(live)
    while todo:
        for fn in ctx.functions.get(todo.pop(), []):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and (n := _called_name(node)) and n not in live:
                    live.add(n)
                    todo.append(n)
    return live


def _in_force_from(ctx: Context, setter: ast.Call) -> list[ast.AST]:
    """Where the default device takes effect: the call itself and, when it sits in a
    function (``def setup(): torch.set_default_device('cuda')``), every call of it."""
    points: list[ast.AST] = [setter]
    names = _enclosing_functions(ctx, setter)
    seen = set(names)
    while names:
        name = names.pop()
        for c in ctx.calls:
            if _called_name(c) == name:
                points.append(c)
                for outer in _enclosing_functions(ctx, c):
                    if outer not in seen:
                        seen.add(outer)
                        names.append(outer)
    return points


def reachable_setter(ctx: Context, node: ast.AST) -> ast.Call | None:
    """The ``set_default_device`` call in force when ``node`` runs, if any could be."""
    where = (node.lineno, node.col_offset)  # type: ignore[attr-defined]
    for setter in default_devices(ctx):
        for point in _in_force_from(ctx, setter):
            if ctx.scope_of(node) is ctx.scope_of(point) and where > (
                    point.lineno, point.col_offset):  # type: ignore[attr-defined]
                return setter
            if set(_enclosing_functions(ctx, node)) & _live_after(ctx, point):
                return setter
    return None


def _device_with(ctx: Context, node: ast.AST) -> ast.AST | None:
    """A ``with torch.device('cuda'):`` block around ``node`` (same mode, scoped)."""
    for a in ctx.ancestors(node):
        if isinstance(a, (ast.With, ast.AsyncWith)):
            for item in a.items:
                e = item.context_expr
                if isinstance(e, ast.Call) and ctx.qual(e) == "torch.device" and e.args and \
                        not is_cpu(e, ctx):
                    return e
    return None


def _generator_missing(ctx: Context, call: ast.Call, position: int | None) -> bool:
    gen = ctx.kw(call, "generator")
    if gen is None and position is not None and len(call.args) > position:
        gen = call.args[position]
    if gen is None:
        return not ctx.has_star_kwargs(call)
    return isinstance(gen, ast.Call) and ctx.qual(gen) == "torch.Generator" and not (
        gen.args or ctx.kw(gen, "device"))


def _sampler_hits(ctx: Context) -> Iterator[Hit]:
    if not default_devices(ctx):
        return
    for call in ctx.calls:
        q = ctx.qual(call)
        what = None
        if q == DATALOADER:
            shuffle = ctx.arg(call, "shuffle", 2)
            if shuffle is None or any(literal_is(shuffle, v) for v in (False, None)) or (
                    isinstance(shuffle, ast.Constant) and not shuffle.value):
                continue
            if ctx.kw(call, "sampler") or ctx.kw(call, "batch_sampler") or \
                    not _generator_missing(ctx, call, None):
                continue
            what = f"DataLoader(shuffle={ctx.segment(shuffle)})"
        elif q == "torch.utils.data.RandomSampler" and _generator_missing(ctx, call, 3):
            what = "RandomSampler(...) without a generator"
        elif q == "torch.utils.data.random_split" and _generator_missing(ctx, call, 2):
            what = "random_split(...) without a generator"
        elif q == "torch.utils.data.DistributedSampler" and not literal_is(
                ctx.arg(call, "shuffle", 3), False):
            what = "DistributedSampler (it builds a CPU torch.Generator())"
        if what is None:
            continue
        setter = reachable_setter(ctx, call)
        if setter is None:
            continue
        dev = device_text(setter.args[0], ctx)
        yield ctx.hit(call, (
            f"{what} runs after torch.set_default_device({dev}) ({ctx.where(setter.lineno)}): "
            f"its torch.randperm is made on {dev} but fed a CPU generator, so the first "
            "batch raises \"Expected a 'cuda' device type for generator but found 'cpu'\""),
            "drop set_default_device and move model and batches with .to(device); or pass "
            "generator=torch.Generator(device=device)")


DEFAULT_DEVICE_SAMPLER_GENERATOR = Rule(
    id="default_device_sampler_generator",
    summary="a shuffled DataLoader (RandomSampler, random_split) after "
    "set_default_device('cuda')",
    why="set_default_device('cuda') makes the sampler's torch.randperm a CUDA call, but "
    "RandomSampler builds a CPU torch.Generator(); the CUDA kernel rejects it in the main "
    "process, whatever num_workers is.",
    example="import torch\nfrom torch.utils.data import DataLoader\n\n"
    "torch.set_default_device('cuda')\n"
    "train_iter = DataLoader(train_set, batch_size=256, shuffle=True)",
    fixed="import torch\nfrom torch.utils.data import DataLoader\n\n"
    "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
    "train_iter = DataLoader(train_set, batch_size=256, shuffle=True)\n"
    "for X, y in train_iter:\n    X, y = X.to(device), y.to(device)",
    check=_sampler_hits,
    needs=("set_default_device",),
)


def _not_applied_hits(ctx: Context) -> Iterator[Hit]:
    setters = default_devices(ctx)
    for call in ctx.calls:
        q = ctx.qual(call)
        if q == "torch.normal" and ctx.kw(call, "size") is not None and \
                ctx.kw(call, "device") is None:
            what, made = "torch.normal(..., size=...)", "this tensor is created on the CPU"
        elif q == "torch.from_numpy":
            what, made = "torch.from_numpy(...)", "this tensor stays on the CPU (it shares " \
                "the array's memory)"
        elif q in ("torchvision.transforms.ToTensor", "torchvision.transforms.v2.ToTensor"):
            what, made = "transforms.ToTensor()", "every image it makes is a CPU tensor"
        else:
            continue
        scoped = _device_with(ctx, call)
        setter = reachable_setter(ctx, call) if setters and scoped is None else None
        if scoped is not None:
            where = f"inside `with {ctx.segment(scoped)}:`"
        elif setter is not None:
            where = (f"after torch.set_default_device({device_text(setter.args[0], ctx)}) "
                     f"({ctx.where(setter.lineno)})")
        else:
            continue
        yield ctx.hit(call, (
            f"{what} ignores the default device {where}: {made} while torch.zeros/"
            "torch.tensor follow the default, so the first op mixing them raises "
            "'Expected all tensors to be on the same device'"),
            "create tensors with an explicit device= (torch.normal(..., device=device)) and "
            "move each batch with X.to(device); do not rely on set_default_device")


DEFAULT_DEVICE_NOT_APPLIED = Rule(
    id="default_device_not_applied",
    summary="torch.normal(size=...), torch.from_numpy or ToTensor under a non-CPU default "
    "device",
    why="set_default_device only rewrites the factories listed in torch.utils._device "
    "(zeros, ones, empty, rand, randn, tensor, arange, ...). torch.normal(mean, std, size=) "
    "is not among them, and from_numpy / ToTensor make CPU tensors by design: half the "
    "model ends up on the GPU, half on the CPU.",
    example="import torch\n\ntorch.set_default_device('cuda')\n"
    "W = torch.normal(0, 0.01, size=(784, 10), requires_grad=True)\n"
    "b = torch.zeros(10, requires_grad=True)",
    fixed="import torch\n\n"
    "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
    "W = torch.normal(0, 0.01, size=(784, 10), device=device, requires_grad=True)\n"
    "b = torch.zeros(10, device=device, requires_grad=True)",
    check=_not_applied_hits,
    covers=("mixed_devices",),
    needs=("set_default_device", "device("),
)



RULES = (DEFAULT_DEVICE_SAMPLER_GENERATOR, DEFAULT_DEVICE_NOT_APPLIED)
