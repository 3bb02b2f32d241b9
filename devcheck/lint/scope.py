"""A light analysis of one module: qualified names, bindings, scopes and loops.

Not type inference: just enough to tell ``torch.load`` from ``json.load`` (import aliases:
``import torch as T``, ``from torch import load``, ``from torch.utils.data import DataLoader
as DL``), a model from a tensor (names bound to ``nn.*`` constructors or to classes that
subclass ``nn.Module``), and a training loop from an evaluation loop. Every rule reads the
module through one ``Context`` built once per file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from devcheck.lint._types import Edit, Hit
from devcheck.lint.source import Source

_SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)

# Re-exports spelled by their canonical public name.
_CANON = (
    (re.compile(r"^torch\.utils\.data\.(?:dataloader|sampler|dataset|distributed)\."),
     "torch.utils.data."),
    (re.compile(r"^torchvision\.transforms\.transforms\."), "torchvision.transforms."),
    (re.compile(r"^torch\.nn\.modules(?:\.\w+)*\.(?=[A-Z])"), "torch.nn."),
    (re.compile(r"^torch\.nn\.parallel\.distributed\."), "torch.nn.parallel."),
    (re.compile(r"^d2l\.(?:torch|mxnet|tensorflow|jax)\."), "d2l."),
    (re.compile(r"^IPython\.(?:core\.display|core\.display_functions|display)\."),
     "IPython.display."),
)
# Modules people use without importing in a notebook cell shown to us.
_IMPLICIT = {"torch": "torch", "d2l": "d2l"}

MODULE_NAME = re.compile(
    r"(?:^|_)(?:net|nets|model|models|module|modules|layer|layers|encoder|decoder|backbone|"
    r"head|heads|classifier|criterion|loss_fn|lossfn|ddp|block|blocks|embedding|embed|"
    r"discriminator|unet|vae|transformer|lstm|rnn|gru|cnn|mlp|policy|critic|actor|teacher|"
    r"student|ema|seq|sequential|submodule|pipe|pipeline)\d*(?:$|_)", re.I)
TENSOR_NAME = re.compile(
    r"^(?:x|y|z|xb|yb|xs|ys|inputs?|labels?|targets?|images?|imgs?|features?|logits|"
    r"outputs?|out|preds?|mask|masks|tokens|ids|input_ids|attention_mask|w|b|weights?|"
    r"bias|t|tensor|hidden|h|emb|idx|src|tgt|data|target|batch|sample|samples|"
    r"[a-z]+_(?:tensor|batch|gpu|cuda))$", re.I)
_BUILTIN_CALLS = frozenset({
    "len", "range", "int", "float", "str", "bool", "list", "dict", "tuple", "set", "sum",
    "min", "max", "abs", "round", "enumerate", "zip", "sorted", "open", "print", "repr",
    "getattr", "vars", "type", "isinstance", "input", "format", "divmod", "pow",
})
_MODULE_FACTORIES = ("torchvision.models.", "timm.create_model", "torch.hub.load",
                     "transformers.", "torch.compile", "torch.jit.script", "torch.jit.load",
                     "torch.nn.parallel.", "copy.deepcopy")


_CANON_PREFIXES = ("torch.utils.data.", "torchvision.transforms.transforms.", "torch.nn.",
                   "d2l.", "IPython.")


def canon(name: str) -> str:
    if not name.startswith(_CANON_PREFIXES):
        return name
    for rx, repl in _CANON:
        name = rx.sub(repl, name)
    return name


class Context:
    """The analysed module and the questions rules ask about it."""

    def __init__(self, source: Source) -> None:
        assert source.tree is not None
        self.source = source
        self.tree: ast.Module = source.tree
        self.kind = source.kind
        self.aliases: dict[str, str] = {}
        self.parent: dict[int, ast.AST] = {}
        self.calls: list[ast.Call] = []
        self.nodes: list[ast.AST] = []  # every node, in source (pre-)order
        self.memo: dict[str, Any] = {}  # per-module results rules share
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        self._bindings: dict[tuple[int, str], list[ast.AST]] = {}
        self._attr_bindings: dict[str, list[ast.expr]] = {}
        self._qual_cache: dict[int, str | None] = {}
        self._index()

    # ------------------------------------------------------------------ indexing

    def _index(self) -> None:
        """One pre-order walk (source order): parents, calls, imports, definitions.

        Rules iterate ``self.nodes`` instead of walking the tree again: on a 2-core machine
        the walks, not the parse, dominated the time per file.
        """
        nodes = self.nodes
        stack: list[ast.AST] = [self.tree]
        parent = self.parent
        while stack:
            node = stack.pop()
            nodes.append(node)
            self._note(node)
            children = list(ast.iter_child_nodes(node))
            for child in children:
                parent[id(child)] = node
            children.reverse()
            stack.extend(children)
        self.calls.sort(key=lambda c: (c.lineno, c.col_offset))

    def _note(self, node: ast.AST) -> None:
        if isinstance(node, ast.Call):
            self.calls.append(node)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    self.aliases[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    self.aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name != "*":
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.functions.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.ClassDef):
            self.classes[node.name] = node

    def _bind(self, scope: ast.AST, target: ast.AST, value: ast.AST) -> None:
        if isinstance(target, ast.Name):
            self._bindings.setdefault((id(scope), target.id), []).append(value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._bind(scope, elt.value if isinstance(elt, ast.Starred) else elt, value)
        elif isinstance(target, ast.Attribute):
            self._attr_bindings.setdefault(target.attr, []).append(value)  # type: ignore[arg-type]

    @cached_property
    def _bindings_ready(self) -> bool:
        for node in self.nodes:
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    self._bind(self.scope_of(node), t, node.value)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                self._bind(self.scope_of(node), node.target, node.value)
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                self._bind(self.scope_of(node), node.target, node)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        self._bind(self.scope_of(node), item.optional_vars, item.context_expr)
            elif isinstance(node, ast.arg):
                self._bindings.setdefault((id(self.scope_of(node)), node.arg), []).append(node)
        return True

    # ------------------------------------------------------------------ names

    def qual(self, node: ast.AST) -> str | None:
        """The dotted name an expression refers to, imports resolved (``T.load`` -> torch.load)."""
        key = id(node)
        if key not in self._qual_cache:
            self._qual_cache[key] = self._qual(node)
        return self._qual_cache[key]

    def _qual(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Call):
            node = node.func
        if isinstance(node, ast.Name):
            base = self.aliases.get(node.id) or _IMPLICIT.get(node.id)
            return canon(base) if base else None
        if isinstance(node, ast.Attribute):
            inner = self._qual(node.value)
            return canon(f"{inner}.{node.attr}") if inner else None
        return None

    def calls_to(self, *quals: str) -> Iterator[ast.Call]:
        for call in self.calls:
            q = self.qual(call)
            if q is not None and q in quals:
                yield call

    # ------------------------------------------------------------------ structure

    def parent_of(self, node: ast.AST) -> ast.AST | None:
        return self.parent.get(id(node))

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        p = self.parent_of(node)
        while p is not None:
            yield p
            p = self.parent_of(p)

    def scope_of(self, node: ast.AST) -> ast.AST:
        for a in self.ancestors(node):
            if isinstance(a, _SCOPES):
                return a
        return self.tree

    def statement_of(self, node: ast.AST) -> ast.stmt | None:
        for a in [node, *self.ancestors(node)]:
            if isinstance(a, ast.stmt):
                return a
        return None

    def bindings(self, name: str, at: ast.AST) -> list[ast.AST]:
        """What ``name`` is bound to in ``at``'s scope, falling back to module scope."""
        assert self._bindings_ready
        scope = self.scope_of(at)
        found = self._bindings.get((id(scope), name))
        if found is None and scope is not self.tree:
            found = self._bindings.get((id(self.tree), name))
        return found or []

    def attr_bindings(self, attr: str) -> list[ast.expr]:
        assert self._bindings_ready
        return self._attr_bindings.get(attr, [])

    def is_bound(self, name: str) -> bool:
        assert self._bindings_ready
        return any(key[1] == name for key in self._bindings) or name in self.functions \
            or name in self.classes or name in self.aliases

    # ------------------------------------------------------------------ kinds of values

    @cached_property
    def module_classes(self) -> set[str]:
        """Classes defined here that subclass nn.Module (directly or through each other)."""
        return self._subclasses(lambda q: q.startswith("torch.nn.") or
                                q.endswith("LightningModule") or q.endswith(".Module"))

    @cached_property
    def dataset_classes(self) -> set[str]:
        return self._subclasses(lambda q: q in ("torch.utils.data.Dataset",
                                                "torch.utils.data.IterableDataset"))

    def _subclasses(self, base_ok: object) -> set[str]:
        found: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, cls in self.classes.items():
                if name in found:
                    continue
                for b in cls.bases:
                    q = self.qual(b)
                    if (q is not None and base_ok(q)) or (  # type: ignore[operator]
                            isinstance(b, ast.Name) and b.id in found):
                        found.add(name)
                        changed = True
                        break
        return found

    def is_module_call(self, call: ast.Call) -> bool:
        q = self.qual(call)
        if q is not None:
            last = q.rsplit(".", 1)[-1]
            if q.startswith("torch.nn.") and last[:1].isupper() and last not in (
                    "Parameter", "Buffer", "UninitializedParameter"):
                return True
            if q.startswith(_MODULE_FACTORIES):
                return True
        f = call.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
            else None
        if name in self.module_classes or (name and name.endswith(("from_pretrained",))):
            return True
        if isinstance(f, ast.Name) and f.id in self.functions:
            return any(self._returns_module(fn) for fn in self.functions[f.id])
        return False

    def _returns_module(self, fn: ast.AST) -> bool:
        key = f"returns_module:{id(fn)}"
        if key not in self.memo:
            self.memo[key] = False  # recursion guard: a function returning itself
            self.memo[key] = any(
                isinstance(node, ast.Return) and isinstance(node.value, ast.Call) and
                self.is_module_call(node.value) for node in walk_scope(fn))
        return bool(self.memo[key])

    def is_module_expr(self, expr: ast.AST, depth: int = 0) -> bool:
        """Could this expression be an nn.Module (whose ``.to()`` moves it in place)?"""
        if depth > 4:
            return False
        if isinstance(expr, ast.Call):
            if isinstance(expr.func, ast.Attribute) and expr.func.attr in ("to", "cuda",
                                                                           "train", "eval"):
                return self.is_module_expr(expr.func.value, depth + 1)
            return self.is_module_call(expr)
        if isinstance(expr, ast.Name):
            if MODULE_NAME.search(expr.id):
                return True
            return any(self._binding_is_module(v, depth) for v in self.bindings(expr.id, expr))
        if isinstance(expr, ast.Attribute):
            if MODULE_NAME.search(expr.attr):
                return True
            return any(self.is_module_expr(v, depth + 1) for v in self.attr_bindings(expr.attr))
        if isinstance(expr, ast.Subscript):
            return self.is_module_expr(expr.value, depth + 1)
        return False

    def _binding_is_module(self, value: ast.AST, depth: int) -> bool:
        if isinstance(value, ast.arg):
            ann = value.annotation
            return ann is not None and (self.qual(ann) or "").startswith("torch.nn.")
        if isinstance(value, ast.expr):
            return self.is_module_expr(value, depth + 1)
        return False

    # ------------------------------------------------------------------ call arguments

    @staticmethod
    def kw(call: ast.Call, name: str) -> ast.expr | None:
        for k in call.keywords:
            if k.arg == name:
                return k.value
        return None

    @staticmethod
    def has_star_kwargs(call: ast.Call) -> bool:
        return any(k.arg is None for k in call.keywords) or any(
            isinstance(a, ast.Starred) for a in call.args)

    def arg(self, call: ast.Call, name: str, position: int) -> ast.expr | None:
        """A parameter passed by keyword or at ``position`` (0-based)."""
        value = self.kw(call, name)
        if value is None and len(call.args) > position and not any(
                isinstance(a, ast.Starred) for a in call.args[:position + 1]):
            value = call.args[position]
        return value

    # ------------------------------------------------------------------ reporting

    def where(self, line: int) -> str:
        """'line 12', or 'cell 3, line 4' in a notebook: how messages point elsewhere."""
        cell, cline = self.source.cell_at(line)
        return f"cell {cell}, line {cline}" if cell is not None else f"line {line}"

    def char_col(self, line: int, byte_col: int) -> int:
        """ast's UTF-8 byte offset -> character offset on that line."""
        try:
            text = self.source.lines[line - 1]
        except IndexError:
            return byte_col
        if text.isascii():
            return byte_col
        return len(text.encode("utf-8")[:byte_col].decode("utf-8", "ignore"))

    def hit(self, node: ast.AST, message: str, fix: str, edits: tuple[Edit, ...] = ()) -> Hit:
        line = getattr(node, "lineno", 1)
        end_line = getattr(node, "end_lineno", None) or line
        col = self.char_col(line, getattr(node, "col_offset", 0))
        end_col = self.char_col(end_line, getattr(node, "end_col_offset", None) or 0)
        return Hit(line, col, end_line, end_col, message, fix, edits)

    def end_of(self, node: ast.AST) -> tuple[int, int]:
        line = node.end_lineno or node.lineno  # type: ignore[attr-defined]
        return line, self.char_col(line, node.end_col_offset or 0)  # type: ignore[attr-defined]

    def start_of(self, node: ast.AST) -> tuple[int, int]:
        line = node.lineno  # type: ignore[attr-defined]
        return line, self.char_col(line, node.col_offset)  # type: ignore[attr-defined]

    def segment(self, node: ast.AST) -> str:
        """The node's source text (its first line, `` ...`` when it spans several)."""
        line = getattr(node, "lineno", None)
        end_line = getattr(node, "end_lineno", None)
        if line is None or end_line is None or line > len(self.source.lines):
            return ast.unparse(node)
        text = self.source.lines[line - 1]
        start = self.char_col(line, node.col_offset)  # type: ignore[attr-defined]
        if end_line == line:
            return text[start:self.char_col(line, node.end_col_offset or 0)]  # type: ignore
        return text[start:].rstrip() + " ..."


def literal_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def literal_is(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """Like ast.walk, but does not enter nested functions, lambdas or classes."""
    todo = list(ast.iter_child_nodes(node))
    while todo:
        n = todo.pop()
        yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                              ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(n))
