"""Runner-side tamper evidence: what a submission changed in the grader's world.

Verdicts are computed in the judge, but the runner still executes grader code
around the student's (the instrumented training objects, the encoder of the
result). A submission that rebinds a torch, numpy or grader function, or that
imports or reads the reference solutions, is recorded here and the judge
withholds the affected points.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Iterable

import torch

from grader.registry import REFERENCE_PACKAGE

#: modules whose functions the runner relies on; checked for rebinding after student code ran
WATCHED_MODULES = ("builtins", "math", "os", "json", "base64", "struct", "numpy", "torch", "torch.nn.functional",
                   "torch.nn.modules.module", "torch.optim.optimizer", "torch.optim.sgd", "torch.autograd")
WATCHED_PREFIXES = ("grader",)
#: hidden from the child by :class:`ReferenceGuard`; their functions are watched through ``Snapshot.functions``.
#: A checkout's top-level ``reference`` folder is importable too where the grader runs from a checkout.
REFERENCE_PACKAGES = (REFERENCE_PACKAGE, "reference")
#: names torch rebinds itself (torch.set_default_dtype swaps the legacy Storage alias)
REBOUND_BY_TORCH = {("torch", "Storage")}


def _watched() -> Iterable[tuple[str, Any]]:
    for name, module in list(sys.modules.items()):
        if module is None:
            continue
        if _is_reference(name):
            continue
        if name in WATCHED_MODULES or name.split(".")[0] in WATCHED_PREFIXES:
            yield name, module
    for cls in (torch.Tensor, torch.nn.Module, torch.optim.Optimizer, torch.optim.SGD):
        yield f"{cls.__module__}.{cls.__qualname__}", cls


def _is_reference(name: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in REFERENCE_PACKAGES)


def _fingerprint(obj: Any) -> tuple:
    code = getattr(obj, "__code__", None)
    return (id(obj), id(code), id(getattr(obj, "__defaults__", None)), id(getattr(obj, "__kwdefaults__", None)))


class Snapshot:
    """Identities of every function and class reachable from the watched namespaces."""

    def __init__(self, functions: dict[str, Any] | None = None) -> None:
        #: extra functions to watch (the reference's, which stay reachable after their modules are hidden)
        self.functions = dict(functions or {})
        self.entries: dict[tuple[str, str], tuple] = {}
        for key, func in self.functions.items():
            self.entries[("reference", key)] = _fingerprint(func)
        for owner, namespace in _watched():
            items = vars(namespace).items() if not isinstance(namespace, dict) else namespace.items()
            for key, value in list(items):
                if (callable(value) or isinstance(value, (classmethod, staticmethod, property))) \
                        and not isinstance(value, types.ModuleType):
                    self.entries[(owner, key)] = _fingerprint(value)

    def changes(self) -> list[str]:
        """Names that were rebound, re-coded or deleted since the snapshot (new names are fine)."""
        changed = []
        owners: dict[str, Any] = dict(_watched())
        for (owner, key), print_ in self.entries.items():
            if (owner, key) in REBOUND_BY_TORCH:
                continue
            if owner == "reference":
                current = self.functions[key]
            else:
                namespace = owners.get(owner)
                current = vars(namespace).get(key, _MISSING) if namespace is not None else _MISSING
            if current is _MISSING or _fingerprint(current) != print_:
                changed.append(f"{owner}.{key}")
        return changed


_MISSING = object()


class ReferenceGuard:
    """Records imports of, and file opens inside, the reference package."""

    def __init__(self, reference_dir: Path, submission_dir: Path):
        self.reference_dir = str(reference_dir)
        self.submission_dir = str(submission_dir)
        self.events: list[dict] = []
        self.active = False

    def install(self) -> None:
        # Hide the preloaded reference modules so that reaching them means importing them:
        # out of sys.modules, and off the package that holds them.
        for name in [n for n in sys.modules if _is_reference(n)]:
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if parent in sys.modules and getattr(sys.modules[parent], child, None) is not None:
                delattr(sys.modules[parent], child)
        sys.addaudithook(self._hook)
        self.active = True

    def _hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event == "import":
            name = args[0] if args else ""
            if isinstance(name, str) and _is_reference(name):
                self._record(f"imported {name}")
        elif event == "open" and args:
            path = args[0]
            if isinstance(path, bytes):
                path = path.decode("utf-8", "replace")
            if isinstance(path, str) and path.startswith(self.reference_dir):
                self._record(f"opened {Path(path).name} of the reference solutions")

    def _record(self, what: str) -> None:
        self.active = False  # the frame walk below must not re-enter
        try:
            frame, where = sys._getframe(2), None
            while frame is not None:
                if frame.f_code.co_filename.startswith(self.submission_dir):
                    where = Path(frame.f_code.co_filename).name
                    break
                frame = frame.f_back
            if where is not None:  # the grader's own reads (e.g. traceback source lines) are not the student's
                self.events.append({"what": what, "file": where})
        finally:
            self.active = True
