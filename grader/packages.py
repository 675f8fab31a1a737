"""Installed third-party packages: whether a top-level module name is one, and where it lives.

Shared by the judge (which reads a submission's imports and asks the runner to preload the installed
packages among them) and the runner (which checks each name again before importing it).
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Optional

#: folders that hold installed packages, as a path's parts name them
PACKAGE_FOLDERS = ("site-packages", "dist-packages")


def installed_origin(name: str) -> Optional[str]:
    """Where the installed third-party package ``name`` (a top-level name) lives, or None (standard library, not
    installed, elsewhere).

    ``find_spec`` of a top-level name runs no code of the package, only the interpreter's finders.
    """
    if not name.isidentifier() or name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    return installed_location(spec)


def installed_location(spec: Optional[ModuleSpec]) -> Optional[str]:
    """Where a module found by ``spec`` lives when that is inside a site-packages (or dist-packages) folder, else None."""
    if spec is None:
        return None
    origin = spec.origin if spec.origin not in (None, "namespace", "built-in", "frozen") else None
    if origin is None and spec.submodule_search_locations:
        origin = next(iter(spec.submodule_search_locations), None)
    if origin is None or not any(part in PACKAGE_FOLDERS for part in Path(origin).parts):
        return None
    return origin
