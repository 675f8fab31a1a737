"""Exceptions raised by student code, described by the student's own frames."""

from __future__ import annotations

import importlib.util
import sysconfig
import traceback
from pathlib import Path
from typing import Any, Optional

import grader
from grader.hints import GRADER_OWN, NOT_INSTALLED
from grader.prose import shorten

#: where the grader's own code lives in the runner: its package, and the code a request carries
#: (the reference parts, compiled as "<reference NAME>", and a pack's probe, "<check pack NAME>")
_PACKAGE = Path(grader.__file__).parent
GRADER_CODE = tuple(dict.fromkeys((f"{_PACKAGE}/", f"{_PACKAGE.resolve()}/", "<reference ", "<check pack ")))
#: where libraries live (torch, numpy, the standard library)
LIBRARIES = tuple(dict.fromkeys(f"{sysconfig.get_paths()[key]}/" for key in ("stdlib", "platstdlib", "purelib", "platlib")))
#: library frames through which an error still comes from the student's objects: a call of an nn.Module
#: (the student's model, even one made only of torch's layers) and autograd (the graph the student built)
STUDENT_OBJECT_FRAMES = ("torch/nn/modules/", "torch/autograd/", "torch/_tensor.py")


def student_frames(tb: Any, folder: Path) -> list[str]:
    """The traceback lines that point into the submission, newest last."""
    folder_str = str(folder)
    lines = []
    for frame in traceback.extract_tb(tb):
        if frame.filename.startswith(folder_str):
            name = Path(frame.filename).name
            code = f": {frame.line.strip()}" if frame.line else ""
            lines.append(f"{name}:{frame.lineno} in {frame.name}{code}")
    return lines


def describe_exception(exc: BaseException, folder: Path) -> str:
    """``"Type: message at file.py:N in f: code"`` with the newest student frame (``file.py:N``: the form
    terminals and editors turn into a link)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a student exception whose __str__ itself fails
        text = type(exc).__name__
    if uninstalled_module(exc, folder):
        text += NOT_INSTALLED
    frames = student_frames(exc.__traceback__, folder)
    if isinstance(exc, SyntaxError) and exc.lineno:
        text = f"{type(exc).__name__}: {exc.msg}"
        if str(exc.filename or "").startswith(str(folder)):  # the error is in this file, not in a frame of it
            frames = [f"{Path(exc.filename).name}:{exc.lineno}" + (f": {exc.text.strip()}" if exc.text else "")]
    where = f" at {frames[-1]}" if frames else ""
    own = GRADER_OWN if not frames and raised_by_grader(exc, folder) else ""
    return shorten(own + shorten(text, 2000) + where, 2400)


def uninstalled_module(exc: BaseException, folder: Path) -> Optional[str]:
    """The top-level module a ModuleNotFoundError names when it is neither a file of the submission nor installed
    (a package to install, then), else None."""
    if not isinstance(exc, ModuleNotFoundError) or not isinstance(exc.name, str):
        return None
    name = exc.name.partition(".")[0]
    if not name.isidentifier() or (folder / f"{name}.py").exists() or (folder / name).is_dir():
        return None
    try:
        return name if importlib.util.find_spec(name) is None else None
    except (ImportError, ValueError):
        return None


def raised_by_grader(exc: BaseException, folder: Path) -> bool:
    """Did the grader's own code raise this on what student code returned, with none of the submission running?

    True when the newest frame that is not a library's is the grader's (a probe's comparison, the reference's
    loop): e.g. a broadcast error in a probe that multiplies the returned outputs by its weights. An error
    from inside an nn.Module call or autograd is the student's objects' (their model, their graph).
    """
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        name = frame.filename
        if name.startswith(GRADER_CODE) and not name.startswith(str(folder)):
            return True
        library = name.startswith(LIBRARIES) or "/site-packages/" in name
        if not library or any(part in name for part in STUDENT_OBJECT_FRAMES):
            return False  # the submission's frame, the import machinery, or the student's model or graph
    return False


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
