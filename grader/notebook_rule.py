"""The rule that decides which top-level statements of a notebook's cell are kept: definitions, not work.

Read on the syntax tree (``ast``), never run. :func:`defines` says whether a statement only defines
something (an import, a ``def`` or ``class``, a ``__main__`` guard, an assignment of a simple value);
:func:`cheap` whether a value is simple (constants, names already defined, arithmetic, containers and
comprehensions of those, and calls of the few cheap functions below); the name helpers find what a
statement binds and reads. :mod:`grader.notebooks` applies the rule cell by cell.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from typing import Optional

#: calls cheap and free of side effects enough to keep in an assignment at the top level
CHEAP_CALLS = frozenset({
    "len", "range", "int", "float", "str", "bool", "tuple", "list", "dict", "set", "frozenset", "min", "max",
    "abs", "round", "sum", "sorted", "zip", "enumerate", "repr", "getattr", "namedtuple",
    "collections.namedtuple", "functools.partial", "partial", "object", "types.SimpleNamespace", "SimpleNamespace",
    "logging.getLogger", "np.finfo", "numpy.finfo", "torch.finfo", "torch.iinfo",
    "torch.Generator", "torch.Generator().manual_seed",
    "torch.device", "torch.tensor", "torch.zeros", "torch.ones", "torch.arange", "torch.linspace", "torch.randn",
    "torch.rand", "torch.eye", "torch.empty", "torch.full", "torch.cuda.is_available", "torch.get_default_dtype",
    "torch.manual_seed", "random.seed", "np.random.seed", "numpy.random.seed", "np.array", "numpy.array",
    "warnings.filterwarnings", "warnings.simplefilter", "d2l.try_gpu", "d2l.try_all_gpus", "d2l.cpu", "d2l.gpu",
})
#: calls of pure functions (``math.log(2)``, ``math.sqrt(...)``)
PURE_PREFIXES = ("math.",)
#: calls kept as statements of their own (seeding, warning filters): set-up, not work
SETUP_CALLS = frozenset({"torch.manual_seed", "random.seed", "np.random.seed", "numpy.random.seed",
                         "warnings.filterwarnings", "warnings.simplefilter", "torch.set_default_dtype"})
#: prefixes of layer constructors (``nn.RNN(...)``, ``torch.nn.Linear(...)``): building one runs no work
LAYER_PREFIXES = ("nn.", "torch.nn.")

BUILTINS = frozenset(dir(builtins)) | {"__name__", "__file__", "__doc__"}


@dataclass(frozen=True)
class Known:
    """What the rule knows besides the names defined so far."""

    #: names an import bound: setting their attributes or items (``plt.rcParams[...] = ...``) configures a library
    imported: frozenset[str] = frozenset()
    #: kept classes whose constructor Python generates (``@dataclass``, ``NamedTuple``, ``namedtuple``):
    #: calling one runs no notebook code
    records: frozenset[str] = frozenset()


def defines(stmt: ast.stmt, defined: set[str], known: Known, passed: list[ast.stmt]) -> bool:
    """Does the top-level statement only define something (kept), rather than run work (left out)?

    :param passed: collects bare expressions inside a kept ``if``/``try`` block, which become ``pass``
    """
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Pass)):
        return True
    if isinstance(stmt, ast.If):
        if is_main_guard(stmt.test):
            return True  # never runs when the module is imported
        return cheap(stmt.test, defined, known) and all_define(stmt.body + stmt.orelse, defined, known, passed)
    if isinstance(stmt, ast.Try):
        handlers_ok = all(h.type is None or cheap(h.type, defined, known) for h in stmt.handlers)
        return handlers_ok and all_define(stmt.body + stmt.orelse + stmt.finalbody
                                           + [s for h in stmt.handlers for s in h.body], defined, known, passed)
    if isinstance(stmt, ast.Assign):
        return all(plain_target(t, defined, known) for t in stmt.targets) and cheap(stmt.value, defined, known)
    if isinstance(stmt, ast.AnnAssign):
        return (plain_target(stmt.target, defined, known)
                and (stmt.value is None or cheap(stmt.value, defined, known)))
    if isinstance(stmt, ast.AugAssign):
        return (plain_target(stmt.target, defined, known) and cheap(stmt.target, defined, known)
                and cheap(stmt.value, defined, known))
    if isinstance(stmt, ast.Expr):
        if isinstance(stmt.value, ast.Constant):
            return True  # a docstring, or `...`
        return (isinstance(stmt.value, ast.Call) and dotted(stmt.value.func) in SETUP_CALLS
                and cheap(stmt.value, defined, known))
    return False


def all_define(body: list[ast.stmt], defined: set[str], known: Known, passed: list[ast.stmt]) -> bool:
    """Does a block only define? A bare expression in it (``print(device)``) is work left out as ``pass``."""
    inner, here = set(defined), []
    for stmt in body:
        if defines(stmt, inner, known, here):
            inner |= bound_names(stmt)
        elif isinstance(stmt, ast.Expr) and not any(isinstance(n, ast.NamedExpr) for n in ast.walk(stmt)):
            here.append(stmt)
        else:
            return False
    passed += here
    return True


def split_assignment(stmt: ast.stmt, defined: set[str], known: Known,
                      source: str) -> Optional[tuple[ast.Assign, str, set[str]]]:
    """``a, b, c = len(vocab), 256, d2l.try_gpu()`` with some parts cheap: an assignment of those parts alone,
    its text, and the names left out; None when the statement is not such a tuple assignment."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], (ast.Tuple, ast.List))
            and isinstance(stmt.value, (ast.Tuple, ast.List)) and len(stmt.targets[0].elts) == len(stmt.value.elts)
            and not any(isinstance(e, ast.Starred) for e in stmt.targets[0].elts + stmt.value.elts)):
        return None
    pairs = list(zip(stmt.targets[0].elts, stmt.value.elts))
    kept = [(t, v) for t, v in pairs if plain_target(t, defined, known) and cheap(v, defined, known)]
    texts = [(ast.get_source_segment(source, t), ast.get_source_segment(source, v)) for t, v in kept]
    if not kept or any(t is None or v is None or "\n" in t + v for t, v in texts):
        return None
    node = ast.Assign(targets=[ast.Tuple(elts=[t for t, _ in kept], ctx=ast.Store())],
                      value=ast.Tuple(elts=[v for _, v in kept], ctx=ast.Load()))
    ast.copy_location(node, stmt)
    text = f"{', '.join(t for t, _ in texts)} = {', '.join(v for _, v in texts)}"  # type: ignore[arg-type]
    lost = {n.id for t, _ in pairs if all(t is not k for k, _ in kept) for n in ast.walk(t) if isinstance(n, ast.Name)}
    return node, text, lost


