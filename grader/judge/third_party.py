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
#: most distinct names looked up in the environment for one submission (a file may list thousands)
LOOKUP_LIMIT = 256
#: what the runner has imported before any request: preloading them would change nothing
LOADED_BY_RUNNER = frozenset({"torch", "numpy", "grader", "pluggy", "typing_extensions"})


def imported_names(source: str) -> list[str]:
    """The top-level module names a source imports, absolute imports only, in order of first appearance.

    Every ``import`` statement counts, also those inside functions and ``try`` blocks: the runner
    imports them in the zygote only if they are installed, and a failure there costs nothing.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # the runner's loader reports the syntax error
    names: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.setdefault(alias.name.partition(".")[0], None)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.setdefault(node.module.partition(".")[0], None)
    return list(names)


def preloads(files: Mapping[str, str]) -> tuple[str, ...]:
    """The installed third-party packages the submission's files import, for the runner to preload (at most
    :data:`~grader.protocol.PRELOAD_LIMIT`, in file order), never one of the submission's own module names.

    :param files: file name -> source, as read from the submission.
    """
    if os.environ.get(NO_PRELOAD, "") not in ("", "0"):
        return ()
    own = {Path(name).stem for name in files}
    found: dict[str, None] = {}
    looked_up: set[str] = set()
    for name in sorted(files):
        for module in imported_names(files[name]):
            if module in own or module in LOADED_BY_RUNNER or module in looked_up:
                continue
            if len(looked_up) == LOOKUP_LIMIT:
                return tuple(found)
            looked_up.add(module)
            if installed_origin(module) is None:
                continue
            found[module] = None
            if len(found) == PRELOAD_LIMIT:
                return tuple(found)
    return tuple(found)
