"""Import a submission folder and find its hook implementations.

Every top-level ``.py`` file is imported as a module named after the file, with
the folder on the *end* of ``sys.path`` so files can import their siblings but
never shadow installed modules. Each problem is recorded against its file and
the rest of the submission is still used.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from grader.hints import NOT_INSTALLED, missing_package
from grader.plugins import get_plugin_manager
from grader.registry import EXERCISE_HOOKS
from grader.runner.tracebacks import describe_exception, uninstalled_module

#: the hook specs, read once as the runner starts rather than again in every child
_HOOK_SPECS = get_plugin_manager(with_builtins=False)
#: how alike (difflib's ratio) a name and a hook must be for the name to count as that hook misspelt
_NEAR_SPELLING = 0.8
#: the module-level values pluggy can take for a hook implementation; the rest need no closer look
_HOOKABLE = (types.FunctionType, types.MethodType, staticmethod, classmethod)


@dataclass
class LoadedSubmission:
    folder: Path
    #: hook name -> the student's function
    hooks: dict[str, Callable] = field(default_factory=dict)
    #: hook name -> file name that implements it
    where: dict[str, str] = field(default_factory=dict)
    #: (file name, message, severity, line or 0)
    problems: list[tuple[str, str, str, int]] = field(default_factory=list)
    modules: list[Any] = field(default_factory=list)
    #: hooks some file marks @hookimpl (used or not), and hook -> (file, line) of a same-named function without the marker
    marked: set[str] = field(default_factory=set)
    unmarked: dict[str, tuple[str, int]] = field(default_factory=dict)

    def problem(self, path: str, message: str, severity: str = "error", line: int = 0) -> None:
        self.problems.append((path, message, severity, line))


def _positional_arity_ok(func: Callable, nargs: int) -> bool:
    try:
        inspect.signature(func).bind(*range(nargs))
    except TypeError:
        return False
    except ValueError:  # builtins without signatures: let the call decide
        return True
    return True


def load_submission(folder: Path, reference: Optional[dict[str, Callable]] = None,
                    after_import: Optional[Callable[[str], None]] = None,
                    only: Optional[list[str]] = None, stand_ins: tuple[str, ...] = ()) -> LoadedSubmission:
    """Import the folder's files.

    :param only: import just these files (their siblings still load when imported).
    :param stand_ins: module names served by the reference instead (files that hang or kill the
        process at import), so that files importing them can still be graded.
    """
    folder = folder.resolve()
    loaded = LoadedSubmission(folder)
    pm = _HOOK_SPECS
    files = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    if only is not None:
        files = [p for p in files if p.name in only]
    if reference is not None:
        for stem in stand_ins:
            if stem.isidentifier() and stem not in sys.modules and importlib.util.find_spec(stem) is None:
                sys.modules[stem] = stand_in_module(stem, reference)
    importable = []
    for path in files:
        stem = path.stem
        if not stem.isidentifier():
            loaded.problem(path.name, f"'{path.name}' is not a valid module name; rename it (letters, digits, underscores)")
            continue
        existing = sys.modules.get(stem)
        if existing is not None or importlib.util.find_spec(stem) is not None:
            loaded.problem(
                path.name,
                f"'{path.name}' has the same name as the installed module '{stem}', so it was not loaded; "
                f"rename it (for example to '{stem}_solution.py')",
            )
            continue
        importable.append(path)
    sys.path.append(str(folder))
    failed: dict[str, tuple[Path, BaseException]] = {}
    for path in importable:
        _import_file(loaded, path, pm, failed)
        if after_import is not None:
            after_import(path.name)
    # A file that failed only because a sibling it imports is broken is retried
    # with the reference standing in for that sibling, so one bug costs one exercise.
    dependent = {stem: item for stem, item in failed.items() if _origin(item[1], folder) not in (None, item[0].name)}
    broken = {stem for stem in failed if stem not in dependent}
    if dependent and broken and reference is not None:
        for stem in broken:
            sys.modules[stem] = stand_in_module(stem, reference)
        for stem, (path, exc) in dependent.items():
            origin = _origin(exc, folder)
            if _import_file(loaded, path, pm, {}):
                loaded.problem(path.name, f"imports {origin}, which could not be loaded; the reference's functions "
                                          f"stood in for it so that {path.name} could still be graded", "warning",
                               line=_line_in(exc, path))
                continue
            loaded.problem(path.name, f"could not be imported because {origin} failed: {describe_exception(exc, folder)}",
                           line=_line_in(exc, path))
    else:
        for stem, (path, exc) in dependent.items():
            loaded.problem(path.name, f"could not be imported: {describe_exception(exc, folder)}", line=_line_in(exc, path))
    for stem in broken:
        path, exc = failed[stem]
        missing = uninstalled_module(exc, folder)
        if missing:  # what to do first: a summary line shows only the start of a message
            error = describe_exception(exc, folder).replace(NOT_INSTALLED, "")
            loaded.problem(path.name, f"imports {missing}, which is not installed: {missing_package(missing)} ({error})",
                           line=_line_in(exc, path))
        else:
            loaded.problem(path.name, f"could not be imported: {describe_exception(exc, folder)}", line=_line_in(exc, path))
    _warn_unmarked(loaded)
    return loaded


def _warn_unmarked(loaded: LoadedSubmission) -> None:
    """A function named exactly like a hook but not marked is almost always a forgotten ``@hookimpl``;
    when another file marks that hook, it is just a helper and nothing is said."""
    for name, (filename, line) in sorted(loaded.unmarked.items()):
        if name in loaded.marked:
            continue
        loaded.problem(
            filename,
            f"'{name}' is not marked @hookimpl, so it was not graded: put `@hookimpl` on the "
            "line above it (and `from grader import hookimpl` at the top)",
            severity="warning", line=line,
        )


def suggest_hook(name: str) -> Optional[str]:
    """The hook a name that is not one most likely means.

    A hook the name starts with or contains comes first, the longest one (``rnn_forward`` means ``rnn``,
    not ``rnn_model``), unless the name is a near-spelling of a longer hook (``init_rnn_stat`` means
    ``init_rnn_state``, though it contains ``rnn``); otherwise difflib's closest, if any is close.
    """
    lowered = name.lower()
    inside = [hook for hook in EXERCISE_HOOKS if hook in lowered]
    if not inside:
        close = difflib.get_close_matches(lowered, EXERCISE_HOOKS, n=1)
        return close[0] if close else None
    best = max(inside, key=lambda hook: (len(hook), lowered.startswith(hook)))
    near = difflib.get_close_matches(lowered, EXERCISE_HOOKS, n=1, cutoff=_NEAR_SPELLING)
    return near[0] if near and len(near[0]) > len(best) else best


def _import_file(loaded: LoadedSubmission, path: Path, pm: Any, failed: dict) -> bool:
    try:
        module = importlib.import_module(path.stem)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit at import is the file's problem too
        sys.modules.pop(path.stem, None)
        failed[path.stem] = (path, exc)
        return False
    loaded.modules.append(module)
    _collect_hooks(loaded, module, path.name, pm)
    return True


def _line_in(exc: BaseException, path: Path) -> int:
    """The line of ``path`` where its import failed: a syntax error's, else its newest frame's (0: none)."""
    if isinstance(exc, SyntaxError) and exc.filename == str(path) and exc.lineno:
        return int(exc.lineno)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    return int(frames[-1].lineno or 0) if frames else 0


def _origin(exc: BaseException, folder: Path) -> Optional[str]:
    """The submission file where an import failure started."""
    if isinstance(exc, SyntaxError) and exc.filename and str(exc.filename).startswith(str(folder)):
        return Path(exc.filename).name
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(str(folder))]
    return Path(frames[-1].filename).name if frames else None


def stand_in_module(stem: str, reference: dict[str, Callable]) -> types.ModuleType:
    """A module in place of a submission file that could not be imported.

    It serves the reference's functions this run holds (never the graded hook's: the run does not
    hold it); any other name is a function that raises when called, so files importing it still load.
    """
    module = types.ModuleType(stem, "stands in for a submission file that could not be imported")
    for name, func in reference.items():
        setattr(module, name, func)

    def missing(name: str) -> Callable:
        if name.startswith("__"):
            raise AttributeError(name)

        def stand_in(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"{stem}.{name} is not available: {stem}.py could not be imported")
        return stand_in

    module.__getattr__ = missing  # type: ignore[attr-defined]
    return module


def _marked_functions(module: Any, pm: Any) -> list[tuple[str, Any]]:
    """(hook name, function) for each function the module marks @hookimpl, once per function.

    A function bound to several names (``predict_ch8 = predict``, the book's name kept beside the
    hook's) counts under the name that is a hook, else its own; ``@hookimpl(specname="predict")``
    names its hook as pluggy reads it.
    """
    names: dict[int, list[str]] = {}
    for name, obj in sorted(vars(module).items()):
        names.setdefault(id(obj), []).append(name)
    found = []
    for name, obj in sorted(vars(module).items()):
        if not _own_function(obj, module):
            continue
        opts = pm.parse_hookimpl_opts(module, name)
        bound = names[id(obj)]
        if opts is None or name != _main_name(bound, getattr(obj, "__name__", None)):
            continue  # not marked, or an alias of a name counted already
        found.append((opts.get("specname") or name, obj))
    return found


def _main_name(bound: list[str], own: Optional[str]) -> str:
    """Which of the names a function is bound to counts: a hook's, else its own, else the first."""
    hooks = [n for n in bound if n in EXERCISE_HOOKS]
    return hooks[0] if hooks else own if own in bound else bound[0]


def _own_function(obj: Any, module: Any) -> bool:
    """A function pluggy could take that ``module`` defines (not one imported from a sibling: counted there)."""
    return isinstance(obj, _HOOKABLE) and getattr(obj, "__module__", None) == module.__name__


def _collect_hooks(loaded: LoadedSubmission, module: Any, filename: str, pm: Any) -> None:
    marked = _marked_functions(module, pm)
    marked_ids = {id(obj) for _, obj in marked}
    for name, obj in sorted(vars(module).items()):
        code = getattr(obj, "__code__", None)
        if (_own_function(obj, module) and id(obj) not in marked_ids and name in EXERCISE_HOOKS and code is not None
                and getattr(obj, "__name__", None) == name):
            loaded.unmarked.setdefault(name, (filename, code.co_firstlineno))
    for name, obj in marked:
        if name not in EXERCISE_HOOKS:
            close = suggest_hook(name)
            hint = f"; did you mean '{close}'?" if close else f"; the hooks are: {', '.join(EXERCISE_HOOKS)}"
            loaded.problem(filename, f"'{name}' is marked @hookimpl but is not a hook of this course{hint}",
                           line=_first_line(obj))
            continue
        loaded.marked.add(name)
        spec_args = pm.hook.__dict__[name].spec.argnames
        if not _positional_arity_ok(obj, len(spec_args)):
            loaded.problem(
                filename,
                f"'{name}' must accept {len(spec_args)} arguments ({', '.join(spec_args)}); it was not used",
                line=_first_line(obj),
            )
            continue
        if name in loaded.hooks:
            loaded.problem(
                filename,
                f"'{name}' is also implemented in {loaded.where[name]}; the one in {loaded.where[name]} is graded. "
                "Keep a single implementation.",
                severity="warning", line=_first_line(obj),
            )
            continue
        loaded.hooks[name] = obj
        loaded.where[name] = filename


def _first_line(obj: Any) -> int:
    code = getattr(obj, "__code__", None) or getattr(getattr(obj, "__func__", None), "__code__", None)
    return int(getattr(code, "co_firstlineno", 0) or 0)


def isolate(loaded: LoadedSubmission, keep: set[str], reference: dict[str, Callable]) -> None:
    """Make the submission's own calls to other hooks use the reference.

    A check grades one function; if the student's ``train_epoch`` calls their own
    ``grad_clipping``, a clipping bug would cost points twice. Module globals
    that name another hook are pointed at the reference implementation.
    """
    hooks = [name for name in EXERCISE_HOOKS if name not in keep and name in reference]
    if not hooks:
        return
    student_modules = {m.__name__ for m in loaded.modules}
    folder = str(loaded.folder)
    for module in _modules_from(loaded):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict) or not str(namespace.get("__file__") or "").startswith(folder):
            continue
        for name in hooks:
            value = namespace.get(name)
            if callable(value) and getattr(value, "__module__", None) in student_modules:
                namespace[name] = reference[name]


def _modules_from(loaded: LoadedSubmission) -> list[Any]:
    """The modules imported from the submission's folder: its files, and any module a file there
    (even one written since) is imported as. Only these are read: every module a child reads is
    memory the kernel copies for it."""
    found = {id(module): module for module in loaded.modules}
    try:
        names = [entry.name for entry in os.scandir(loaded.folder)]
    except OSError:
        names = []
    for name in names:
        module = sys.modules.get(name[:-3] if name.endswith(".py") else name)
        if module is not None:
            found.setdefault(id(module), module)
    return list(found.values())
