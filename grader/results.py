"""Plain records that describe a grading: built first, rendered second.

Everything a reporter needs is here; reporters never look at tensors, runners or
the submission itself. All records are JSON-serialisable through ``to_dict``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PASSED = "passed"
FAILED = "failed"
ERROR = "error"  # the student's code raised, crashed, hung or returned garbage
NOT_IMPLEMENTED = "not_implemented"
SKIPPED = "skipped"  # could not run because something it needs is missing
INTEGRITY = "integrity"  # points withheld: the submission tampered with the grader or used the reference

#: when students see a check, in Gradescope's words; every value but VISIBLE keeps it from them for now
VISIBLE = "visible"
VISIBILITIES = (VISIBLE, "hidden", "after_due_date", "after_published")


@dataclass(frozen=True)
class Verdict:
    """What the judge decided about one check, from plain data alone."""

    status: str
    message: str = ""
    #: fraction of the check's points earned, 0..1
    fraction: float = 0.0
    #: optional longer explanation (student-facing, plain text, may span lines)
    details: str = ""
    #: small figures for the report: {"label": value}; values are numbers or short strings
    figures: dict[str, Any] = field(default_factory=dict)
    #: the key of the misconception that explains this verdict, when one was recognised
    misconception: str = ""

    @classmethod
    def passed(cls, message: str = "", **kw: Any) -> "Verdict":
        return cls(PASSED, message, 1.0, **kw)

    @classmethod
    def failed(cls, message: str, **kw: Any) -> "Verdict":
        return cls(FAILED, message, 0.0, **kw)


@dataclass(frozen=True)
class CheckResult:
    check_id: str
    exercise: str
    title: str
    hooks: tuple[str, ...]
    max_points: float
    points: float
    status: str
    message: str
    details: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    #: what the student's code printed while this check ran (truncated)
    output: str = ""
    seconds: float = 0.0
    hidden: bool = False
    #: the recognised mistake's key (:class:`grader.definitions.Misconception`), or ""
    misconception: str = ""
    #: the check id whose message names this failure's cause, when another check of the same function
    #: failed for the same reason (the cause is told once, there)
    same_cause_as: str = ""
    #: when students see it on Gradescope: "visible", "hidden", "after_due_date" or "after_published"
    visibility: str = "visible"

    def __post_init__(self) -> None:
        # one truth: a record made with hidden=True alone, or with a visibility no one knows, is kept from students
        if self.visibility not in VISIBILITIES:
            object.__setattr__(self, "visibility", "hidden")
        if self.hidden and self.visibility == VISIBLE:
            object.__setattr__(self, "visibility", "after_published")
        object.__setattr__(self, "hidden", self.visibility != VISIBLE)

    @property
    def visible(self) -> bool:
        """Whether a student may see it now."""
        return self.visibility == VISIBLE


@dataclass(frozen=True)
class FileProblem:
    """A problem with one file of the submission (syntax error, typo in a hook name, ...)."""

    path: str
    message: str
    #: "error" (the file's hooks could not be used) or "warning"
    severity: str = "error"
    #: the line of the file it is about, when there is one (0: the whole file)
    line: int = 0

    @property
    def where(self) -> str:
        """``file.py:12`` (terminals and editors make it a link), or the file alone."""
        return f"{self.path}:{self.line}" if self.line > 0 else self.path


@dataclass(frozen=True)
class ExerciseResult:
    name: str
    title: str
    points: float
    max_points: float
    checks: tuple[CheckResult, ...]
    #: exercise-level figures for the report (e.g. perplexities, a sine plot's series)
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GradingReport:
    submission: str
    points: float
    max_points: float
    exercises: tuple[ExerciseResult, ...]
    problems: tuple[FileProblem, ...] = ()
    #: hook name -> file that implements it
    implemented: dict[str, str] = field(default_factory=dict)
    notices: tuple[str, ...] = ()
    seconds: float = 0.0
    corpus: dict[str, Any] = field(default_factory=dict)
    grader_version: str = ""
    #: hooks that ran out of time (or took the runner down) in some check
    timed_out: tuple[str, ...] = ()
    #: CPU seconds of the processes that ran the submission's code (every check's child)
    cpu_seconds: float = 0.0
    #: which course configuration graded it ("" for the grader's defaults), e.g. "grader.toml (sha256 1a2b3c4d)"
    configuration: str = ""
    #: hook name -> (file, line) of its ``def`` in the submission, for annotations and editor links
    locations: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: files a pull request changed outside the exercise files (``--base``): the result cannot be trusted
    untrusted: tuple[str, ...] = ()
    #: checks that cannot run on this machine (a device it lacks), as skipped records worth nothing;
    #: not in ``exercises`` or the score, listed by reporters that name every check (JUnit, pytest)
    skipped_here: tuple[CheckResult, ...] = ()

    @property
    def percent(self) -> float:
        return 100.0 * self.points / self.max_points if self.max_points else 0.0

    def all_checks(self) -> list[CheckResult]:
        return [c for ex in self.exercises for c in ex.checks]

    def visible_checks(self) -> list[CheckResult]:
        """The checks a student may see now (visibility "visible")."""
        return [c for c in self.all_checks() if c.visible]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
