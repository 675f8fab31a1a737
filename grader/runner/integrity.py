"""Runner-side tamper evidence: what a submission changed in the grader's world.

Verdicts are computed in the judge, but the runner still executes grader code
around the student's (the instrumented training objects, the encoder of the
result). A submission that rebinds a torch, numpy or grader function, or that
imports or reads the reference solutions, is recorded here and the judge
withholds the affected points.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import sys
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional

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


#: a module is the reference's when its name is an answer package or starts with one of these
_ANSWER_PREFIXES = tuple(package + "." for package in ANSWER_PACKAGES)


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
    for cls in _torch_classes():
        yield _class_name(cls), cls


def _torch_classes() -> tuple[type, ...]:
    return torch.Tensor, torch._C.TensorBase, torch.nn.Module, torch.optim.Optimizer, torch.optim.SGD


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_reference(name: str) -> bool:
    return name in ANSWER_PACKAGES or name.startswith(_ANSWER_PREFIXES)


def _is_function_like(value: Any) -> bool:
    return (callable(value) or isinstance(value, (classmethod, staticmethod, property))) \
        and not isinstance(value, types.ModuleType)


#: what a Python function runs besides itself: its code and its default arguments
FUNCTION_PARTS = ("__code__", "__defaults__", "__kwdefaults__")
_parts_of = operator.attrgetter(*FUNCTION_PARTS)
_module_of = operator.attrgetter("__module__")


class Watched(NamedTuple):
    """One watched object as the snapshot found it; held, so that an identity stays its own."""

    value: Any
    #: its code, defaults and keyword defaults; None when it has none of them (C functions, classes)
    parts: Optional[tuple]


def _watch(value: Any) -> Watched:
    parts = tuple(getattr(value, name, None) for name in FUNCTION_PARTS)
    return Watched(value, None if all(part is None for part in parts) else parts)


def _same(current: Any, watched: Watched) -> bool:
    """Whether ``current`` is the watched object, still with its code and defaults.

    Only a Python function (or a method bound to one) runs a ``__code__`` with its defaults; anything
    else (a C function, a class) runs none of its own, so identity is all there is to compare.
    """
    if current is not watched.value:
        return False
    return watched.parts is None or _same_items((getattr(current, name, None) for name in FUNCTION_PARTS), watched.parts)


def _same_items(current: Iterable[Any], expected: Iterable[Any]) -> bool:
    """Identity, item by item: never ``==``, which a replacement could answer as it likes."""
    return all(map(operator.is_, current, expected))


def _getter(keys: tuple) -> Callable[[Any], tuple]:
    """``mapping -> tuple(mapping[key] for key in keys)``, looped in C; a missing key raises KeyError."""
    if not keys:
        return lambda mapping: ()
    get = operator.itemgetter(*keys)
    return get if len(keys) > 1 else lambda mapping: (get(mapping),)


class _Namespace(NamedTuple):
    """A watched namespace's entries, laid out for one identity check."""

    owner: str
    mapping: Mapping[str, Any]
    values_of: Callable[[Any], tuple]
    expected: tuple

    def holds(self) -> bool:
        """Whether it still holds every entry the snapshot found in it."""
        try:
            return _same_items(self.values_of(self.mapping), self.expected)
        except KeyError:
            return False


class _ClassLayout(NamedTuple):
    """A watched class's own names: the same set while none is missing and there are no more of them."""

    owner: str
    mapping: Mapping[str, Any]
    size: int
    #: fetches the own names that are not entries (the entries are checked with the namespaces)
    others_of: Callable[[Any], tuple]

    def unchanged(self) -> bool:
        if len(self.mapping) != self.size:
            return False
        try:
            self.others_of(self.mapping)
        except KeyError:
            return False
        return True


