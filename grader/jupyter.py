"""``check("rnn")`` in a Jupyter notebook: grade the code the kernel ran and show the result in the notebook.

The cells come from the kernel's input history (what ran, in the order it ran; a cell run twice counts
with its last version, as in the kernel). They are converted with :mod:`grader.notebooks`, as a notebook
file is, written to a temporary folder and graded by :func:`grader.judge.single.grade_folder`: the
student's code runs in the runner's processes, never in the kernel. Everything heavy is imported when
``check`` is called, so ``import grader`` stays cheap. Outside IPython, ``check`` needs a ``path``.
"""

from __future__ import annotations

import difflib
import html
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

from grader import registry
from grader.notebooks import Cell, convert, point_at_notebooks
from grader.results import GradingReport

#: the module the kernel's cells are graded as, and how messages name the notebook
MODULE, SHOWN = "this_notebook.py", "this notebook"
#: the report's height inside the notebook, in pixels (it scrolls inside)
FRAME_HEIGHT = 560


@dataclass(frozen=True)
class NotebookCheck:
    """A grading's result as Jupyter shows it (HTML) and as a terminal shows it (text)."""

    report: Optional[GradingReport] = None
    #: why nothing was graded (an unknown name, not in a notebook, the grader could not run)
    error: str = ""

    @property
    def points(self) -> float:
        return self.report.points if self.report is not None else 0.0

    @property
    def max_points(self) -> float:
        return self.report.max_points if self.report is not None else 0.0

    def __str__(self) -> str:
        if self.report is None:
            return f"check: {self.error}"
        from grader.config import RunConfig
        from grader.report.terminal import format_summary

        return format_summary(self.report, RunConfig()).rstrip("\n")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        if self.report is None:
            return f"<pre>{html.escape(str(self))}</pre>"
        from grader.report.html import render_html

        # the report page (autoescaped by its templates) inside a frame, so its styles stay out of the notebook's
        page = render_html(self.report)
        return (f'<iframe srcdoc="{html.escape(page, quote=True)}" title="rnn-grader report" '
                f'style="width:100%;height:{FRAME_HEIGHT}px;border:1px solid #ccc"></iframe>')


def check(name: Optional[str] = None, path: Union[str, Path, None] = None) -> NotebookCheck:
    """Grade the running notebook's code (or ``path``: a notebook, a .py file or a folder).

    :param name: an exercise (``"rnn_scratch"``) or one of its functions (``"rnn"``): only that
        exercise's checks run; None grades every exercise
    """
    exercise, problem = exercise_named(name)
    if problem:
        return NotebookCheck(error=problem)
    if path is not None:
        target = Path(path)
        if not target.exists():
            return NotebookCheck(error=f"{target} does not exist; give a notebook, a .py file or a folder")
        return _graded(target, exercise)
    cells = kernel_cells()
    if cells is None:
        return NotebookCheck(error="check() grades the notebook it runs in: call it in a Jupyter cell, or give "
                                   "the file to grade: check('rnn', path='my.ipynb')")
    converted = convert(cells, SHOWN)
    with tempfile.TemporaryDirectory(prefix="grader-check-") as folder:
        (Path(folder) / MODULE).write_text(converted.source, encoding="utf-8")
        result = _graded(Path(folder), exercise)
    if result.report is None:
        return result
    report = point_at_notebooks(replace(result.report, submission=SHOWN), {MODULE: converted})
    return replace(result, report=report)


def exercise_named(name: Optional[str]) -> tuple[Optional[str], str]:
    """The exercise ``name`` means (an exercise or a hook), or why it means none, with the closest name."""
    if name is None:
        return None, ""
    exercises = [ex.name for ex in registry.EXERCISES]
    if name in exercises:
        return name, ""
    if name in registry.EXERCISE_OF_HOOK:
        return registry.EXERCISE_OF_HOOK[name], ""
    known = exercises + list(registry.EXERCISE_HOOKS)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"the exercises are: {', '.join(exercises)}"
    return None, f"no exercise or function is named '{name}'; {hint}"


def get_ipython() -> Any:
    """The running IPython shell, or None (also when IPython is not installed)."""
    try:
        from IPython import get_ipython as running
    except ImportError:
        return None
    return running()


def kernel_cells() -> Optional[list[Cell]]:
    """The cells the kernel ran, labelled "In [N]" by their execution count; None outside IPython."""
    shell = get_ipython()
    if shell is None:
        return None
    # the raw inputs, as typed (``In`` holds them transformed: a %%time cell becomes one string argument)
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    if not history:
        history = getattr(shell, "user_ns", {}).get("In") or []
    return [Cell(f"In [{number}]", source) for number, source in enumerate(history)
            if number and isinstance(source, str) and source.strip()]


def _graded(target: Path, exercise: Optional[str]) -> NotebookCheck:
    """Grade ``target`` out of process, leaving the kernel's torch as it was (threads, random state)."""
    import torch

    from grader.config import RunConfig
    from grader.course import CourseError, find_course, load_course
    from grader.judge.runners import RunnerError
    from grader.judge.single import grade_folder
    from grader.packs import PackError

    threads, random_state = torch.get_num_threads(), torch.random.get_rng_state()
    try:
        found = find_course((Path.cwd(),))
        course = load_course(found) if found is not None else None
        config = RunConfig(course=course, only_exercises=(exercise,) if exercise else ())
        return NotebookCheck(grade_folder(target, config, reporters=False).report)
    except (CourseError, PackError) as exc:
        return NotebookCheck(error=str(exc))
    except RunnerError as exc:
        return NotebookCheck(error=f"the grader could not run: {exc}")
    finally:  # the judge computes the reference in this process: the student's session must not notice
        torch.set_num_threads(threads)
        torch.random.set_rng_state(random_state)
