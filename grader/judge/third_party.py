"""Which installed third-party packages a submission imports, read from its source (never run).

The runner imports these once, before it forks the children that run the submission, so that a
package that is slow to import (the book's ``d2l`` takes seconds) costs one import per grading
instead of one per check. Only packages installed in the environment's site-packages qualify: never
the standard library, never the submission's own files, never what the runner loads anyway.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Mapping

from grader.packages import installed_origin
from grader.protocol import PRELOAD_LIMIT

#: set (to anything but "" or "0") to preload nothing: each run imports its packages itself, as before preloading
NO_PRELOAD = "GRADER_NO_PRELOAD"
#: most distinct top-level names looked up in the environment for one submission (a file may list thousands)
LOOKUP_LIMIT = 256
#: what the runner has imported before any request: preloading them would change nothing
LOADED_BY_RUNNER = frozenset({"torch", "numpy", "grader", "pluggy", "typing_extensions"})


def imported_names(source: str) -> list[str]:
    """The modules a source may import, absolute imports only, dotted, in order of first appearance.

    ``import a.b`` names ``a.b``; ``from a.b import c`` names ``a.b`` and ``a.b.c``, which may be a submodule
    (``from d2l import torch``: the slow part of d2l is its submodule) or just a name in ``a.b``; the runner
    tells them apart once ``a.b`` is imported. Every ``import`` statement counts, also those inside
    functions and ``try`` blocks: the runner imports only what is installed, and a failure there costs nothing.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # the runner's loader reports the syntax error
    names: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.setdefault(node.module, None)
            names.update((f"{node.module}.{alias.name}", None) for alias in node.names if alias.name != "*")
    return list(names)


def preloads(files: Mapping[str, str]) -> tuple[str, ...]:
    """The modules of installed third-party packages the submission's files import, for the runner to preload (at
    most :data:`~grader.protocol.PRELOAD_LIMIT`, in file order), never one of the submission's own module names.

    :param files: file name -> source, as read from the submission.
    """
    if os.environ.get(NO_PRELOAD, "") not in ("", "0"):
        return ()
    own = {Path(name).stem for name in files}
    found: dict[str, None] = {}
    installed: dict[str, bool] = {}  # top-level name -> an installed package?
    for name in sorted(files):
        for module in imported_names(files[name]):
            top = module.partition(".")[0]
            if top in own or top in LOADED_BY_RUNNER or module in found:
                continue
            if top not in installed:
                if len(installed) == LOOKUP_LIMIT:
                    return tuple(found)
                installed[top] = installed_origin(top) is not None
            if not installed[top]:
                continue
            found[module] = None
            if len(found) == PRELOAD_LIMIT:
                return tuple(found)
    return tuple(found)
