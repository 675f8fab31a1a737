"""Reading a submission folder and loading it in the runner: which file implements which hook.

Files the grader cannot take (too large, not UTF-8) are problems, not errors. A file whose
import hangs or ends the process is found by loading the files one at a time, set aside,
and replaced by a reference stand-in, so that the files importing it can still be graded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from grader.config import RunConfig
from grader.judge.runners import Runner
from grader.judge.verdicts import Decoded, decode
from grader.protocol import DEFAULT_LIMITS, MiB, Reply, Request, Status
from grader.results import FileProblem

#: largest submission file, and all files together, that the grader accepts
FILE_LIMIT, SUBMISSION_LIMIT = 1 * MiB, 4 * MiB
#: seconds a submission's files may take to import
IMPORT_TIMEOUT = 10.0


def read_submission(folder: Path) -> tuple[dict[str, str], list[FileProblem]]:
    """The submission's top-level .py files as text; files the grader cannot take are problems."""
    files: dict[str, str] = {}
    problems: list[FileProblem] = []
    total = 0
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py" or not path.is_file():
            continue
        size = path.stat().st_size
        if size > FILE_LIMIT or total + size > SUBMISSION_LIMIT:
            problems.append(FileProblem(path.name, f"is {size} bytes; files over {FILE_LIMIT // MiB} MiB "
                                                   f"(or {SUBMISSION_LIMIT // MiB} MiB together) are not graded"))
            continue
        try:
            files[path.name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            problems.append(FileProblem(path.name, "is not UTF-8 text; save it as UTF-8"))
            continue
        except OSError as exc:
            problems.append(FileProblem(path.name, f"cannot be read: {exc.strerror}"))
            continue
        total += size
    return files, problems


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


def run_timeout(own: float, config: RunConfig) -> float:
    """A run's wall-time limit: its own, unless the run's settings fix one for every check."""
    return float(config.check_timeout) if config.check_timeout is not None else own


def _load_request(files: dict[str, str], timeout: float, only: Optional[list[str]] = None,
                  stand_ins: Iterable[str] = ()) -> Request:
    return Request(files=files, timeout=timeout, limits=DEFAULT_LIMITS.for_timeout(timeout),
                   only=tuple(only) if only is not None else None, stand_ins=tuple(sorted(stand_ins)),
                   track_files=True)


def load(files: dict[str, str], runner: Runner, config: RunConfig) -> LoadedFiles:
    """Load the submission; find and set aside files whose import hangs or ends the process."""
    timeout = run_timeout(IMPORT_TIMEOUT, config)
    reply = runner.run_one(_load_request(files, timeout))
    broken: dict[str, str] = {}
    if reply.status != Status.OK or reply.result is None:
        suspects = {}
        for name in files:
            single = runner.run_one(_load_request(files, timeout, only=[name]))
            if single.status != Status.OK or single.result is None:
                suspects[name] = single
        for name, single in suspects.items():  # a file may only have imported a suspect sibling
            others = [Path(n).stem for n in suspects if n != name]
            if others and runner.run_one(_load_request(files, timeout, [name], others)).status == Status.OK:
                continue
            broken[name] = f"importing it {_import_failure(single, decode(single))}; it was not graded"
        stand_ins = [Path(n).stem for n in broken]
        files = {n: src for n, src in files.items() if n not in broken}
        reply = runner.run_one(_load_request(files, timeout, stand_ins=stand_ins))
    decoded = decode(reply)
    where, problems = _outcome(decoded)
    problems = [FileProblem(n, why) for n, why in broken.items()] + problems
    changed_by = {str(e.get("what")): str(e["file"]) for e in decoded.integrity_events() if e.get("file")}
    return LoadedFiles(files, where, problems, tuple(Path(n).stem for n in broken), changed_by)


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
    problems = [FileProblem(str(p[0]), str(p[1]), str(p[2])) for p in data["problems"]]
    return where, problems
