"""The class report's data: how a whole class did, reduced from the students' batch records.

:func:`build_summary` turns the records into a :class:`ClassSummary` of plain dataclasses
(counts, statistics, pass rates, failure messages grouped by :func:`normalise_message`).
Records come from submissions and may be malformed: every text is put on one line and cut,
every number checked, and :func:`report_link` keeps only links that stay inside the results
folder. Rendering the page is :mod:`grader.report.summary_html`'s part.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import quote

from grader.registry import EXERCISES
from grader.report.formatting import one_line
from grader.report.gradebook import GRADED, finite_number, is_graded, student_records
from grader.results import ERROR, FAILED, INTEGRITY, NOT_IMPLEMENTED, PASSED, SKIPPED

#: record statuses in the order the report counts them; others follow alphabetically
RECORD_STATUSES = (
    GRADED, "load-error", "timed-out", "empty", "bad-archive", "unsafe-archive", "too-large",
    "duplicate-id", "link", "unreadable", "runner-failed", "grader-error",
)
#: check statuses whose messages are grouped as failures
FAILURE_STATUSES = (FAILED, ERROR, INTEGRITY)
HISTOGRAM_BINS = 10
SLOWEST = 10
EXAMPLES = 3
GROUPS_PER_CHECK = 5

_MESSAGE_CHARS = 300
#: longest student id, name, exercise or check name kept
NAME_CHARS = 200
# numbers not inside a word: "t=3" and "t=5" group together, "W_hh2" stays a name
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?!\w)")
NUMBER_MARK = "#"


@dataclass(frozen=True)
class ScoreStatistics:
    """Scores (percent) of the graded students."""

    count: int
    mean: float
    median: float
    minimum: float
    maximum: float


@dataclass(frozen=True)
class HistogramBin:
    """Graded students whose score is in ``[low, high)``; the last bin holds 100 too."""

    low: int
    high: int
    count: int


@dataclass(frozen=True)
class ExerciseStatistics:
    """One exercise over the graded students."""

    name: str
    title: str
    graded: int
    mean_points: Optional[float]
    max_points: Optional[float]
    full_marks: int

    @property
    def full_marks_share(self) -> Optional[float]:
        return self.full_marks / self.graded if self.graded else None


@dataclass(frozen=True)
class CheckStatistics:
    """One check over the students whose check ran (skipped runs do not count)."""

    id: str
    exercise: str
    title: str
    hidden: bool
    passed: int
    failed: int
    errors: int
    not_implemented: int
    void: int
    skipped: int

    @property
    def ran(self) -> int:
        return self.passed + self.failed + self.errors + self.not_implemented + self.void

    @property
    def pass_rate(self) -> Optional[float]:
        return self.passed / self.ran if self.ran else None


@dataclass(frozen=True)
class StudentLink:
    """A student and the link to their report, relative to the results folder (``None`` when none)."""

    student: str
    report: Optional[str]


@dataclass(frozen=True)
class FailureGroup:
    """Students whose check failed with the same message, numbers aside."""

    pattern: str  # the message with every number shown as NUMBER_MARK
    example: str  # the first student's message as written
    count: int
    students: tuple[StudentLink, ...]  # the first EXAMPLES students, by id


@dataclass(frozen=True)
class CheckFailures:
    """The most frequent failure messages of one check."""

    check: str
    exercise: str
    title: str
    count: int  # students for whom the check failed, erred or was void
    groups: tuple[FailureGroup, ...]  # the GROUPS_PER_CHECK most frequent, most frequent first
    other_groups: int  # further distinct messages not listed


@dataclass(frozen=True)
class StudentRow:
    """One student of the class."""

    student: str
    name: str
    status: str
    message: str
    score: Optional[float]
    seconds: Optional[float]
    report: Optional[str]


@dataclass(frozen=True)
class ClassSummary:
    """Everything ``summary.html`` shows, as numbers and plain text."""

    students: int
    status_counts: tuple[tuple[str, int], ...]
    scores: Optional[ScoreStatistics]  # None when nobody was graded
    histogram: tuple[HistogramBin, ...]
    exercises: tuple[ExerciseStatistics, ...]
    checks: tuple[CheckStatistics, ...]
    failures: tuple[CheckFailures, ...]
    slowest: tuple[StudentRow, ...]
    rows: tuple[StudentRow, ...]

    @property
    def graded(self) -> int:
        return self.scores.count if self.scores else 0


def normalise_message(message: Any) -> str:
    """``message`` on one line with every number replaced by ``#``: the key that groups failures."""
    return _NUMBER.sub(NUMBER_MARK, one_line(message, _MESSAGE_CHARS)) or "(no message)"


