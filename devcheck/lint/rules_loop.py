"""Rules about training loops and numerics: host syncs per step, softmax, DDP epochs."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from devcheck.lint._types import Hit, Rule
from devcheck.lint.scope import TENSOR_NAME, Context, literal_is, walk_scope

_STEPPER = re.compile(r"optim|^opt(?:_|$)|updater|scaler|trainer|^sgd$", re.I)
_GUARD = re.compile(r"%|\blog|interval|every|verbose|print|debug|display|report", re.I)
_TENSORISH_NAME = re.compile(r"loss|^l$|^acc|correct|err|grad|norm", re.I)
_TENSOR_METHODS = frozenset({
    "sum", "mean", "max", "min", "norm", "std", "var", "prod", "amax", "amin", "argmax",
    "argmin", "dot", "abs", "detach", "float", "double", "type", "eq", "ne", "squeeze",
    "exp", "log", "sqrt", "clone", "numpy", "cpu", "backward",
})
_SYNC_BUILTINS = ("float", "int", "bool")


def _is_step_call(ctx: Context, call: ast.Call) -> bool:
    f = call.func
    if isinstance(f, ast.Attribute):
        if f.attr == "backward":
            return True
        if f.attr == "step":
            recv = f.value
            text = ctx.segment(recv)
            if "sched" in text.lower():
                return False
            if _STEPPER.search(text.rsplit(".", 1)[-1]):
                return True
            if isinstance(recv, ast.Name):
                return any(isinstance(v, ast.Call) and (ctx.qual(v) or "").startswith(
                    "torch.optim.") for v in ctx.bindings(recv.id, recv))
    if isinstance(f, ast.Name) and _STEPPER.search(f.id):
        return True
    return (ctx.qual(call) or "") == "d2l.sgd"


def is_training_loop(ctx: Context, loop: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and _is_step_call(ctx, n) for n in walk_scope(loop))


def _tensorish(ctx: Context, expr: ast.AST, depth: int = 0) -> bool:
    """Probably a tensor: a tensor method's result, a torch call, a loss-like name."""
    if depth > 3:
        return False
    if isinstance(expr, ast.Call):
        f = expr.func
        if isinstance(f, ast.Attribute) and f.attr in _TENSOR_METHODS:
            return True
        return (ctx.qual(expr) or "").startswith("torch.")
    if isinstance(expr, ast.Subscript):
        return _tensorish(ctx, expr.value, depth + 1)
    if isinstance(expr, ast.Name):
        if TENSOR_NAME.match(expr.id) or _TENSORISH_NAME.search(expr.id):
            return True
        for v in ctx.bindings(expr.id, expr):
            if isinstance(v, (ast.For, ast.AsyncFor, ast.comprehension)):
                it = v.iter
                fn = it.func.id if isinstance(it, ast.Call) and isinstance(
                    it.func, ast.Name) else ""
                first = v.target.elts[0] if isinstance(v.target, ast.Tuple) and \
                    v.target.elts else None
                if fn == "range" or (fn == "enumerate" and isinstance(first, ast.Name)
                                     and first.id == expr.id):
                    continue  # a step counter, not a tensor
                return True
            elif isinstance(v, ast.Call) and not (isinstance(v.func, ast.Name) and
                                                  v.func.id in ("len", "range", "int")):
                if _tensorish(ctx, v, depth + 1) or isinstance(v.func, ast.Name):
                    return True
    return False


def _direct_sync(ctx: Context, call: ast.Call) -> str | None:
    """What makes this call a host sync (``.item()``, ``float(loss)``...), or None."""
    f = call.func
    if isinstance(f, ast.Attribute) and not call.args and not call.keywords:
        if f.attr in ("item", "tolist") or (
                f.attr == "cpu" and not ctx.is_module_expr(f.value)):
            return ctx.segment(call)
    if isinstance(f, ast.Name) and f.id in _SYNC_BUILTINS and len(call.args) == 1 and \
            not ctx.is_bound(f.id) and _tensorish(ctx, call.args[0]):
        return f"{f.id}({ctx.segment(call.args[0])})"
    return None


