"""Gradescope's ``run_autograder``: grade one submission and always leave ``results/results.json``.

``python -m grader.autograder_run --root ROOT`` (ROOT: ``$AUTOGRADER_ROOT``, else ``/autograder``) reads
the archive's manifest in ``ROOT/source`` (see :mod:`grader.autograder`), finds the submission's files
anywhere under ``ROOT/submission`` (:func:`find_submission`), grades them as ``grade --hidden`` would
with the archive's course configuration, packs and secret seed, and writes ``ROOT/results/results.json``.
When there is nothing to grade, results.json says what was expected and what was found; when the
grader itself fails, it says so (not the student's fault) and the traceback goes to stderr only,
which students do not see. stdout shows the summary of the visible checks only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from grader import autograder, registry
from grader.config import RunConfig
from grader.judge import staging
from grader.judge.intake import is_hidden, join_names
from grader.judge.loading import printable_name
from grader.notebooks import NOTEBOOK_LIMIT, NotebookError, module_name, read_cells
from grader.report import gradescope
from grader.report.terminal import format_summary
from grader.results import GradingReport

DEFAULT_ROOT = Path("/autograder")
ROOT_ENV = "AUTOGRADER_ROOT"
#: how the submission is named in messages (Gradescope's folder for it)
SOURCE_NAME = "submission/"
#: the exercises' file names, which decide which of a submission's files are graded
EXERCISE_FILES = tuple(registry.file_name(exercise.name) for exercise in registry.EXERCISES)

GRADER_FAILED = ("The autograder could not grade this submission: the grader failed, not your submission. "
                 "Please tell your instructor; the autograder's log says why.")


class ArchiveError(Exception):
    """The autograder's own files are missing or broken (an instructor's problem, never the student's)."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.autograder_run",
                                     description="Grade a Gradescope submission (run by run_autograder).")
    parser.add_argument("--root", type=Path, default=Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT),
                        help=f"the autograder's folder (default: ${ROOT_ENV}, else {DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    results = args.root / "results"
    try:
        data = autograde(args.root)
    except Exception:  # noqa: BLE001 - whatever broke, Gradescope must get a results.json
        print("grader.autograder_run: the grader failed:", file=sys.stderr)
        traceback.print_exc()  # stderr: in the log instructors read
        print(GRADER_FAILED)
        data = gradescope.without_grading(GRADER_FAILED, stdout_visible=False)
    try:
        gradescope.write_results(data, results)
    except OSError as exc:
        print(f"grader.autograder_run: cannot write {results / gradescope.RESULTS_NAME}: {exc}", file=sys.stderr)
    sys.stdout.flush()
    return 0


def autograde(root: Path) -> dict[str, Any]:
    """Find, stage and grade ``root/submission``; the results.json object. Prints what students may see."""
    source = root / "source"
    manifest = read_manifest(source)
    with tempfile.TemporaryDirectory(prefix="autograder-") as scratch:
        found = find_submission(root / "submission", Path(scratch) / "submission")
        if found.folder is None:
            message = found.message + "".join(f"\n  {note}" for note in found.notes)
            print(message)
            return gradescope.without_grading(message)
        report = grade_folder(found.folder, run_config(manifest, source))
    report = replace(report, submission=SOURCE_NAME, notices=found.notes + report.notices)
    print(format_summary(gradescope.student_view(report), RunConfig()), end="")
    if gradescope.has_hidden(report):
        print(gradescope.HIDDEN_NOTE)
    return gradescope.to_gradescope(report)


# ---------------------------------------------------------------------------------------------- the archive


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / autograder.MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{path} cannot be read ({exc}); build the archive again with "
                           "grade --gradescope-autograder OUT.zip and upload it") from None
    if not isinstance(manifest, dict):
        raise ArchiveError(f"{path} is not an autograder manifest; build the archive again")
    return manifest


