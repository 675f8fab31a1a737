"""Grading pull requests: the GitHub Actions workflow ``grade --init-ci`` writes, and the files a pull
request changed outside the exercise files (``grade --base REF``).

The workflow is rendered from ``templates/grade-workflow.yml``; what it guarantees (trigger, read-only
token, pinned grader, configuration from the base branch, only the exercise files graded) is explained
in the file it writes, for the instructor who commits it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Optional

import jinja2

import grader
from grader.registry import EXERCISES, file_name

if TYPE_CHECKING:
    from grader.course import Course

WORKFLOW_TEMPLATE = "grade-workflow.yml"
#: the package the workflow installs, as published
GRADER_DISTRIBUTION = "rnn-grader"
#: where pip finds torch's CPU build (GitHub's runners have no GPU; the default build is far bigger)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: the folder of a course repository that holds the students' exercise files (``grade --init`` layout)
EXERCISES_DIR = "exercises"
#: the job's limit: installing torch and grading every exercise on a runner's CPU take a few minutes
TIMEOUT_MINUTES = 30
#: seconds any one git command may take
GIT_TIMEOUT = 60


class CIError(Exception):
    """A workflow that cannot be written or a change list that cannot be made; the message says what to do."""


def exercise_files() -> tuple[str, ...]:
    """The file names of the built-in exercises: the only files of a pull request that are graded."""
    return tuple(file_name(exercise.name) for exercise in EXERCISES)


# -- the workflow ----------------------------------------------------------------------------------------


def write_workflow(path: Path, course: "Optional[Course]") -> Path:
    """Write the pull-request workflow for ``course`` (None: the grader's defaults) to ``path``.

    An existing file is never replaced: it may hold the instructor's own changes.
    """
    path = Path(path)
    text = render_workflow(course)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a file where a folder should be
        raise CIError(f"cannot write the workflow to {path}: cannot make the folder {path.parent} "
                      f"({exc.strerror or exc}); give a file in a folder you can write to") from None
    try:
        # "x": fails if the file exists, even if it appeared just now, so nothing is ever overwritten
        with open(path, "x", encoding="utf-8", newline="\n") as out:
            try:
                out.write(text)
            except OSError:
                path.unlink(missing_ok=True)  # a half-written workflow must not block the next try
                raise
    except FileExistsError:
        raise CIError(f"{path} already exists and is left as it is; remove it to write a new workflow, "
                      f"or give another file: grade --init-ci OTHER.yml") from None
    except OSError as exc:
        raise CIError(f"cannot write the workflow to {path}: {exc.strerror or exc}; "
                      "give a file in a folder you can write to") from None
    return path


def render_workflow(course: "Optional[Course]") -> str:
    """The workflow's text for ``course``, from the template."""
    fail_under = getattr(course, "fail_under", None) if course is not None else None
    values = {
        "version": grader.__version__,
        "grader_spec": f"{GRADER_DISTRIBUTION}=={grader.__version__}",
        "torch_spec": f"torch=={_torch_version()}",
        "torch_index": TORCH_CPU_INDEX,
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "exercises_dir": EXERCISES_DIR,
        "exercise_files": " ".join(exercise_files()),
        "config_name": _config_name(Path(course.path)) if course is not None else None,
        "fail_under": f"{fail_under:g}" if fail_under is not None else None,
        "timeout_minutes": TIMEOUT_MINUTES,
    }
    return _environment().get_template(WORKFLOW_TEMPLATE).render(values)


def _environment() -> jinja2.Environment:
    # YAML, not HTML: no autoescaping; values go in through `quoted` only
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_templates_dir())),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    # a JSON string is a valid YAML double-quoted scalar: any text stays one value
    env.filters["quoted"] = lambda value: json.dumps(str(value))
    return env


def _templates_dir() -> Path:
    """The templates inside the package when installed, else the checkout's."""
    package = Path(grader.__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / WORKFLOW_TEMPLATE).is_file():
            return candidate
    raise CIError(f"the workflow template {WORKFLOW_TEMPLATE} is missing from the grader's installation "
                  f"({package / 'templates'}); reinstall rnn-grader")