def record_names(stmt: ast.stmt) -> set[str]:
    """The classes a statement defines whose constructor Python writes and only stores its arguments:
    ``@dataclass`` classes and ``NamedTuple`` ones without a base class, their own ``__init__``/``__new__``/
    ``__post_init__``/``__setattr__``, decorated methods (a property's setter) or ``default_factory`` (each
    would call notebook code), and ``namedtuple(...)`` assignments."""
    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call) and dotted(stmt.value.func) in (
            "namedtuple", "collections.namedtuple"):
        return {t.id for t in stmt.targets if isinstance(t, ast.Name)}
    if not isinstance(stmt, ast.ClassDef) or stmt.keywords:
        return set()
    decorators = [dotted(d.func if isinstance(d, ast.Call) else d) for d in stmt.decorator_list]
    bases = [dotted(b) for b in stmt.bases]
    dataclass_ = decorators in (["dataclass"], ["dataclasses.dataclass"]) and not bases
    named_tuple = not decorators and bases in (["NamedTuple"], ["typing.NamedTuple"])
    # code the generated constructor would call: its own __init__ and the like, or a property's setter
    own_code = any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and (s.name in ("__init__", "__new__", "__post_init__", "__setattr__") or s.decorator_list)
                   for s in stmt.body)
    factory = any(isinstance(n, ast.keyword) and n.arg == "default_factory" for n in ast.walk(stmt))
    return {stmt.name} if (dataclass_ or named_tuple) and not own_code and not factory else set()


def read_when_defined(stmt: ast.stmt, future_annotations: bool, missing: set[str]) -> list[ast.Name]:
    """Names in ``missing`` that defining the function or class reads: its decorators, default values,
    annotations (unless ``from __future__ import annotations``), base classes and class body."""
    nodes: list[ast.AST] = list(getattr(stmt, "decorator_list", []))
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        nodes += stmt.args.defaults + [d for d in stmt.args.kw_defaults if d]
        if not future_annotations:
            arguments = stmt.args.posonlyargs + stmt.args.args + stmt.args.kwonlyargs + [
                a for a in (stmt.args.vararg, stmt.args.kwarg) if a]
            nodes += [a.annotation for a in arguments if a.annotation] + ([stmt.returns] if stmt.returns else [])
    elif isinstance(stmt, ast.ClassDef):
        nodes += stmt.bases + [k.value for k in stmt.keywords]
        own = set().union(*(bound_names(s) for s in stmt.body)) if stmt.body else set()
        for inner in stmt.body:
            if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                nodes += read_when_defined(inner, future_annotations, missing)
            else:
                nodes += [n for n in ast.walk(inner) if isinstance(n, ast.Name) and n.id not in own]
    return [n for node in nodes for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in missing]


