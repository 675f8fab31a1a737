"""Reporters: the terminal summary, the HTML report and Gradescope's ``results.json``.

Each is a plugin implementing ``grader_report(report, config)``; all of them read the plain
records of :mod:`grader.results` only, through the shared helpers of :mod:`~grader.report.formatting`.
Report files are written with :func:`write_text_atomic`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, all or nothing, and return the path.

    The text goes to a temporary file in the same folder that then replaces ``path``, so a
    failure half-way leaves the previous file or none, never half of one. Characters UTF-8
    cannot hold (lone surrogates) are written as escapes such as ``\\ud800``.
    """
    path = Path(path)
    data = text.encode("utf-8", "backslashreplace")
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through a link or file someone placed there; mode 0o666 lets the umask decide, as open() does
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)  # the new file's bytes reach the disk before its name does
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return path