class Snapshot:
    """Identities of every function and class reachable from the watched namespaces.

    Classes are watched member by member: a grader class's methods, and the names a watched torch
    class inherits (a conversion method added to ``torch.Tensor`` shadows ``TensorBase``'s).

    Taken once in the zygote, compared in every forked child. A child pays for each object it
    touches (the kernel copies the page), so :meth:`changes` compares what the snapshot holds by
    identity, in C loops, and looks names up one by one only in a namespace where something differs.
    """

    def __init__(self, answer_folders: Optional[Iterable[str]] = None) -> None:
        self.reference_dirs = tuple(answer_folders) if answer_folders is not None else answer_dirs()
        #: (owner, name) -> what the name held
        self.entries: dict[tuple[str, str], Watched] = {}
        #: names each watched class had, own or inherited; a new own name that shadows one is a change
        self.inherited: dict[str, set[str]] = {}
        self._owners = dict(_watched())
        for owner, namespace in self._owners.items():
            for key, value in list(vars(namespace).items()):
                if _is_function_like(value):
                    self.entries[(owner, key)] = _watch(value)
            if isinstance(namespace, type):
                self.inherited[owner] = set(dir(namespace)) - set(vars(namespace))
        self._lay_out_owners()
        self._lay_out_entries()

    def _lay_out_owners(self) -> None:
        """Where :meth:`_same_owners` finds each owner: modules by name, the grader's classes in their module."""
        owners = self._owners
        module_names = tuple(name for name, namespace in owners.items() if sys.modules.get(name) is namespace)
        self._modules_of, self._modules = _getter(module_names), tuple(owners[name] for name in module_names)
        self._torch_classes = _torch_classes()
        self._torch_names = tuple(map(_class_name, self._torch_classes))
        # the grader's classes: owners while their module holds them and they still name it as theirs
        classes = []
        for name, cls in owners.items():
            if isinstance(cls, type) and name not in module_names and name not in self._torch_names:
                module = cls.__module__  # the class is an owner as f"{module}.{key}"
                classes.append((vars(owners[module]), name[len(module) + 1:], cls, module))
        self._classes = tuple(classes)

    def _lay_out_entries(self) -> None:
        """What :meth:`_suspects` compares: each namespace's entries, each function's code and defaults."""
        by_owner: dict[str, dict[str, Watched]] = {}
        for (owner, key), watched in self.entries.items():
            if (owner, key) not in REBOUND_BY_TORCH:
                by_owner.setdefault(owner, {})[key] = watched
        self._namespaces = tuple(
            _Namespace(owner, vars(self._owners[owner]), _getter(tuple(items)), tuple(w.value for w in items.values()))
            for owner, items in by_owner.items())
        coded = [(owner, w) for owner, items in by_owner.items() for w in items.values() if w.parts is not None]
        self._functions = tuple((owner, w) for owner, w in coded if type(w.value) is types.FunctionType)
        self._function_values = tuple(w.value for _, w in self._functions)
        self._function_parts = tuple(part for _, w in self._functions for part in w.parts)
        self._other_coded = tuple((owner, w) for owner, w in coded if type(w.value) is not types.FunctionType)
        self._layouts = tuple(
            _ClassLayout(owner, vars(self._owners[owner]), len(vars(self._owners[owner])),
                         _getter(tuple(key for key in vars(self._owners[owner]) if key not in by_owner.get(owner, {}))))
            for owner in self.inherited)

    def changes(self) -> list[str]:
        """Names that were rebound, re-coded, deleted or shadowed since the snapshot (new names are fine)."""
        if self._same_owners():
            suspects = self._suspects()
            return (self._changed_entries(self._owners, suspects) if suspects else []) + self._shadowing()
        owners = dict(_watched())  # a module or class was replaced: look every owner up again
        return self._changed_entries(owners) + self._shadowing_in(owners)

    def restore(self) -> list[str]:
        """Put back every watched module, entry, code and default the snapshot holds, and remove new own names
        that shadow inherited ones; what still differs after that (a C type that refuses it) is returned.

        Only for the zygote, after an installed package's import changed them (see
        :mod:`grader.runner.preloading`); a child reports changes, it never repairs them.
        """
        for name, namespace in self._owners.items():
            if isinstance(namespace, types.ModuleType) and sys.modules.get(name) is not namespace:
                sys.modules[name] = namespace
        for (owner, key), watched in self.entries.items():
            namespace = self._owners[owner]
            with contextlib.suppress(AttributeError, TypeError):
                if vars(namespace).get(key, _MISSING) is not watched.value:
                    setattr(namespace, key, watched.value)
                elif watched.parts is not None and not _same(watched.value, watched):
                    target = getattr(watched.value, "__func__", watched.value)
                    for part, value in zip(FUNCTION_PARTS, watched.parts):
                        setattr(target, part, value)
        for owner, names in self.inherited.items():
            namespace = self._owners[owner]
            for key in [k for k in vars(namespace) if k in names and (owner, k) not in self.entries]:
                with contextlib.suppress(AttributeError, TypeError):
                    delattr(namespace, key)
        return self.changes()

    def _same_owners(self) -> bool:
        """Whether every watched module and class is where the snapshot found it, under the same name."""
        modules = sys.modules
        try:
            return type(modules) is dict and _same_items(self._modules_of(modules), self._modules) \
                and all(home.get(key) is cls and _module_of(cls) is module for home, key, cls, module in self._classes) \
                and _same_items(_torch_classes(), self._torch_classes) \
                and tuple(map(_class_name, self._torch_classes)) == self._torch_names
        except (LookupError, AttributeError):  # a module or a class's __module__ gone
            return False

    def _suspects(self) -> set[str]:
        """The owners where an entry may have changed; none when every entry is still what it was."""
        suspects = {namespace.owner for namespace in self._namespaces if not namespace.holds()}
        if not _same_items(itertools.chain.from_iterable(map(_parts_of, self._function_values)), self._function_parts):
            suspects |= {owner for owner, watched in self._functions if not _same(watched.value, watched)}
        return suspects | {owner for owner, watched in self._other_coded if not _same(watched.value, watched)}

    def _changed_entries(self, owners: Mapping[str, Any], only: Optional[set[str]] = None) -> list[str]:
        """The entries (of the ``only`` owners) that changed, in snapshot order, each owner as in ``owners``."""
        changed = []
        for (owner, key), watched in self.entries.items():
            if (owner, key) in REBOUND_BY_TORCH or (only is not None and owner not in only):
                continue
            namespace = owners.get(owner)
            current = vars(namespace).get(key, _MISSING) if namespace is not None else _MISSING
            if current is _MISSING or (not _same(current, watched) and not _hooked_by_torch(current, watched)):
                changed.append(f"{owner}.{key}")
        return changed

    def _shadowing(self) -> list[str]:
        """New own names of the watched classes that shadow inherited ones (the classes are where they were)."""
        changed = []
        for layout in self._layouts:
            if not layout.unchanged():
                names = self.inherited[layout.owner]
                changed += [f"{layout.owner}.{key}" for key in list(layout.mapping) if key in names]
        return changed

    def _shadowing_in(self, owners: Mapping[str, Any]) -> list[str]:
        """New own names that shadow inherited ones, each class looked up in ``owners``."""
        changed = []
        for owner, names in self.inherited.items():
            namespace = owners.get(owner)
            if namespace is not None:
                changed += [f"{owner}.{key}" for key in vars(namespace) if key in names and (owner, key) not in self.entries]
        return changed


_MISSING = object()


def _loaded_reference_modules() -> list[str]:
    """The reference's modules in ``sys.modules``.

    A module is imported after its package, so while no answer package is loaded none of their
    modules is, and the long list of every module's name need not be read.
    """
    if not any(package in sys.modules for package in ANSWER_PACKAGES):
        return []
    return [name for name in sys.modules if _is_reference(name)]


def _hooked_by_torch(current: Any, watched: Watched) -> bool:
    """torch wraps an optimizer class's ``step`` in a profiling hook the first time one is made."""
    wrapped = getattr(current, "__wrapped__", None)
    torch_wrapper = getattr(getattr(current, "__code__", None), "co_name", None) == "wrapper" and \
        current.__code__ in torch.optim.Optimizer.profile_hook_step.__code__.co_consts
    return torch_wrapper and wrapped is not None and _same(wrapped, watched)


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
        for name in _loaded_reference_modules():
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