def plain_target(target: ast.expr, defined: set[str], known: Known) -> bool:
    """A name, a tuple of names, or an attribute/item of something the notebook defined (``config.lr = 1``),
    not of an imported module (``plt.rcParams[...] = ...`` configures a library: work, left out)."""
    if isinstance(target, ast.Name):
        return True
    if isinstance(target, (ast.Tuple, ast.List)):
        return all(plain_target(t, defined, known) for t in target.elts)
    if isinstance(target, ast.Starred):
        return plain_target(target.value, defined, known)
    if isinstance(target, (ast.Attribute, ast.Subscript)):
        root = target
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        return not (isinstance(root, ast.Name) and root.id in known.imported) and cheap(target, defined, known)
    return False


def is_main_guard(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and {plain(test.left), plain(test.comparators[0])} == {"__name__", "'__main__'"})


def plain(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return repr(node.value)
    return ""


def dotted(node: ast.expr) -> str:
    """``torch.nn.RNN`` for the expression ``torch.nn.RNN``; "" for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    return ".".join([node.id] + parts[::-1])


def called(func: ast.expr) -> str:
    """The name a call is known by: ``nn.RNN``, and ``torch.Generator().manual_seed`` for a method of a call."""
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):
        inner = called(func.value.func)
        return f"{inner}().{func.attr}" if inner else ""
    return dotted(func)


def cheap(node: ast.expr, defined: set[str], known: Known = Known()) -> bool:
    """Is the expression cheap to evaluate, free of work, and reading only names already defined?"""
    if isinstance(node, ast.Lambda):
        return all(cheap(d, defined, known) for d in node.args.defaults + [d for d in node.args.kw_defaults if d])
    if isinstance(node, ast.Name):
        return node.id in defined
    if isinstance(node, ast.Call):
        name = called(node.func)
        layer = name.startswith(LAYER_PREFIXES) and name.rsplit(".", 1)[-1][:1].isupper()
        if not (name in CHEAP_CALLS or layer or name.startswith(PURE_PREFIXES) or name in known.records):
            return False
        return (cheap(node.func, defined, known) and all(cheap(a, defined, known) for a in node.args)
                and all(cheap(k.value, defined, known) for k in node.keywords))
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        inner = set(defined)  # the loop variables are defined inside, in order
        for loop in node.generators:
            if loop.is_async or not cheap(loop.iter, inner, known):
                return False
            if not all(isinstance(n, (ast.Name, ast.Tuple, ast.List, ast.Starred, ast.expr_context))
                       for n in ast.walk(loop.target)):
                return False  # `for obj.x in ...` sets attributes
            inner |= {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}
            if not all(cheap(test, inner, known) for test in loop.ifs):
                return False
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        return all(cheap(part, inner, known) for part in parts)
    if isinstance(node, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
        return False
    return all(cheap(child, defined, known) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr))


def span(stmt: ast.stmt) -> range:
    """The statement's lines, its decorators included."""
    first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
    return range(first, (stmt.end_lineno or stmt.lineno) + 1)


def bound_names(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement binds in the module."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, ast.Import):
        return {(a.asname or a.name.split(".")[0]) for a in stmt.names}
    if isinstance(stmt, ast.ImportFrom):
        return {(a.asname or a.name) for a in stmt.names if a.name != "*"}
    names = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= bound_names(node)
    return names


def imported_modules(stmt: ast.stmt) -> list[str]:
    """What an import imports, as a student would name it: ``torch``, ``matplotlib.pyplot``, ``torch.nn``."""
    if isinstance(stmt, ast.Import):
        return [a.name for a in stmt.names]
    if isinstance(stmt, ast.ImportFrom):
        module = "." * stmt.level + (stmt.module or "")
        return [f"{module}.{a.name}" if module and not module.endswith(".") else module + a.name for a in stmt.names]
    return []


def loaded_names(node: ast.AST, skip: Optional[set[int]] = None) -> set[str]:
    """Every name the code reads, anywhere inside it (but in the nodes whose ``id()`` is in ``skip``)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            and not (skip and id(n) in skip)}


def free_names(node: ast.AST) -> set[str]:
    """Names a function or class reads without binding them itself (an approximation: any binding counts)."""
    local = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    local |= {a.arg for n in ast.walk(node) if isinstance(n, ast.arguments)
              for a in n.posonlyargs + n.args + n.kwonlyargs + [x for x in (n.vararg, n.kwarg) if x]}
    return loaded_names(node) - local - BUILTINS


def import_used(stmt: ast.stmt, used: set[str]) -> bool:
    if isinstance(stmt, ast.ImportFrom) and (stmt.module == "__future__" or any(a.name == "*" for a in stmt.names)):
        return True
    return bool(bound_names(stmt) & used)