def _inside(source: Path, name: Any) -> Path:
    """A file the manifest names, which must lie inside the archive's folder."""
    if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
        raise ArchiveError(f"{autograder.MANIFEST} names {name!r}, which is not a file of the archive")
    return source / name


def run_config(manifest: dict[str, Any], source: Path) -> RunConfig:
    """The grading's settings: the archive's course, packs, corpus and secret; hidden checks run."""
    from grader.course import load_course

    course = load_course(_inside(source, manifest["course"])) if manifest.get("course") else None
    corpus = _inside(source, manifest["corpus"]) if manifest.get("corpus") else None
    if corpus is None and course is not None:
        corpus = course.corpus
    secret = _inside(source, manifest["secret"]).read_text(encoding="utf-8") if manifest.get("secret") else None
    timeout = manifest.get("timeout")
    memory = manifest.get("memory_limit")  # the builder's own options; the course's apply through `course`
    return RunConfig(corpus_path=corpus, hidden=True, check_timeout=timeout, secret=secret or None,
                     isolation="auto", course=course, memory_limit=memory,
                     plugin_dirs=tuple(_inside(source, p) for p in manifest.get("packs", ())))


def grade_folder(folder: Path, config: RunConfig) -> GradingReport:
    """Grade ``folder`` as ``grade`` does."""
    from grader.judge.single import grade_folder as grade_one

    return grade_one(folder, config, reporters=False).report


# ---------------------------------------------------------------------------------------------- the submission


@dataclass(frozen=True)
class Found:
    """The submission's files staged for grading, or why there are none."""

    #: a folder holding the files to grade; None when nothing can be graded
    folder: Optional[Path]
    #: for the student: which files were graded, converted or left out
    notes: tuple[str, ...] = ()
    #: when ``folder`` is None: what was expected and what was found
    message: str = ""


def find_submission(submission: Path, dest: Path) -> Found:
    """Stage the files to grade from anywhere under ``submission`` into ``dest`` (created).

    Each exercise file (``rnn_scratch.py``...) comes from the shallowest folder holding it; the other
    ``.py`` files beside the graded ones come along (helpers they import). With no exercise file, the
    shallowest folder with the most ``.py`` files is graded. A single archive is opened when there is
    no ``.py`` file (staging's rules and limits); notebooks count as the ``.py`` file they are graded as.
    """
    if not submission.is_dir():
        return Found(None, (), nothing_found(submission))
    files, notes, refused = staging.files_under(submission, SOURCE_NAME)
    if refused is not None:
        return Found(None, tuple(notes), refused[1])
    candidates, notebooks, problems = _with_notebooks(files)
    chosen, picked = pick(candidates)
    chosen = [notebooks.get(id(f), f) for f in chosen]  # a notebook is staged as itself, under its own name
    if not chosen:
        return Found(None, tuple(notes + problems), nothing_found(submission))
    dest.mkdir(parents=True)
    problem, written = staging.write_flat(chosen, dest, SOURCE_NAME)
    if problem is not None:
        return Found(None, tuple(notes + problems + picked + written), problem[1])
    return Found(dest, tuple(notes + problems + picked + written))


def _shown(parts: tuple[str, ...]) -> str:
    return "/".join(map(printable_name, parts))