def _sync_in(ctx: Context, fn: ast.AST) -> tuple[str, int] | None:
    key = f"sync_in:{id(fn)}"
    if key not in ctx.memo:
        ctx.memo[key] = next(((what, node.lineno) for node in walk_scope(fn)
                              if isinstance(node, ast.Call)
                              and (what := _direct_sync(ctx, node))), None)
    found: tuple[str, int] | None = ctx.memo[key]
    return found


def _called_sync(ctx: Context, call: ast.Call) -> str | None:
    """A call into a function or method of this file that syncs (d2l's Accumulator.add)."""
    f = call.func
    targets: list[tuple[str, ast.AST]] = []
    if isinstance(f, ast.Name):
        targets = [(f.id, fn) for fn in ctx.functions.get(f.id, [])
                   if isinstance(ctx.parent_of(fn), ast.Module)]
    elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        for v in ctx.bindings(f.value.id, f.value):
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and \
                    v.func.id in ctx.classes:
                cls = ctx.classes[v.func.id]
                targets += [(f"{cls.name}.{m.name}", m) for m in cls.body
                            if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                            and m.name == f.attr]
    for name, fn in targets:
        found = _sync_in(ctx, fn)
        if found:
            return f"{name} runs {found[0]} at {ctx.where(found[1])}"
    return None


def _guarded(ctx: Context, node: ast.AST, loop: ast.AST) -> bool:
    for a in ctx.ancestors(node):
        if a is loop:
            return False
        if isinstance(a, ast.If) and _GUARD.search(ctx.segment(a.test)):
            return True
    return False


def _sync_hits(ctx: Context) -> Iterator[Hit]:
    loops = [n for n in ctx.nodes if isinstance(n, (ast.For, ast.AsyncFor, ast.While))]
    seen: set[int] = set()
    for loop in loops:
        if not is_training_loop(ctx, loop):
            continue
        # One finding per statement, listing its syncs (d2l's metric.add line has three).
        by_stmt: dict[int, tuple[ast.stmt, list[tuple[ast.Call, str]]]] = {}
        for node in walk_scope(loop):
            if not isinstance(node, ast.Call) or id(node) in seen or _guarded(ctx, node, loop):
                continue
            what = _direct_sync(ctx, node)
            if what is None and (via := _called_sync(ctx, node)):
                what = f"{ctx.segment(node.func)}(...) ({via})"
            stmt = ctx.statement_of(node)
            if what is None or stmt is None:
                continue
            seen.add(id(node))
            by_stmt.setdefault(id(stmt), (stmt, []))[1].append((node, what))
        for _, syncs in sorted(by_stmt.values(), key=lambda v: v[0].lineno):
            syncs.sort(key=lambda s: (s[0].lineno, s[0].col_offset))
            n = len(syncs)
            count = f": {n} host syncs" if n > 1 else ""
            yield ctx.hit(syncs[0][0], (
                f"{'; '.join(w for _, w in syncs)} in a training loop (it calls "
                f"backward()/step(), {ctx.where(loop.lineno)}){count}: the host waits for the GPU "
                "at every step"),
                "accumulate on the device (total += loss.detach()) and call .item() once per "
                "epoch, or only under `if step % log_every == 0:`")


HIDDEN_HOST_SYNC = Rule(
    id="hidden_host_sync",
    summary=".item() / float(t) / .tolist() / .cpu() on every step of a training loop",
    why="CUDA runs kernels asynchronously; reading a value on the host waits until every "
    "queued kernel has finished. Once per step, the CPU can no longer run ahead and the GPU "
    "idles between steps (d2l's Accumulator.add(float(l.sum()), ...)).",
    example="for X, y in train_iter:\n    l = loss(net(X), y)\n    l.mean().backward()\n"
    "    updater.step()\n    total += float(l.sum())",
    fixed="total = torch.zeros((), device=device)\nfor X, y in train_iter:\n"
    "    l = loss(net(X), y)\n    l.mean().backward()\n    updater.step()\n"
    "    total += l.detach().sum()\nprint(total.item())",
    check=_sync_hits,
    needs=("backward", "step", "sgd"),
)

