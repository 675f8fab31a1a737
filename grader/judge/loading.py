"""Reading a submission folder and loading it in the runner: which file implements which hook.

Files the grader cannot take (too large, not UTF-8) are problems, not errors. A file whose
import hangs or ends the process is found by loading the files one at a time, set aside,
and replaced by a reference stand-in, so that the files importing it can still be graded.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from grader.config import RunConfig
from grader.judge.runners import Runner
from grader.judge.third_party import preloads
from grader.judge.verdicts import SIGNALS, Decoded, decode
from grader.notebooks import NOTEBOOK_LIMIT, Converted, NotebookError, module_name, notebook_to_python, strip_ipython
from grader.protocol import DEFAULT_LIMITS, MiB, Reply, Request, Status
from grader.registry import EXERCISES, file_name
from grader.results import FileProblem

#: largest submission file, and all files together, that the grader accepts
FILE_LIMIT, SUBMISSION_LIMIT = 1 * MiB, 4 * MiB
#: most .py files graded from one submission; the rest are named in one problem
MAX_FILES = 32
#: the exercises' own file names (rnn_scratch.py, ...)
EXERCISE_FILES = tuple(file_name(exercise.name) for exercise in EXERCISES)
#: files graded: modules, and notebooks converted to modules
GRADED_SUFFIXES = (".py", ".ipynb")
#: seconds a submission's files may take to import
IMPORT_TIMEOUT = 10.0


#: open a submission file without following a symbolic link or waiting on a FIFO put in its place
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_SYMLINK = "is a symbolic link; it was not followed (put the file itself in the folder)"


def size_limit(name: str) -> int:
    """The largest file named ``name`` the grader reads: a notebook carries its outputs, a module only code."""
    return NOTEBOOK_LIMIT if name.endswith(".ipynb") else FILE_LIMIT


def read_submission(folder: Path) -> tuple[dict[str, str], list[FileProblem]]:
    """The submission's top-level .py files (and notebooks, as modules) as text; files the grader cannot take
    are problems. See :func:`read_graded`."""
    files, problems, _ = read_graded(folder)
    return files, problems


def read_graded(folder: Path) -> tuple[dict[str, str], list[FileProblem], dict[str, Converted]]:
    """The submission's top-level .py files as text, its notebooks converted to modules, and problems.

    ``folder`` may also be a single ``.py`` or ``.ipynb`` file: then only that file is graded. A notebook
    ``name.ipynb`` is graded as ``name.py`` (:mod:`grader.notebooks`); a real ``name.py`` beside it wins.
    Only regular files in the folder itself are read: a symbolic link could point the grader at any file
    on the machine, and a FIFO would block it.

    :returns: file name -> source; the problems; module file name (``name.py``) -> its notebook's conversion
    """
    files: dict[str, str] = {}
    notebooks: dict[str, Converted] = {}
    problems: list[FileProblem] = []
    if folder.name.endswith(GRADED_SUFFIXES) and not folder.is_dir():
        folder, names = folder.parent, [folder.name]
    else:
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(GRADED_SUFFIXES) and n != "__init__.py")
        except OSError as exc:
            return files, [FileProblem(".", f"the folder cannot be read: {exc.strerror}")], notebooks
    py_names = {n for n in names if n.endswith(".py")}
    # as on Gradescope: beside the exercises' own .py files, a notebook is a scratchpad unless named after one
    exercise_files = py_names & set(EXERCISE_FILES)
    total, taken, left_out = 0, 0, []
    for name in sorted(names, key=lambda n: (n.endswith(".ipynb"), n)):  # .py files first: they win a clash
        shown = printable_name(name)
        if shown != name:  # os.fsdecode kept the undecodable bytes as surrogates
            problems.append(FileProblem(shown, "has a name that is not valid UTF-8; rename it with plain letters, "
                                               "digits and underscores"))
            continue
        module = name
        if name.endswith(".ipynb"):
            module = module_name(name)
            if exercise_files and module not in EXERCISE_FILES:
                problems.append(FileProblem(name, "was not graded: the exercise files beside it are (a notebook counts "
                                                  "beside them only when named after an exercise, e.g. rnn_scratch.ipynb); "
                                                  f"to grade it, give it alone: `grade {name}`", "warning"))
                continue
            if module in py_names or module in files:
                what = f"{module} beside it is" if module in py_names else f"another notebook is graded as {module}"
                problems.append(FileProblem(name, f"was not graded: {what} (a .py file wins over a notebook of the same "
                                                  "name); keep only one of them", "warning"))
                continue
        try:
            mode = os.lstat(folder / name).st_mode
        except OSError as exc:
            problems.append(FileProblem(name, f"cannot be read: {exc.strerror}"))
            continue
        if stat.S_ISLNK(mode):
            problems.append(FileProblem(name, _SYMLINK))
            continue
        if not stat.S_ISREG(mode):
            if not stat.S_ISDIR(mode):  # a FIFO, socket or device; a folder named x.py is simply not a file
                problems.append(FileProblem(name, "is not a regular file; it was not read"))
            continue
        if taken == MAX_FILES:
            left_out.append(name)
            continue
        taken += 1
        try:
            raw, size = read_regular(folder / name, size_limit(name))
        except OSError as exc:  # ELOOP: replaced by a link since lstat
            why = _SYMLINK if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror}"
            problems.append(FileProblem(name, why))
            continue
        if name.endswith(".ipynb"):
            if size > NOTEBOOK_LIMIT:
                problems.append(FileProblem(name, f"is {size} bytes; notebooks over {NOTEBOOK_LIMIT // MiB} MiB are not "
                                                  "graded: clear its outputs (Edit > Clear Outputs) and save it"))
                continue
            try:
                converted = notebook_to_python(raw, name)
            except NotebookError as exc:
                problems.append(FileProblem(name, str(exc).removeprefix(name + " ")))
                continue
            notebooks[module] = converted
            raw = converted.source.encode("utf-8")
            size = len(raw)
        if size > FILE_LIMIT or total + size > SUBMISSION_LIMIT:
            what = "its code is" if module != name else "is"
            problems.append(FileProblem(name, f"{what} {size} bytes; files over {FILE_LIMIT // MiB} MiB "
                                              f"(or {SUBMISSION_LIMIT // MiB} MiB together) are not graded"))
            notebooks.pop(module, None)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(FileProblem(name, "is not UTF-8 text; save it as UTF-8"))
            continue
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # newlines as a text-mode read gives them
        if module == name and "get_ipython(" in text:
            text = _without_ipython_calls(name, text, problems)
        files[module] = text
        total += size
    if left_out:
        kinds = ".py and .ipynb" if any(n.endswith(".ipynb") for n in names) else ".py"
        shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        problems.append(FileProblem(".", f"has {taken + len(left_out)} {kinds} files; only the first {MAX_FILES} in name "
                                         f"order were graded, not {shown}; remove files that are not part of your "
                                         "solution"))
    return files, problems, notebooks


def _without_ipython_calls(name: str, text: str, problems: list[FileProblem]) -> str:
    """A script exported from a notebook without its ``get_ipython()`` lines (IPython's magics, which fail
    outside IPython); every other line keeps its number."""
    kept, dropped = strip_ipython(text)
    if kept is None or not dropped:
        return text
    problems.append(FileProblem(name, f"{dropped} line{'s' if dropped > 1 else ''} calling get_ipython() (IPython "
                                      "magics, from a notebook saved as a script) left out: they only run inside "
                                      "IPython", "warning"))
    return kept


def subfolders_with_py(folder: Path, most: int = 3) -> list[str]:
    """The names of ``folder``'s subfolders that hold .py files, in name order (``most`` at most).

    A student who runs ``grade .`` one level above their exercises has them there; the hint names
    the folder to give instead. Hidden folders and caches are not suggested, and links not followed.
    """
    found = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith((".", "__")) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            holds = any(n.endswith(".py") and n != "__init__.py" for n in os.listdir(entry.path))
        except OSError:
            continue
        if holds:
            found.append(entry.name)
            if len(found) == most:
                break
    return found


def no_py_files(folder: Path, given: str, command: str = "grade") -> str:
    """What to tell a student whose folder (``given`` as they typed it) has no .py files: the subfolder
    they meant, if one holds them, else how to start from the skeletons."""
    subfolders = subfolders_with_py(folder)
    if not subfolders:
        return f"{given} has no .py files; run `grade --init {given}` to start from the skeletons"
    paths = [f"{Path(given) / name}/" for name in subfolders]
    holders = paths[0] + " does" if len(paths) == 1 else ", ".join(paths[:-1]) + f" and {paths[-1]} do"
    meant = " or ".join(f"`{command} {path}`" for path in paths)
    return f"{given} has no .py files, but {holders}: did you mean {meant}?"


def printable_name(name: str) -> str:
    """``name`` itself when it is valid UTF-8, else its bytes with the undecodable ones shown as ``\\xff``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def read_regular(path: Path, cap: int = FILE_LIMIT) -> tuple[bytes, int]:
    """Up to ``cap + 1`` bytes of a regular file, and its size, never through a link nor waiting on a FIFO;
    OSError for anything else."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, min(cap + 1 - size, 4 * MiB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks), max(info.st_size, size)


@dataclass
class LoadedFiles:
    files: dict[str, str]
    #: hook -> the file that implements it
    where: dict[str, str]
    problems: list[FileProblem]
    #: module names the reference serves in place of files that hang or end the process at import
    stand_ins: tuple[str, ...]
    #: what a file replaced while being imported -> that file
    changed_by: dict[str, str]
    #: installed packages the files import, which the runner imports before forking each run
    preload: tuple[str, ...] = ()


def run_timeout(own: float, config: RunConfig) -> float:
    """A run's wall-time limit: its own, unless the run's settings fix one for every check."""
    return float(config.check_timeout) if config.check_timeout is not None else own


def _load_request(files: dict[str, str], timeout: float, preload: tuple[str, ...],
                  stand_ins: Iterable[str] = ()) -> Request:
    return Request(files=files, timeout=timeout, limits=DEFAULT_LIMITS.for_timeout(timeout),
                   stand_ins=tuple(sorted(stand_ins)), track_files=True, preload=preload)


def _separate_request(files: dict[str, str], per_file: float, preload: tuple[str, ...]) -> Request:
    # side by side, SIDE_BY_SIDE at a time: two rounds of waiting at most
    timeout = 2 * per_file + 2
    return Request(files=files, timeout=timeout, limits=DEFAULT_LIMITS.for_timeout(timeout),
                   separately=True, params={"per_file": per_file}, preload=preload)


def load(files: dict[str, str], runner: Runner, config: RunConfig) -> LoadedFiles:
    """Load the submission; find and set aside files whose import hangs or ends the process.

    The usual case is one run. When it fails, one more run imports every file on its own, side by
    side, to find the culprits, and a last one loads the rest: loading costs at most
    ``IMPORT_TIMEOUT`` + ``2 * IMPORT_TIMEOUT + 2`` + ``IMPORT_TIMEOUT`` seconds, however many files hang
    (the side-by-side run is tried once more when it ends early without telling the files apart).
    """
    timeout = run_timeout(IMPORT_TIMEOUT, config)
    preload = preloads(files)  # read from the sources once; every run of the submission carries it
    reply = runner.run_one(_load_request(files, timeout, preload))
    broken: dict[str, str] = {}
    if reply.status != Status.OK or reply.result is None:
        broken = _find_broken(files, runner, timeout, reply, preload)
        if broken:  # otherwise no file fails alone (e.g. one calls a sibling's endless loop): the failure stands
            files = {n: src for n, src in files.items() if n not in broken}
            preload = preloads(files)
            reply = runner.run_one(_load_request(files, timeout, preload, stand_ins=[Path(n).stem for n in broken]))
    decoded = decode(reply)
    where, problems = _outcome(decoded)
    problems = [FileProblem(n, why) for n, why in broken.items()] + problems
    changed_by = {str(e.get("what")): str(e["file"]) for e in decoded.integrity_events() if e.get("file")}
    return LoadedFiles(files, where, problems, tuple(Path(n).stem for n in broken), changed_by, preload)


def _find_broken(files: dict[str, str], runner: Runner, timeout: float, failed: Reply,
                 preload: tuple[str, ...]) -> dict[str, str]:
    """File -> why it was set aside: the files whose own import hangs or ends the process."""
    for _ in range(2):  # a busy machine can fail the separate run itself; blaming every file needs two failures
        reply = runner.run_one(_separate_request(files, timeout, preload))
        decoded = decode(reply)
        outcomes = decoded.value.get("value", {}).get("files") if decoded.failure is None else None
        if isinstance(outcomes, dict) or reply.status == Status.TIMEOUT:  # a timeout would only repeat
            break
    if not isinstance(outcomes, dict):  # could not tell them apart: the whole load's failure is every file's
        why = _import_failure(failed, decode(failed))
        return {name: f"importing the files {why}; they were not graded" for name in files}
    broken = {}
    for name in files:
        outcome = outcomes.get(name)
        outcome = outcome if isinstance(outcome, dict) else {"outcome": "not_tried"}
        kind = outcome.get("outcome")
        if kind == "timeout":
            why = (f"took longer than {timeout:.0f} s (an endless loop, or slow work at the top level? "
                   "put it under `if __name__ == \"__main__\":`)")
        elif kind == "died":
            sig, code = outcome.get("signal"), outcome.get("exit_code")
            why = (f"crashed the process: {SIGNALS.get(sig, f'killed by signal {sig}')}" if isinstance(sig, int)
                   else f"ended the process (exit status {code}, e.g. os._exit())")
        elif kind == "not_tried":
            why = "was not tried: the other files' imports used up the time for loading"
        else:
            continue
        broken[name] = f"could not be imported: it {why}; it was not graded"
    return broken


def _import_failure(reply: Reply, decoded: Decoded) -> str:
    if reply.status == Status.TIMEOUT:
        return (f"took longer than {reply.seconds:.0f} s (an endless loop, or slow work at the top level? "
                "put it under `if __name__ == \"__main__\":`)")
    if decoded.failure is not None and reply.signal:
        return decoded.failure.message.replace("the process running your code", "crashed the process:")
    return f"ended the process (exit status {reply.exit_code}, e.g. os._exit())"


def _outcome(decoded: Decoded) -> tuple[dict[str, str], list[FileProblem]]:
    if decoded.failure is not None:
        return {}, [FileProblem(".", f"the submission could not be loaded: {decoded.failure.message}")]
    if "value" not in decoded.value:
        return {}, [FileProblem(".", f"the submission could not be loaded: {decoded.value.get('error', 'unknown error')}")]
    data = decoded.value["value"]
    where = {str(k): str(v) for k, v in dict(data["where"]).items()}
    problems = [FileProblem(str(p[0]), str(p[1]), str(p[2]), _line(p[3:])) for p in data["problems"]]
    return where, problems


def _line(rest: list) -> int:
    """A problem's line as the runner sent it (a reply is believed only as far as its shape)."""
    return rest[0] if rest and type(rest[0]) is int and 0 <= rest[0] < 10_000_000 else 0
