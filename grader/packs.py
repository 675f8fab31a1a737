"""Check packs: checks that live outside the grader, e.g. an instructor's hidden checks.

A pack is either an installed package registered under the ``rnn_grader`` entry-point group,
or a folder of check modules given with ``grade --plugins PATH``. Each module implements
``grader_checks(config)`` like the built-in ones (see ``docs/check-packs.md``).

The runner never imports a pack from disk: every run of a pack's probe carries its module's
source (:func:`probe_source`), so a pack is visible to student code only during its own
checks' runs, and needs no path inside the sandbox. A probe's module must therefore be
self-contained on the runner's side: it may import the grader, torch, numpy and the
standard library, not other modules of the pack.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

#: plugin names of folder modules start with it: "pack:<folder>/<module>"
PACK_PREFIX = "pack:"
#: the grader's own modules are in the runner already; every other probe module travels as source
_BUILT_IN = ("grader.",)


class PackError(Exception):
    """A pack cannot be loaded; the message names the file and what to fix."""


def load_folder(pm: Any, folder: Path) -> list[str]:
    """Register every ``*.py`` module of ``folder`` as a plugin; the plugin names registered."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PackError(f"--plugins {folder}: not a folder; give the folder that holds the pack's check modules")
    names = []
    paths = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py" and not p.is_symlink())
    if not paths:
        raise PackError(f"--plugins {folder}: holds no .py check modules")
    for path in paths:
        module = _import(path)
        name = f"{PACK_PREFIX}{folder.resolve().name}/{path.stem}"
        if pm.get_plugin(name) is None:
            try:
                pm.register(module, name=name)
            except Exception as exc:  # noqa: BLE001 - pluggy's validation: a hook's arguments do not fit its spec
                raise PackError(f"{path}: {exc}") from None
        names.append(name)
    return names


def _import(path: Path) -> Any:
    # a name no submission file or installed package can have, the same for the same file and content
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise PackError(f"{path}: cannot be read ({exc.strerror})") from None
    digest = hashlib.sha256(str(path.resolve()).encode() + b"\0" + content).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_grader_pack_{digest}_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PackError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a pack's own error, shown where it happened
        del sys.modules[name]
        where = _where(exc, path)
        raise PackError(f"{where}: the check pack raised {type(exc).__name__}: {exc}") from None
    return module


def _where(exc: BaseException, path: Path) -> str:
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{path}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def probe_source(run: Callable[..., Any]) -> str:
    """The source the runner builds a pack's probe module from; "" for the grader's own probes."""
    module = getattr(run, "__module__", "") or ""
    if module.startswith(_BUILT_IN):
        return ""
    return _module_source(module)


@functools.lru_cache(maxsize=64)
def _module_source(module_name: str) -> str:
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if not path:
        raise PackError(f"the probe module {module_name} has no source file; a pack's probes must live in a .py file")
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PackError(f"{path}: cannot be read ({exc})") from None
