"""Runner-side tamper evidence: what a submission changed in the grader's world.

Verdicts are computed in the judge, but the runner still executes grader code
around the student's (the instrumented training objects, the encoder of the
result). A submission that rebinds a torch, numpy or grader function, or that
imports or reads the reference solutions, is recorded here and the judge
withholds the affected points.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from grader.registry import ANSWER_PACKAGES, answer_dirs

#: modules whose functions the runner relies on; checked for rebinding after student code ran
WATCHED_MODULES = ("builtins", "math", "os", "json", "base64", "struct", "numpy", "torch", "torch.nn.functional",
                   "torch.nn.modules.module", "torch.optim.optimizer", "torch.optim.sgd", "torch.autograd")
WATCHED_PREFIXES = ("grader",)
#: modules that read source files to describe a stack (tracebacks, anomaly detection, warnings)
TRACEBACK_MACHINERY = {"linecache", "traceback", "tokenize", "inspect", "warnings"}
#: the reference code a run holds is built under this name (see grader.runner.child.build_parts)
PARTS_PREFIX = "grader.reference_parts"
#: names torch rebinds itself (torch.set_default_dtype swaps the legacy Storage alias)
REBOUND_BY_TORCH = {("torch", "Storage")}


def _watched() -> Iterable[tuple[str, Any]]:
    for name, module in list(sys.modules.items()):
        if module is None or _is_reference(name) or name.startswith(PARTS_PREFIX):
            continue
        if name in WATCHED_MODULES or name.split(".")[0] in WATCHED_PREFIXES:
            yield name, module
            if name.split(".")[0] in WATCHED_PREFIXES:  # the grader's own classes (its recording objects)
                for key, value in list(vars(module).items()):
                    if isinstance(value, type) and getattr(value, "__module__", None) == name:
                        yield f"{name}.{key}", value
    for cls in (torch.Tensor, torch._C.TensorBase, torch.nn.Module, torch.optim.Optimizer, torch.optim.SGD):
        yield f"{cls.__module__}.{cls.__qualname__}", cls


def _is_reference(name: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in ANSWER_PACKAGES)


def _fingerprint(obj: Any) -> tuple:
    code = getattr(obj, "__code__", None)
    return (id(obj), id(code), id(getattr(obj, "__defaults__", None)), id(getattr(obj, "__kwdefaults__", None)))


def _is_function_like(value: Any) -> bool:
    return (callable(value) or isinstance(value, (classmethod, staticmethod, property))) \
        and not isinstance(value, types.ModuleType)


class Snapshot:
    """Identities of every function and class reachable from the watched namespaces.

    Classes are watched member by member: a grader class's methods, and the names a watched torch
    class inherits (a conversion method added to ``torch.Tensor`` shadows ``TensorBase``'s).
    """

    def __init__(self, answer_folders: Optional[Iterable[str]] = None) -> None:
        self.entries: dict[tuple[str, str], tuple] = {}
        #: names each watched class had, own or inherited; a new own name that shadows one is a change
        self.inherited: dict[str, set[str]] = {}
        self.reference_dirs = tuple(answer_folders) if answer_folders is not None else answer_dirs()
        for owner, namespace in _watched():
            for key, value in list(vars(namespace).items()):
                if _is_function_like(value):
                    self.entries[(owner, key)] = _fingerprint(value)
            if isinstance(namespace, type):
                self.inherited[owner] = set(dir(namespace)) - set(vars(namespace))

    def changes(self) -> list[str]:
        """Names that were rebound, re-coded, deleted or shadowed since the snapshot (new names are fine)."""
        changed = []
        owners: dict[str, Any] = dict(_watched())
        for (owner, key), print_ in self.entries.items():
            if (owner, key) in REBOUND_BY_TORCH:
                continue
            namespace = owners.get(owner)
            current = vars(namespace).get(key, _MISSING) if namespace is not None else _MISSING
            if current is _MISSING or (_fingerprint(current) != print_ and not _hooked_by_torch(current, print_)):
                changed.append(f"{owner}.{key}")
        for owner, names in self.inherited.items():
            namespace = owners.get(owner)
            if namespace is not None:
                changed += [f"{owner}.{key}" for key in vars(namespace) if key in names and (owner, key) not in self.entries]
        return changed


_MISSING = object()


def _hooked_by_torch(current: Any, print_: tuple) -> bool:
    """torch wraps an optimizer class's ``step`` in a profiling hook the first time one is made."""
    wrapped = getattr(current, "__wrapped__", None)
    torch_wrapper = getattr(getattr(current, "__code__", None), "co_name", None) == "wrapper" and \
        current.__code__ in torch.optim.Optimizer.profile_hook_step.__code__.co_consts
    return torch_wrapper and wrapped is not None and _fingerprint(wrapped) == print_


class ReferenceGuard:
    """Records the submission's own imports of the reference package and opens of its files.

    Inside the sandbox the reference is not there to reach; this is the record for runs without it.
    An act counts only when the submission's code did it: the grader's and torch's own reads (the
    traceback machinery reading source lines, as anomaly detection does) are not the student's.
    """

    def __init__(self, reference_dirs: Iterable[str], submission_dir: Path):
        self.reference_dirs = tuple(d.rstrip("/") + "/" for d in reference_dirs)
        self.submission_dir = str(submission_dir)
        self.events: list[dict] = []
        self.active = False

    def install(self) -> None:
        # Nothing of the reference is loaded in the runner; hide it anyway should a plugin have loaded it.
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
        elif event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            self.active = False  # realpath may itself be audited
            try:
                path = os.path.realpath(os.fsdecode(args[0]))  # "grader/../reference/x.py" is the same file
            except (OSError, ValueError, TypeError):
                path = ""
            finally:
                self.active = True
            if path.startswith(self.reference_dirs):
                self._record(f"opened {Path(path).name} of the reference solutions")

    def _record(self, what: str) -> None:
        self.active = False  # the frame walk below must not re-enter
        try:
            where = self._actor(sys._getframe(2))
            if where is not None:
                self.events.append({"what": what, "file": where})
        finally:
            self.active = True

    def _actor(self, frame: Any) -> Optional[str]:
        """The submission file whose code did the act, through whatever it called (the grader's
        ``reference_hooks()``, importlib, pathlib), or None when Python's tracebacks did it (they
        read source files to describe a stack, as anomaly detection makes them do) or no student
        code is on the stack."""
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename.startswith(self.submission_dir):
                return Path(filename).name
            if frame.f_globals.get("__name__") in TRACEBACK_MACHINERY:
                return None
            frame = frame.f_back
        return None
