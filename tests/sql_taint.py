"""Static check of the SQL text passed to ``.execute(...)`` in a folder of Python modules.

For each call ``X.execute(sql, ...)`` (also ``executemany``), every value that ``sql`` is built
from must be fixed by the code: string literals, module-level constants (table and column
names, signal tuples), lookups in them, integers, and local variables built from those
(assignments, tuple unpacking, ``+=``, ``list.append``, loops and comprehensions over such
values, helpers of the same module whose return values are such values). A function
parameter is fixed when the function validates it against a code constant first (``if p not
in CONST: raise`` or a lookup ``CONST[p]``), or when every call of the function in the folder
passes a fixed value for it. Anything else (a value from a request, a row, an attribute of an
object) is reported with the names it came through, for a person to judge; values must go in
as parameters (``?``) instead.

The analysis is flow-insensitive and per module; where it cannot follow a value it reports it
(it errs towards reporting).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

EXECUTE_METHODS = ("execute", "executemany")
SAFE_BUILTINS = {"int", "float", "len", "round", "bool", "min", "max", "abs", "range", "zip", "enumerate",
                 "sorted", "reversed", "list", "tuple", "set"}
SAFE_METHODS = {"items", "keys", "values", "join", "count", "upper", "lower", "strip", "split"}
MAX_DEPTH = 5


@dataclass(frozen=True)
class Finding:
    file: str           # file name within the folder
    function: str
    line: int
    names: tuple[str, ...]   # the values sql was built from that the check could not fix


class _Module:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        self.constants: set[str] = set()
        self.functions: dict[str, ast.FunctionDef] = {}
        for node in self.tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    self.constants |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self.constants |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                self.constants.add(node.name)


class _Scope:
    """What one function binds: parameters, and every expression each local name gets."""

    def __init__(self, module: _Module, func: ast.FunctionDef) -> None:
        self.module, self.func = module, func
        a = func.args
        self.params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
        self.assigns: dict[str, list[ast.AST | None]] = {}
        self.validated: set[str] = set()
        for node in ast.walk(func):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self._bind(target, node.value)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
                self._bind(node.target, node.value)
            elif isinstance(node, ast.For):
                self._bind(node.target, _Element(node.iter))
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                self._bind(node.optional_vars, None)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.attr in ("append", "extend", "insert"):
                arg = node.args[-1] if node.args else None
                self.assigns.setdefault(node.func.value.id, []).append(
                    arg if node.func.attr != "extend" else _Element(arg) if arg is not None else None)
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                    and node.value.id in module.constants and isinstance(node.slice, ast.Name):
                self.validated.add(node.slice.id)      # CONST[p] raises unless p is a known key
            elif isinstance(node, ast.If) and _is_membership_guard(node, module.constants):
                self.validated.add(node.test.left.id)  # type: ignore[attr-defined]

    def _bind(self, target: ast.AST, value) -> None:
        if isinstance(target, ast.Name):
            self.assigns.setdefault(target.id, []).append(value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for i, elt in enumerate(target.elts):
                self._bind(elt, _item(value, i))


class _Element:
    """Stands for "an element of this iterable"."""

    def __init__(self, iterable: ast.AST) -> None:
        self.iterable = iterable


def _item(value, i: int):
    """Part ``i`` of what unpacking ``value`` gives (an element of the iterable for ``_Element``)."""
    if isinstance(value, (ast.Tuple, ast.List)) and i < len(value.elts):
        return value.elts[i]
    if isinstance(value, ast.IfExp):
        return ast.IfExp(test=value.test, body=_item(value.body, i), orelse=_item(value.orelse, i))
    if value is None:
        return None
    if isinstance(value, _Element):
        it = value.iterable
        # for a, b in zip(X, Y): a is an element of X, b of Y; for i, x in enumerate(X): i is an int
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and not it.keywords:
            if it.func.id == "zip" and i < len(it.args) and not isinstance(it.args[i], ast.Starred):
                return _Element(it.args[i])
            if it.func.id == "enumerate" and it.args:
                return ast.Constant(0) if i == 0 else _Element(it.args[0])
        return value
    return _Element(value)


def _bind_local(bindings: dict, target: ast.AST, value) -> None:
    if isinstance(target, ast.Name):
        bindings[target.id] = value
    elif isinstance(target, (ast.Tuple, ast.List)):
        for i, elt in enumerate(target.elts):
            _bind_local(bindings, elt, _item(value, i))


def _is_membership_guard(node: ast.If, constants: set[str]) -> bool:
    t = node.test
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and len(t.ops) == 1
            and isinstance(t.ops[0], ast.NotIn) and isinstance(t.comparators[0], ast.Name)
            and t.comparators[0].id in constants and any(isinstance(s, ast.Raise) for s in node.body))


class Checker:
    def __init__(self, folder: Path) -> None:
        self.modules = {p.name: _Module(p) for p in sorted(folder.glob("*.py"))}

    def findings(self) -> list[Finding]:
        out = []
        for name, module in self.modules.items():
            for func in ast.walk(module.tree):
                if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                scope = _Scope(module, func)
                for call in ast.walk(func):
                    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                            and call.func.attr in EXECUTE_METHODS and call.args):
                        bad = self.unfixed(call.args[0], scope, {}, 0)
                        if bad:
                            out.append(Finding(name, func.name, call.lineno, tuple(sorted(bad))))
        return out

    # -- the analysis -----------------------------------------------------------------------
    def unfixed(self, expr, scope: _Scope, local: dict[str, object], depth: int, seen: frozenset = frozenset()
                ) -> set[str]:
        """Names of the values ``expr`` is built from that the code does not fix (empty: all fixed)."""
        if expr is None:
            return {"<unknown>"}
        if isinstance(expr, _Element):
            return self.unfixed(expr.iterable, scope, local, depth, seen)
        if isinstance(expr, ast.Constant):
            return set()
        if isinstance(expr, ast.JoinedStr):
            return set().union(set(), *(self.unfixed(v, scope, local, depth, seen) for v in expr.values))
        if isinstance(expr, ast.FormattedValue):
            return self.unfixed(expr.value, scope, local, depth, seen)
        if isinstance(expr, ast.Name):
            return self._name(expr.id, scope, local, depth, seen)
        if isinstance(expr, ast.BinOp):
            return self.unfixed(expr.left, scope, local, depth, seen) | self.unfixed(expr.right, scope, local, depth, seen)
        if isinstance(expr, ast.IfExp):
            return self.unfixed(expr.body, scope, local, depth, seen) | self.unfixed(expr.orelse, scope, local, depth, seen)
        if isinstance(expr, (ast.Tuple, ast.List, ast.Set)):
            return set().union(set(), *(self.unfixed(e, scope, local, depth, seen) for e in expr.elts))
        if isinstance(expr, ast.Dict):
            return set().union(set(), *(self.unfixed(k, scope, local, depth, seen) for k in expr.keys if k is not None))
        if isinstance(expr, ast.Subscript):
            if isinstance(expr.value, ast.Name) and expr.value.id in scope.module.constants \
                    and expr.value.id not in scope.assigns and expr.value.id not in scope.params:
                return set()                   # a lookup in a code constant
            return self.unfixed(expr.value, scope, local, depth, seen)
        if isinstance(expr, (ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)):
            inner = dict(local)
            for gen in expr.generators:
                _bind_local(inner, gen.target, _Element(gen.iter))
            # a dict's text is its keys (what iterating it or joining it gives)
            return self.unfixed(expr.key if isinstance(expr, ast.DictComp) else expr.elt, scope, inner, depth, seen)
        if isinstance(expr, ast.Call):
            return self._call(expr, scope, local, depth, seen)
        if isinstance(expr, ast.Attribute):
            # a field of a fixed value (a spec in a constant table) is fixed; of anything else, not
            base = self.unfixed(expr.value, scope, local, depth, seen)
            return {ast.unparse(expr)} if base else set()
        return {ast.unparse(expr)}

    def _name(self, name: str, scope: _Scope, local, depth: int, seen: frozenset) -> set[str]:
        if name in local:
            bound = local[name]
            inner = {k: v for k, v in local.items() if k != name}
            return self.unfixed(bound, scope, inner, depth, seen)
        if name in seen:
            return set()
        if name in scope.validated:
            return set()
        if name in scope.params:
            return self._param(scope, name, depth)
        if name in scope.assigns:
            return set().union(set(), *(self.unfixed(v, scope, local, depth, seen | {name}) for v in scope.assigns[name]))
        if name in scope.module.constants or name in scope.module.functions:
            return set()
        return {name}

    def _call(self, call: ast.Call, scope: _Scope, local, depth: int, seen: frozenset) -> set[str]:
        f = call.func
        args = [*call.args, *(k.value for k in call.keywords)]
        if isinstance(f, ast.Name) and f.id in SAFE_BUILTINS:
            if f.id in ("int", "float", "len", "round", "bool", "abs"):
                return set()
            return set().union(set(), *(self.unfixed(a, scope, local, depth, seen) for a in args))
        if isinstance(f, ast.Attribute) and f.attr in SAFE_METHODS:
            return self.unfixed(f.value, scope, local, depth, seen).union(
                *(self.unfixed(a, scope, local, depth, seen) for a in args))
        if isinstance(f, ast.Name) and f.id in scope.module.functions and depth < MAX_DEPTH:
            callee = _Scope(scope.module, scope.module.functions[f.id])
            bad: set[str] = set()
            for ret in ast.walk(callee.func):
                if isinstance(ret, ast.Return):
                    for n in self.unfixed(ret.value, callee, {}, depth + 1, frozenset(), ):
                        bad |= self._argument_for(call, callee, n, scope, local, depth, seen)
            return bad
        return {ast.unparse(call)}

    def _argument_for(self, call: ast.Call, callee: _Scope, name: str, scope: _Scope, local, depth: int,
                      seen: frozenset) -> set[str]:
        """A callee's unfixed ``name``: if it is one of its parameters, what this call passes for it."""
        marker = f"param:{callee.func.name}."
        if not name.startswith(marker):
            return {name}
        param = name[len(marker):]
        arg = _argument(call, callee.params, param)
        return self.unfixed(arg, scope, local, depth, seen) if arg is not None else set()

    def _param(self, scope: _Scope, name: str, depth: int) -> set[str]:
        """A parameter is fixed when every call of its function in the folder passes a fixed value."""
        if depth > 0:
            return {f"param:{scope.func.name}.{name}"}
        calls = list(self._calls_of(scope.func.name))
        if not calls:
            return {name}
        bad: set[str] = set()
        for module, caller, call in calls:
            arg = _argument(call, scope.params, name)
            if arg is None:
                continue  # the default applies: a literal in the signature
            caller_scope = _Scope(module, caller)
            found = self.unfixed(arg, caller_scope, {}, depth + 1)
            for n in found:
                if n.startswith(f"param:{caller.name}."):
                    bad |= {f"{name} <- {caller.name}({n.split('.', 1)[1]})"} if depth + 1 >= MAX_DEPTH else \
                        self._param_chain(caller_scope, n.split(".", 1)[1], depth + 1, name)
                else:
                    bad.add(f"{name} <- {n}")
        return bad

    def _param_chain(self, scope: _Scope, name: str, depth: int, original: str) -> set[str]:
        calls = list(self._calls_of(scope.func.name))
        if not calls:
            return {f"{original} <- {scope.func.name}({name})"}
        bad: set[str] = set()
        for module, caller, call in calls:
            arg = _argument(call, scope.params, name)
            if arg is None:
                continue
            caller_scope = _Scope(module, caller)
            for n in self.unfixed(arg, caller_scope, {}, depth + 1):
                if n.startswith(f"param:{caller.name}.") and depth + 1 < MAX_DEPTH:
                    bad |= self._param_chain(caller_scope, n.split(".", 1)[1], depth + 1, original)
                else:
                    bad.add(f"{original} <- {n}")
        return bad

    def _calls_of(self, func_name: str):
        for module in self.modules.values():
            for caller in ast.walk(module.tree):
                if not isinstance(caller, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for call in ast.walk(caller):
                    if isinstance(call, ast.Call) and (
                            (isinstance(call.func, ast.Name) and call.func.id == func_name)
                            or (isinstance(call.func, ast.Attribute) and call.func.attr == func_name)):
                        yield module, caller, call


def _argument(call: ast.Call, params: list[str], name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    if name in params:
        i = params.index(name)
        if i < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[:i + 1]):
            return call.args[i]
    return None


def findings(folder: str | Path) -> list[Finding]:
    """Every execute() whose SQL text is built from values the code does not fix."""
    return Checker(Path(folder)).findings()
