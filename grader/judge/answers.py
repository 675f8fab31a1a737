"""The reference code a run may hold: everything except the answer to the hook it grades.

A check grades one student hook H; the reference supplies the rest (the model around a student's
``train_epoch``, the stand-ins for a broken file). The runner never imports the reference: the judge
sends, with each request, the reference's modules with H removed, and with every definition that
only H needed (a model class behind ``rnn_model``) or that needs H (the reference ``train_epoch``
calls the reference ``grad_clipping``) removed too. What remains cannot compute H.

The sources travel past the runner's zygote without entering its memory (see
:mod:`grader.runner.zygote`), so no later run can find them there.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from pathlib import Path
from typing import Iterable, Optional

from grader import registry

#: the package the runner builds from the parts (``from .grad_clipping import ...`` resolves inside it)
PARTS_PACKAGE = "grader.reference_parts"


def reference_source(exercise: str) -> str:
    """The text of the reference module of ``exercise``, read without importing it."""
    spec = importlib.util.find_spec(registry.reference_module(exercise))
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the reference module {registry.reference_module(exercise)} is not installed")
    return Path(spec.origin).read_text(encoding="utf-8")


def _defined(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _sibling_imports(node: ast.stmt, siblings: set[str]) -> dict[str, str]:
    """Names a statement imports from another reference module: name -> that module."""
    found = {}
    for child in ast.walk(node):
        if isinstance(child, ast.ImportFrom) and child.module:
            source = child.module.rpartition(".")[2] if child.level else child.module
            if source in siblings:
                for alias in child.names:
                    found[alias.asname or alias.name] = source
    return found


def _shake(tree: ast.Module, graded: Optional[str], available: dict[str, set[str]],
           siblings: set[str]) -> tuple[Optional[ast.Module], set[str]]:
    """Keep the module's hooks other than ``graded`` that do not need it, and what they use."""
    definitions = {name: node for node in tree.body for name in _defined(node)}
    imported: dict[str, str] = {}
    for node in tree.body:
        imported.update(_sibling_imports(node, siblings))
    missing = {name for name, module in imported.items() if name not in available.get(module, set())}

    def needs(name: str, seen: set[str]) -> set[str]:
        if name in seen or name not in definitions:
            return seen
        seen.add(name)
        for used in _used(definitions[name]):
            needs(used, seen)
        return seen

    kept: set[str] = set()
    for hook in registry.EXERCISE_HOOKS:
        if hook not in definitions or hook == graded:
            continue
        closure = needs(hook, set())
        used = set().union(*(_used(definitions[n]) for n in closure))
        if graded in closure or graded in used or used & missing:
            continue
        kept |= closure
    hooks = kept & set(registry.EXERCISE_HOOKS)
    if not hooks:
        return None, set()
    body = [node for node in tree.body if not _defined(node) or _defined(node) & kept]
    return ast.Module(body=body, type_ignores=[]), kept


@functools.lru_cache(maxsize=None)
def parts_without(graded: Optional[str]) -> bytes:
    """The reference's modules for a run grading ``graded``, as the JSON the runner's child reads.

    ``None`` (a run that grades nothing, such as loading) gets no reference at all.
    """
    if graded is None:
        return b""
    siblings = {exercise.name for exercise in registry.EXERCISES}
    available: dict[str, set[str]] = {}
    modules: list[list[str]] = []
    for exercise in registry.EXERCISES:  # lesson order: a module's reference siblings come before it
        tree = ast.parse(reference_source(exercise.name))
        shaken, kept = _shake(tree, graded, available, siblings)
        available[exercise.name] = kept
        if shaken is not None:
            modules.append([exercise.name, ast.unparse(shaken)])
    return json.dumps({"package": PARTS_PACKAGE, "modules": modules}).encode("utf-8")


def hooks_without(graded: Optional[str]) -> list[str]:
    """The hooks whose reference a run grading ``graded`` holds (for tests and the docs)."""
    raw = parts_without(graded)
    if not raw:
        return []
    held: list[str] = []
    for _, source in json.loads(raw)["modules"]:
        defined: Iterable[str] = (n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef))
        held += [name for name in defined if name in registry.EXERCISE_HOOKS]
    return held