def _torch_version() -> str:
    import torch

    # "2.13.0+cpu" -> "2.13.0": the CPU index names its builds with the local label, and a pin without
    # one matches them
    return torch.__version__.split("+")[0]


def _config_name(config: Path) -> str:
    """The course configuration's path in the course repository, as the workflow's base-branch checkout has it."""
    config = config.resolve()
    roots = [root for root in (_repository_root(config.parent), Path.cwd().resolve()) if root is not None]
    for root in roots:
        try:
            return config.relative_to(root).as_posix()
        except ValueError:
            continue
    return config.name


def _repository_root(folder: Path) -> Optional[Path]:
    try:
        return Path(os.fsdecode(_git(folder, "rev-parse", "--show-toplevel")).strip()).resolve()
    except CIError:
        return None


# -- what a pull request changed -------------------------------------------------------------------------


def changed_outside(folder: Path, base: str) -> list[str]:
    """Files the commits since ``base`` changed, other than the exercise files directly in ``folder``.

    ``folder`` lies in a git repository; ``base`` is the ref the pull request goes into (e.g.
    ``origin/main``). The changes are those of ``git diff base...HEAD``: everything committed on HEAD's
    side since it left ``base``, so later commits on the base branch do not count. Uncommitted changes do
    not count either: a pull request consists of commits. Paths are relative to the repository's top,
    with ``/``, sorted; a renamed file appears under both names.
    """
    folder = Path(folder)
    if base.startswith("-") or not base.strip():
        raise CIError(f"{base!r} is not a git ref; give the branch the pull request goes into, e.g. origin/main")
    if not folder.is_dir():
        raise CIError(f"{folder} is not a folder")
    try:
        root = Path(os.fsdecode(_git(folder, "rev-parse", "--show-toplevel")).strip()).resolve()
    except _GitMissing:
        raise
    except CIError as exc:
        raise CIError(f"the files a pull request changed cannot be listed: {exc}; grade the exercise folder of "
                      "a clone of the course repository, or leave out --base") from None
    try:
        _git(folder, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    except CIError:
        raise CIError(f"git does not know {base!r} in {root}; fetch it first (`git fetch origin BRANCH`, or "
                      "`fetch-depth: 0` in the workflow's actions/checkout) and give it as origin/BRANCH") from None
    try:
        merge_base = _git(folder, "merge-base", base, "HEAD").decode().strip()
    except CIError:
        raise CIError(f"{base!r} and HEAD have no common commit in {root}: the history is incomplete (a shallow "
                      "clone); run `git fetch --unshallow`, or use `fetch-depth: 0` in the workflow's "
                      "actions/checkout") from None
    listed = _git(folder, "diff", "--name-only", "-z", "--no-renames", "--no-ext-diff", merge_base, "HEAD", "--")
    changed = {os.fsdecode(name) for name in listed.split(b"\0") if name}
    return sorted(changed - _exercise_paths(folder, root))


def _exercise_paths(folder: Path, root: Path) -> set[str]:
    """The exercise files directly in ``folder``, as repository paths."""
    try:
        where = PurePosixPath(folder.resolve().relative_to(root).as_posix())
    except ValueError:  # outside the repository's work tree (e.g. inside .git): no exercise file there
        return set()
    return {(where / name).as_posix() for name in exercise_files()}


class _GitMissing(CIError):
    pass


def _git(folder: Path, *args: str) -> bytes:
    """``git -C folder args``: its standard output, or CIError with git's own words."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, timeout=GIT_TIMEOUT,
                              env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise _GitMissing("git is not installed; install it, or leave out --base") from None
    except subprocess.TimeoutExpired:
        raise CIError(f"git {args[0]} took more than {GIT_TIMEOUT} s in {folder}") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise CIError(f"git {args[0]} failed in {folder}" + (f": {said[-1]}" if said else ""))
    return done.stdout