def _with_notebooks(files: list) -> tuple[list, dict[int, object], list[str]]:
    """The .py files, and each notebook that can be read, as candidates under the .py name it is graded as.

    A notebook counts when it is named after an exercise, or when the submission has no exercise's
    .py file at all; a .py file of the same name beside it wins. The notebook itself is staged: the
    grading converts it (:mod:`grader.notebooks`), so that messages name its cells. Returns the
    candidates, each notebook candidate's file by ``id`` of the candidate, and problems met reading notebooks.
    """
    py = [f for f in files if f.parts[-1].endswith(".py") and f.parts[-1] != "__init__.py"]
    taken = {f.parts for f in py}
    exercise_py = any(f.parts[-1] in EXERCISE_FILES for f in py)
    candidates, notebooks, problems = list(py), {}, []
    for notebook in (f for f in files if f.parts[-1].endswith(".ipynb")):
        name = module_name(notebook.parts[-1])
        parts = notebook.parts[:-1] + (name,)
        if (exercise_py and name not in EXERCISE_FILES) or parts in taken:
            continue
        shown = _shown(notebook.parts)
        try:
            raw = notebook.read(NOTEBOOK_LIMIT)
            if len(raw) > NOTEBOOK_LIMIT:
                raise NotebookError(f"{shown} is over {NOTEBOOK_LIMIT >> 20} MiB; clear its outputs and submit it again")
            read_cells(raw, shown)
        except (NotebookError, OSError) as exc:
            problems.append(f"not graded: {exc}")
            continue
        candidate = replace(notebook, parts=parts)
        candidates.append(candidate)
        notebooks[id(candidate)] = notebook
        taken.add(parts)
    return candidates, notebooks, problems


def pick(candidates: list) -> tuple[list, list[str]]:
    """The files graded, each under a distinct name, and notes saying which ones and from where."""
    ordered = sorted(candidates, key=lambda f: (len(f.parts), f.parts))  # shallowest first
    copies: dict[str, list] = {}
    for f in ordered:
        copies.setdefault(f.parts[-1], []).append(f)
    chosen = {name: found[0] for name, found in copies.items() if name in EXERCISE_FILES}
    folders = {f.parts[:-1] for f in chosen.values()}
    if not chosen and ordered:  # files named otherwise: the shallowest folder with the most of them
        counts: dict[tuple[str, ...], int] = {}
        for f in ordered:
            counts[f.parts[:-1]] = counts.get(f.parts[:-1], 0) + 1
        folders = {min(counts, key=lambda p: (len(p), -counts[p], p))}
    for name, found in copies.items():
        beside = [f for f in found if f.parts[:-1] in folders]
        if name not in chosen and beside:
            chosen[name] = beside[0]
    notes = []
    if folders and folders != {()}:
        notes.append(f"graded the files in {join_names(sorted(_shown(p) + '/' if p else 'the top folder' for p in folders))}")
    for name in sorted(chosen):
        others = [f for f in copies[name] if f is not chosen[name]]
        if others:
            notes.append(f"{name} is in {len(others) + 1} places: graded {_shown(chosen[name].parts)}, not "
                         f"{join_names((_shown(f.parts) for f in others), 3)}; keep one copy")
    named = {id(f) for name in chosen for f in copies[name]}  # graded, or a copy already named above
    left = [f for f in ordered if id(f) not in named]
    if left:
        notes.append(f"not graded: {join_names((_shown(f.parts) for f in left), 5)} (only the exercise files and "
                     "the files beside them are)")
    return [chosen[name] for name in sorted(chosen)], notes


def nothing_found(submission: Path) -> str:
    """What was expected, and what the submission holds instead."""
    expected = (f"Nothing to grade: expected your solution's .py files ({', '.join(EXERCISE_FILES[:3])}, ...), "
                "a notebook (.ipynb) or one .zip holding them, in any folder of your submission.")
    listed, more = _listing(submission, 10)
    if not listed:
        return expected + " Your submission is empty: upload your files and submit again."
    return (expected + f" It holds: {', '.join(listed)}" + (f" and {more} more" if more else "")
            + ". Upload the .py files themselves (or one .zip of them) and submit again.")


def _listing(folder: Path, most: int) -> tuple[list[str], int]:
    """Up to ``most`` file names under ``folder`` (links not followed), and how many more there are."""
    names, count = [], 0
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(files):
            count += 1
            if len(names) < most:
                names.append(_shown(Path(top, name).relative_to(folder).parts))
        if count > 10_000:
            break
    return names, count - len(names)


if __name__ == "__main__":
    sys.exit(main())