# ---------------------------------------------------------------------- unstable softmax

_EXP = ("torch.exp", "numpy.exp", "torch.special.exp")
_SHIFT = re.compile(r"\b(?:max|amax|logsumexp)\b")


def _exp_arg(ctx: Context, expr: ast.AST, depth: int = 0) -> ast.AST | None:
    """If ``expr`` is exp(A) (or a name bound to it), A."""
    if depth > 3:
        return None
    if isinstance(expr, ast.Call):
        if ctx.qual(expr) in _EXP and expr.args:
            return expr.args[0]
        f = expr.func
        if isinstance(f, ast.Attribute) and f.attr == "exp" and not expr.args and \
                ctx.qual(expr) is None:
            return f.value
    if isinstance(expr, ast.Name):
        vals = [v for v in ctx.bindings(expr.id, expr) if isinstance(v, ast.expr)]
        if len(vals) == 1:
            return _exp_arg(ctx, vals[0], depth + 1)
    return None


def _sum_of_exp(ctx: Context, expr: ast.AST, depth: int = 0) -> ast.AST | None:
    if depth > 3:
        return None
    if isinstance(expr, ast.Call):
        f = expr.func
        if isinstance(f, ast.Attribute) and f.attr == "sum" and ctx.qual(expr) is None:
            return _exp_arg(ctx, f.value)
        if ctx.qual(expr) in ("torch.sum", "numpy.sum") and expr.args:
            return _exp_arg(ctx, expr.args[0])
    if isinstance(expr, ast.Name):
        vals = [v for v in ctx.bindings(expr.id, expr) if isinstance(v, ast.expr)]
        if len(vals) == 1:
            return _sum_of_exp(ctx, vals[0], depth + 1)
    return None


def _shifted(ctx: Context, arg: ast.AST) -> bool:
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Sub):
        return bool(_SHIFT.search(ctx.segment(arg.right))) or isinstance(arg.right, ast.Name)
    if isinstance(arg, ast.Name):
        return any(isinstance(v, ast.expr) and _shifted(ctx, v)
                   for v in ctx.bindings(arg.id, arg))
    return False


def _softmax_hits(ctx: Context) -> Iterator[Hit]:
    for node in ctx.nodes:
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)):
            continue
        top = _exp_arg(ctx, node.left)
        bottom = _sum_of_exp(ctx, node.right)
        if top is None or bottom is None or _shifted(ctx, top):
            continue
        yield ctx.hit(node, (
            f"{ctx.segment(node)} is exp(X) / exp(X).sum() without subtracting the row max: "
            "exp overflows to inf for logits above ~88 (float32) and the loss becomes nan"),
            "X = X - X.max(dim=1, keepdim=True).values before exp, or use "
            "torch.softmax / F.cross_entropy on the logits")


UNSTABLE_SOFTMAX = Rule(
    id="unstable_softmax",
    summary="softmax written as exp(X) / exp(X).sum() without the max shift",
    why="exp(89) is inf in float32, and inf / inf is nan; an underflowed probability "
    "gives log(0) = -inf in the cross-entropy. Subtracting the row max changes nothing "
    "mathematically and keeps every exp in range.",
    example="import torch\n\n\ndef softmax(X):\n    X_exp = torch.exp(X)\n"
    "    partition = X_exp.sum(1, keepdim=True)\n    return X_exp / partition",
    fixed="import torch\n\n\ndef softmax(X):\n"
    "    X_exp = torch.exp(X - X.max(dim=1, keepdim=True).values)\n"
    "    partition = X_exp.sum(1, keepdim=True)\n    return X_exp / partition",
    check=_softmax_hits,
    needs=("exp",),
)

