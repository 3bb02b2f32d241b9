"""Rules about loading checkpoints, starting worker processes, and plotting outside Jupyter."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from devcheck.lint._types import Edit, Hit, Rule
from devcheck.lint.scope import Context

_LOADS = ("torch.load",)


def _kw_insertion(ctx: Context, call: ast.Call, name: str, value: str) -> tuple[Edit, ...]:
    """Insert ``, name=value`` right after the call's last argument (keeps any trailing comma)."""
    nodes: list[ast.expr | ast.keyword] = [*call.args, *call.keywords]
    last = max(nodes, key=lambda n: (n.end_lineno or 0, n.end_col_offset or 0), default=None)
    if last is None or ctx.has_star_kwargs(call):
        return ()
    line, col = ctx.end_of(last)
    quote = "'" if "'" in ctx.segment(call) and '"' not in ctx.segment(call) else '"'
    return (Edit(line, col, line, col, f", {name}={value.replace(chr(34), quote)}"),)


_DDP_WORDS = ("DistributedDataParallel", "init_process_group", "LOCAL_RANK")


def _map_location_hits(ctx: Context) -> Iterator[Hit]:
    ddp = any(w in ctx.source.text for w in _DDP_WORDS)
    for call in ctx.calls_to(*_LOADS, "torch.jit.load"):
        if ctx.arg(call, "map_location", 1) is not None or ctx.has_star_kwargs(call):
            continue
        also = (" (under DDP every rank loads it onto cuda:0: devcheck pitfalls show "
                "ddp_load_without_map_location)") if ddp else ""
        yield ctx.hit(call, (
            f"{ctx.segment(call)} has no map_location: a checkpoint saved on a GPU restores "
            "its tensors to 'cuda:0' and fails on a machine without CUDA ('Attempting to "
            f"deserialize object on a CUDA device'){also}"),
            "torch.load(path, map_location='cpu') (or map_location=device), then "
            "model.load_state_dict(state)",
            _kw_insertion(ctx, call, "map_location", '"cpu"'))


GPU_CHECKPOINT_ON_CPU = Rule(
    id="gpu_checkpoint_on_cpu",
    summary="torch.load without map_location",
    why="torch.save records each storage's device; torch.load puts it back there. A "
    "checkpoint written on a GPU cannot be loaded on a CPU-only machine (or on a machine "
    "with fewer GPUs) unless map_location says where the tensors go.",
    example="import torch\n\nstate = torch.load('model.pt', weights_only=True)",
    fixed="import torch\n\nstate = torch.load('model.pt', map_location='cpu', weights_only=True)",
    check=_map_location_hits,
    covers=("ddp_load_without_map_location", "invalid_device_ordinal"),
    autofix="adds map_location=\"cpu\" (load_state_dict then copies onto the model's device)",
    needs=("load",),
)


def _weights_only_hits(ctx: Context) -> Iterator[Hit]:
    for call in ctx.calls_to(*_LOADS):
        if ctx.kw(call, "weights_only") is not None or ctx.has_star_kwargs(call) or \
                len(call.args) >= 4:
            continue
        yield ctx.hit(call, (
            f"{ctx.segment(call)} has no weights_only=True: before torch 2.6 it unpickles "
            "with the full pickle module and runs any code the file contains"),
            "torch.load(path, map_location='cpu', weights_only=True); save state_dicts, "
            "not pickled objects",
            _kw_insertion(ctx, call, "weights_only", "True"))


TORCH_LOAD_WEIGHTS_ONLY = Rule(
    id="torch_load_weights_only",
    summary="torch.load without weights_only=True (runs pickled code on torch < 2.6)",
    why="A .pt file is a pickle: loading it with the full unpickler calls whatever "
    "callables it names, so a downloaded checkpoint can run arbitrary code. weights_only="
    "True restricts it to tensors and plain containers; it became the default only in "
    "torch 2.6.",
    example="import torch\n\nstate = torch.load('downloaded.pt', map_location='cpu')",
    fixed="import torch\n\n"
    "state = torch.load('downloaded.pt', map_location='cpu', weights_only=True)",
    check=_weights_only_hits,
    autofix="adds weights_only=True",
    needs=("load",),
)

# ---------------------------------------------------------------------- spawn

_WORKER_STARTERS = ("torch.multiprocessing.spawn", "torch.multiprocessing.start_processes",
                    "multiprocessing.Pool", "multiprocessing.Process",
                    "torch.multiprocessing.Process", "torch.multiprocessing.Pool",
                    "concurrent.futures.ProcessPoolExecutor")


def _starts_workers(ctx: Context, call: ast.Call) -> bool:
    q = ctx.qual(call)
    if q == "torch.utils.data.DataLoader":
        workers = ctx.arg(call, "num_workers", 5)
        return workers is not None and not (
            isinstance(workers, ast.Constant) and not workers.value)
    return q in _WORKER_STARTERS


def _has_main_guard(ctx: Context) -> bool:
    for stmt in ctx.tree.body:
        if isinstance(stmt, ast.If) and "__name__" in ctx.segment(stmt.test) and \
                "__main__" in ctx.segment(stmt.test):
            return True
    return False


