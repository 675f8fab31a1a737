"""Exceptions raised by student code, described by the student's own frames."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from grader.prose import shorten


def student_frames(tb: Any, folder: Path) -> list[str]:
    """The traceback lines that point into the submission, newest last."""
    folder_str = str(folder)
    lines = []
    for frame in traceback.extract_tb(tb):
        if frame.filename.startswith(folder_str):
            name = Path(frame.filename).name
            code = f": {frame.line.strip()}" if frame.line else ""
            lines.append(f"{name}, line {frame.lineno}, in {frame.name}{code}")
    return lines


def describe_exception(exc: BaseException, folder: Path) -> str:
    """``"Type: message at file.py, line N, in f: code"`` with the newest student frame."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a student exception whose __str__ itself fails
        text = type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.lineno:
        text = f"SyntaxError: {exc.msg} (line {exc.lineno})"
    frames = student_frames(exc.__traceback__, folder)
    where = f" at {frames[-1]}" if frames else ""
    return shorten(shorten(text, 2000) + where, 2400)


def raised_by_student(exc: BaseException, folder: Path) -> bool:
    """Did the submission's own ``raise`` statement raise this (a skeleton's ``raise NotImplementedError``)?

    Torch raises NotImplementedError too (an operation the 'meta' device lacks); that one is an
    error in a hook that is implemented.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return True
    last = frames[-1]
    return last.filename.startswith(str(folder)) and (last.line or "").lstrip().startswith("raise")