# ---------------------------------------------------------------------- DDP set_epoch


def _is_epoch_loop(ctx: Context, loop: ast.AST) -> bool:
    """``for epoch in ...`` or ``for _ in range(..., num_epochs)``."""
    if not isinstance(loop, (ast.For, ast.AsyncFor)):
        return False
    if any(isinstance(n, ast.Name) and "epoch" in n.id.lower() for n in ast.walk(loop.target)):
        return True
    it = loop.iter
    return isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and \
        it.func.id == "range" and any("epoch" in ctx.segment(a).lower() for a in it.args)


def _handed_on(ctx: Context, call: ast.Call) -> bool:
    """The sampler, or the loader built on it, goes to code we cannot see (a wrapper that
    may call set_epoch itself)."""
    names = set()
    holder: ast.AST | None = call
    for _ in range(2):  # the sampler, then the DataLoader wrapping it
        parent = ctx.parent_of(holder) if holder is not None else None
        if isinstance(parent, ast.keyword):
            parent = ctx.parent_of(parent)
        if isinstance(parent, ast.Assign):
            names |= {t.id for t in parent.targets if isinstance(t, ast.Name)}
            break
        holder = parent if isinstance(parent, ast.Call) and \
            ctx.qual(parent) == "torch.utils.data.DataLoader" else None
        if holder is None:
            return isinstance(parent, ast.Call)  # passed to code we cannot see
    for c in ctx.calls:
        if ctx.qual(c) == "torch.utils.data.DataLoader":
            continue
        args = [*c.args, *(k.value for k in c.keywords)]
        if any(isinstance(a, ast.Name) and a.id in names for a in args):
            return True
    return False


def _set_epoch_hits(ctx: Context) -> Iterator[Hit]:
    samplers = [c for c in ctx.calls_to("torch.utils.data.DistributedSampler")
                if not literal_is(ctx.arg(c, "shuffle", 3), False)]
    if not samplers:
        return
    if any(isinstance(c.func, ast.Attribute) and c.func.attr == "set_epoch" for c in ctx.calls):
        return
    epoch_loop = next((n for n in ctx.nodes if isinstance(n, (ast.For, ast.AsyncFor))
                       and _is_epoch_loop(ctx, n)), None)
    if epoch_loop is None:
        return
    for call in samplers:
        if _handed_on(ctx, call):
            continue
        yield ctx.hit(call, (
            f"DistributedSampler is iterated in an epoch loop ({ctx.where(epoch_loop.lineno)}) "
            "but set_epoch() is never called: every epoch replays the same shuffle order"),
            "call sampler.set_epoch(epoch) at the start of each epoch, before iterating "
            "the loader")


DDP_MISSING_SET_EPOCH = Rule(
    id="ddp_missing_set_epoch",
    summary="a DistributedSampler whose loader runs for several epochs with no set_epoch()",
    why="DistributedSampler seeds its shuffle with seed + epoch; the epoch stays 0 unless "
    "set_epoch() changes it, so every epoch sees the same order on every rank.",
    example="from torch.utils.data import DataLoader, DistributedSampler\n\n"
    "sampler = DistributedSampler(ds)\nloader = DataLoader(ds, sampler=sampler)\n"
    "for epoch in range(10):\n    for X, y in loader:\n        step(X, y)",
    fixed="from torch.utils.data import DataLoader, DistributedSampler\n\n"
    "sampler = DistributedSampler(ds)\nloader = DataLoader(ds, sampler=sampler)\n"
    "for epoch in range(10):\n    sampler.set_epoch(epoch)\n    for X, y in loader:\n"
    "        step(X, y)",
    check=_set_epoch_hits,
    needs=("DistributedSampler",),
)

RULES = (HIDDEN_HOST_SYNC, UNSTABLE_SOFTMAX, DDP_MISSING_SET_EPOCH)