def _runs_at_import(ctx: Context, call: ast.Call) -> bool:
    """Top-level code, or a function that top-level code calls (one level down or more)."""
    if ctx.scope_of(call) is ctx.tree:
        return True
    top_calls = {c.func.id for c in ctx.calls if ctx.scope_of(c) is ctx.tree
                 and isinstance(c.func, ast.Name)}
    live, todo = set(top_calls), list(top_calls)
    while todo:
        for fn in ctx.functions.get(todo.pop(), []):
            for n in ast.walk(fn):
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and \
                        n.func.id not in live:
                    live.add(n.func.id)
                    todo.append(n.func.id)
    names = {a.name for a in ctx.ancestors(call)
             if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return bool(names & live)


def _dataset_name(ctx: Context, call: ast.Call) -> str | None:
    """The notebook-defined Dataset class this DataLoader gets, if any."""
    ds = ctx.arg(call, "dataset", 0)
    values: list[ast.AST] = [ds] if ds is not None else []
    if isinstance(ds, ast.Name):
        values = list(ctx.bindings(ds.id, ds))
    for v in values:
        if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and \
                v.func.id in ctx.dataset_classes:
            return v.func.id
    return None


def _spawn_hits(ctx: Context) -> Iterator[Hit]:
    starters = [c for c in ctx.calls if _starts_workers(ctx, c)]
    if ctx.kind == "ipynb":
        for call in starters:
            name = _dataset_name(ctx, call)
            lam = next((k.arg for k in call.keywords if isinstance(k.value, ast.Lambda)), None)
            if name is None and lam is None:
                continue
            what = f"Dataset class {name} is defined in this notebook" if name else \
                f"{lam}= is a lambda"
            yield ctx.hit(call, (
                f"{what} and the DataLoader starts worker processes: under spawn (Windows, "
                "macOS, Python 3.14's forkserver on Linux) workers cannot unpickle it "
                f"(\"Can't get attribute '{name or '<lambda>'}' on <module '__main__'>\")"),
                "move the class/function into a .py module and import it, or num_workers=0")
        return
    if _has_main_guard(ctx):
        return
    for call in starters:
        if _runs_at_import(ctx, call):
            yield ctx.hit(call, (
                f"{ctx.segment(call)} starts worker processes from code that runs at import, "
                "with no `if __name__ == '__main__':` guard: spawn re-imports this script in "
                "every worker ('An attempt has been made to start a new process before the "
                "current process has finished its bootstrapping phase')"),
                "put the script's top-level code under `if __name__ == '__main__':` "
                "(e.g. def main(): ... then main())")


SPAWN_NEEDS_IMPORTABLE_MAIN = Rule(
    id="spawn_needs_importable_main",
    summary="DataLoader workers with a notebook-defined Dataset, or a script without a "
    "__main__ guard",
    why="The spawn start method (default on Windows and macOS, forkserver on Linux from "
    "Python 3.14) starts each worker as a fresh interpreter that re-imports __main__ and "
    "unpickles the dataset: classes defined in a notebook cannot be found, and an "
    "unguarded script starts workers again while being imported.",
    example="from torch.utils.data import DataLoader\n\n"
    "loader = DataLoader(train_set, batch_size=256, shuffle=True, num_workers=4)\n"
    "for X, y in loader:\n    ...",
    fixed="from torch.utils.data import DataLoader\n\n\ndef main():\n"
    "    loader = DataLoader(train_set, batch_size=256, shuffle=True, "
    "num_workers=4)\n    for X, y in loader:\n        ...\n\n\nif __name__ == '__main__':\n"
    "    main()",
    check=_spawn_hits,
    needs=("DataLoader", "Pool", "Process", "spawn", "start_processes"),
)

# ---------------------------------------------------------------------- plots

_NOTEBOOK_ONLY = ("IPython.display.display", "IPython.display.clear_output", "d2l.Animator",
                  "d2l.use_svg_display", "IPython.display.set_matplotlib_formats")


def _plot_hits(ctx: Context) -> Iterator[Hit]:
    if ctx.kind != "py":
        return
    src = ctx.source.text
    if "get_ipython" in src or "ipykernel" in src:
        return  # the script already checks where it runs
    for call in ctx.calls_to(*_NOTEBOOK_ONLY):
        q = ctx.qual(call) or ""
        yield ctx.hit(call, (
            f"{ctx.segment(call)} needs a Jupyter kernel ({q}): in a script it prints "
            "'<Figure size ...>' or nothing and no plot ever appears"),
            "save the figure (fig.savefig('curves.png')) or call plt.show(); keep "
            "display()/clear_output() for notebooks")


NOTEBOOK_PLOT_IN_SCRIPT = Rule(
    id="notebook_plot_in_script",
    summary="IPython display()/clear_output() or d2l's Animator in a .py script",
    why="display() and clear_output() talk to a Jupyter front end; run as a script there "
    "is none, so d2l's Animator prints a figure repr per update and the live plot never "
    "shows.",
    example="from IPython import display\n\ndisplay.display(fig)\n"
    "display.clear_output(wait=True)",
    fixed="fig.savefig('curves.png')  # or plt.show() once at the end",
    check=_plot_hits,
    script_only=True,
    needs=("display", "Animator", "clear_output", "set_matplotlib_formats"),
)

RULES = (GPU_CHECKPOINT_ON_CPU, TORCH_LOAD_WEIGHTS_ONLY, SPAWN_NEEDS_IMPORTABLE_MAIN,
         NOTEBOOK_PLOT_IN_SCRIPT)
