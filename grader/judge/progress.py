"""How far a grading has got, as plain data for whoever shows it (the CLI's progress line).

A grading passes through phases: the runner starts while torch loads, the reference's side of
every check is computed, the submission's files are loaded, then the checks run. Each step sends a
:class:`ProgressEvent` to the optional ``progress`` callback of ``single.grade_folder`` and
``engine.grade``; nothing here prints.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Optional

if TYPE_CHECKING:  # pragma: no cover
    from grader.definitions import Check

STARTING = "starting"  # the runner starts and torch loads
PREPARING = "preparing"  # the reference's side of every check
LOADING = "loading"  # the submission's files are read and imported in the runner
CHECKING = "checking"  # the checks' runs, one reply at a time


@dataclass(frozen=True)
class ProgressEvent:
    phase: str
    #: checks judged so far, of those that will run (checks of functions not implemented never run)
    checks_done: int = 0
    checks_total: int = 0
    #: exercises whose every check is judged, of those with checks to run
    exercises_done: int = 0
    exercises_total: int = 0
    #: the exercise of the run that came back last ("" before the first)
    exercise: str = ""


Progress = Callable[[ProgressEvent], None]


def tell(progress: Optional[Progress], event: ProgressEvent) -> None:
    """Send ``event`` when someone listens."""
    if progress is not None:
        progress(event)


class CheckTally:
    """Counts judged checks per exercise and tells ``progress`` after each run.

    :param runs: the checks reading each run that will be sent.
    """

    def __init__(self, runs: Iterable[list["Check"]], progress: Optional[Progress]) -> None:
        self.progress = progress
        self.left = Counter(check.exercise for checks in runs for check in checks)
        self.total = sum(self.left.values())
        self.done = 0
        self._tell("")

    def judged(self, checks: list["Check"]) -> None:
        """One run came back and ``checks`` were judged on it."""
        self.left.subtract(check.exercise for check in checks)
        self.done += len(checks)
        self._tell(checks[0].exercise if checks else "")

    def _tell(self, exercise: str) -> None:
        finished = sum(1 for count in self.left.values() if count <= 0)
        tell(self.progress, ProgressEvent(CHECKING, self.done, self.total, finished, len(self.left), exercise))