def report_link(record: Mapping[str, Any]) -> Optional[str]:
    """``<student>/<report>`` percent-encoded, or ``None`` when the record has no report or an odd path."""
    student, report = record.get("student"), record.get("report")
    if not isinstance(student, str) or not isinstance(report, str) or student in ("", ".", ".."):
        return None
    # the report lies inside the student's folder: no absolute path, no way up, no Windows separator
    if "\\" in report or any(part in ("", ".", "..") for part in report.split("/")):
        return None
    return quote(student, safe="") + "/" + quote(report, safe="/")


def _status_order(status: str) -> tuple[int, str]:
    if status in RECORD_STATUSES:
        return RECORD_STATUSES.index(status), ""
    return len(RECORD_STATUSES), status


def _status_counts(records: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for record in records:
        status = one_line(record.get("status") or "unknown", 60)
        counts[status] = counts.get(status, 0) + 1
    return tuple(sorted(counts.items(), key=lambda item: _status_order(item[0])))


def _histogram(scores: Sequence[float]) -> tuple[HistogramBin, ...]:
    width = 100 // HISTOGRAM_BINS
    counts = [0] * HISTOGRAM_BINS
    for score in scores:
        counts[min(max(int(score // width), 0), HISTOGRAM_BINS - 1)] += 1
    return tuple(HistogramBin(i * width, (i + 1) * width, n) for i, n in enumerate(counts))


def _exercise_order(records: Sequence[Mapping[str, Any]], exercises: Sequence[Any]) -> list[tuple[str, str]]:
    """``(name, title)`` in lesson order, then exercises only the records know, as they appear."""
    titles = {e.name: e.title for e in EXERCISES}
    for record in records:
        entries = record.get("exercises")
        if isinstance(entries, Mapping):
            for name, entry in entries.items():
                if isinstance(entry, Mapping) and isinstance(entry.get("title"), str):
                    titles.setdefault(str(name), entry["title"])
    order: list[str] = []
    for exercise in exercises:
        name = exercise if isinstance(exercise, str) else str(exercise.name)
        if name not in order:
            order.append(name)
            if not isinstance(exercise, str) and getattr(exercise, "title", None):
                titles[name] = str(exercise.title)
    for record in records:
        entries = record.get("exercises")
        for name in entries if isinstance(entries, Mapping) else ():
            if str(name) not in order:
                order.append(str(name))
    return [(name, one_line(titles.get(name, name), NAME_CHARS)) for name in order]


def _exercise_entry(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    entries = record.get("exercises")
    entry = entries.get(name) if isinstance(entries, Mapping) else None
    return entry if isinstance(entry, Mapping) else {}


def _exercise_statistics(graded: Sequence[Mapping[str, Any]], name: str, title: str) -> ExerciseStatistics:
    points: list[float] = []
    maxima: list[float] = []
    full = 0
    for record in graded:
        entry = _exercise_entry(record, name)
        value, most = finite_number(entry.get("points")), finite_number(entry.get("max_points"))
        if value is None:
            continue
        points.append(value)
        if most is not None:
            maxima.append(most)
            full += most > 0 and value >= most - 1e-9
    return ExerciseStatistics(
        name=one_line(name, NAME_CHARS),
        title=title,
        graded=len(points),
        mean_points=statistics.fmean(points) if points else None,
        max_points=max(maxima) if maxima else None,
        full_marks=full,
    )


def _checks_of(record: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """``(check id, check)`` for every well-formed check of the record."""
    checks = record.get("checks")
    if not isinstance(checks, list):
        return []
    return [(one_line(c["id"], NAME_CHARS), c) for c in checks if isinstance(c, Mapping) and c.get("id")]


def _check_statistics(
    records: Sequence[Mapping[str, Any]], exercise_order: Sequence[str]
) -> tuple[CheckStatistics, ...]:
    first: dict[str, Mapping[str, Any]] = {}
    tallies: dict[str, dict[str, int]] = {}
    for record in records:
        for check_id, check in _checks_of(record):
            first.setdefault(check_id, check)
            tally = tallies.setdefault(check_id, {})
            status = str(check.get("status"))
            tally[status] = tally.get(status, 0) + 1
    position = {name: i for i, name in enumerate(exercise_order)}
    appearance = {check_id: i for i, check_id in enumerate(first)}

    def lesson_order(check_id: str) -> tuple[int, int]:
        exercise = str(first[check_id].get("exercise"))
        return position.get(exercise, len(position)), appearance[check_id]

    result = []
    for check_id in sorted(first, key=lesson_order):
        check, tally = first[check_id], tallies[check_id]
        result.append(
            CheckStatistics(
                id=check_id,
                exercise=one_line(check.get("exercise"), NAME_CHARS),
                title=one_line(check.get("title"), NAME_CHARS),
                hidden=bool(check.get("hidden")),
                passed=tally.get(PASSED, 0),
                failed=tally.get(FAILED, 0),
                errors=tally.get(ERROR, 0),
                not_implemented=tally.get(NOT_IMPLEMENTED, 0),
                void=tally.get(INTEGRITY, 0),
                skipped=tally.get(SKIPPED, 0),
            )
        )
    return tuple(result)


def _failure_group(pattern: str, members: Sequence[tuple[Mapping[str, Any], str]]) -> FailureGroup:
    """One group from its ``(record, message)`` members, in student order."""
    return FailureGroup(
        pattern=pattern,
        example=members[0][1],
        count=len(members),
        students=tuple(
            StudentLink(one_line(record.get("student"), NAME_CHARS), report_link(record))
            for record, _ in members[:EXAMPLES]
        ),
    )


def _failures(
    records: Sequence[Mapping[str, Any]], checks: Sequence[CheckStatistics]
) -> tuple[CheckFailures, ...]:
    # check id -> message pattern -> (record, message) in student order
    found: dict[str, dict[str, list[tuple[Mapping[str, Any], str]]]] = {}
    for record in records:
        for check_id, check in _checks_of(record):
            if check.get("status") in FAILURE_STATUSES:
                message = one_line(check.get("message"), _MESSAGE_CHARS)
                by_pattern = found.setdefault(check_id, {})
                by_pattern.setdefault(normalise_message(message), []).append((record, message))
    result = []
    for check in checks:  # lesson order, so that equal counts keep it
        by_pattern = found.get(check.id)
        if not by_pattern:
            continue
        ranked = sorted(by_pattern.items(), key=lambda item: -len(item[1]))  # stable: ties keep first-met order
        result.append(
            CheckFailures(
                check=check.id,
                exercise=check.exercise,
                title=check.title,
                count=sum(len(members) for members in by_pattern.values()),
                groups=tuple(_failure_group(p, members) for p, members in ranked[:GROUPS_PER_CHECK]),
                other_groups=max(len(ranked) - GROUPS_PER_CHECK, 0),
            )
        )
    return tuple(sorted(result, key=lambda failures: -failures.count))


def _student_row(record: Mapping[str, Any]) -> StudentRow:
    seconds = finite_number(record.get("seconds"))
    return StudentRow(
        student=one_line(record.get("student"), NAME_CHARS),
        name=one_line(record.get("name"), NAME_CHARS),
        status=one_line(record.get("status") or "unknown", 60),
        message=one_line(record.get("message"), _MESSAGE_CHARS),
        score=finite_number(record.get("score")),
        seconds=seconds if seconds is None or seconds >= 0 else None,
        report=report_link(record),
    )


def build_summary(records: Iterable[Mapping[str, Any]], exercises: Sequence[Any] = ()) -> ClassSummary:
    """Reduce the students' records to what the class report shows.

    :param records: the records (dicts of ``record.json``'s format); anything else is ignored.
    :param exercises: exercise names (or registry exercises) in lesson order; exercises only the
        records know follow them.
    """
    records = student_records(records)
    graded = [r for r in records if is_graded(r)]
    scores = [min(max(float(r["score"]), 0.0), 100.0) for r in graded]
    order = _exercise_order(records, exercises)
    checks = _check_statistics(records, [name for name, _ in order])
    rows = tuple(_student_row(r) for r in records)
    timed = sorted((row for row in rows if row.seconds is not None), key=lambda row: -(row.seconds or 0.0))
    stats = None
    if scores:
        stats = ScoreStatistics(len(scores), statistics.fmean(scores), statistics.median(scores), min(scores), max(scores))
    return ClassSummary(
        students=len(records),
        status_counts=_status_counts(records),
        scores=stats,
        histogram=_histogram(scores),
        exercises=tuple(_exercise_statistics(graded, name, title) for name, title in order),
        checks=checks,
        failures=_failures(records, checks),
        slowest=tuple(timed[:SLOWEST]),
        rows=rows,
    )
