"""The class report, ``summary.html``: how a whole class did, built from the students' batch records.

Data first: :func:`build_summary` reduces the records to a :class:`ClassSummary` of plain
dataclasses (counts, statistics, pass rates, grouped failure messages). Then
:func:`write_summary` turns it into view data (strings and chart coordinates) and renders
``templates/summary.html`` with the HTML report's Jinja environment. Student ids, names and
messages come from submissions: the template only ever autoescapes them, and links to the
students' reports are percent-encoded relative paths.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import quote

import grader
from grader.registry import EXERCISES
from grader.report import write_text_atomic
from grader.report.formatting import fmt_points, one_line, status_label
from grader.report.gradebook import GRADED, finite_number, is_graded, student_records
from grader.report.html import environment, nice_ticks
from grader.results import ERROR, FAILED, INTEGRITY, NOT_IMPLEMENTED, PASSED, SKIPPED

SUMMARY_NAME = "summary.html"

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
_NAME_CHARS = 200
# numbers not inside a word: "t=3" and "t=5" group together, "W_hh2" stays a name
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?!\w)")
NUMBER_MARK = "#"


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


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
    return [(name, one_line(titles.get(name, name), _NAME_CHARS)) for name in order]


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
        name=one_line(name, _NAME_CHARS),
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
    return [(one_line(c["id"], _NAME_CHARS), c) for c in checks if isinstance(c, Mapping) and c.get("id")]


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
                exercise=one_line(check.get("exercise"), _NAME_CHARS),
                title=one_line(check.get("title"), _NAME_CHARS),
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
            StudentLink(one_line(record.get("student"), _NAME_CHARS), report_link(record))
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
        student=one_line(record.get("student"), _NAME_CHARS),
        name=one_line(record.get("name"), _NAME_CHARS),
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


# --------------------------------------------------------------------------
# View data: numbers formatted, charts reduced to coordinates
# --------------------------------------------------------------------------


def _coordinate(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _percent(share: Optional[float]) -> str:
    return "" if share is None else fmt_points(round(100.0 * share, 1))


def histogram_chart(bins: Sequence[HistogramBin], width: int = 560, height: int = 240) -> dict[str, Any]:
    """SVG coordinates of the score histogram: one bar per bin, counts on a whole-number axis."""
    left, right, top, bottom = 44, 12, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max((b.count for b in bins), default=0)
    _, stop, step = nice_ticks(0, max(highest, 1), 5)
    if step < 1:  # counts are whole students
        step, stop = 1.0, float(max(highest, 1))
    slot = plot_w / max(len(bins), 1)
    base = top + plot_h

    def y(count: float) -> float:
        return base - count / stop * plot_h

    bars = [
        {
            "x": _coordinate(left + i * slot + 2),
            "y": _coordinate(y(b.count)),
            "width": _coordinate(slot - 4),
            "height": _coordinate(base - y(b.count)),
            "count": str(b.count),
            "label_x": _coordinate(left + (i + 0.5) * slot),
            "label_y": _coordinate(y(b.count) - 4),
            "range": f"{b.low}–{b.high}%",
        }
        for i, b in enumerate(bins)
    ]
    edge_labels = [b.low for b in bins] + [bins[-1].high if bins else 100]
    return {
        "width": str(width),
        "height": str(height),
        "left": _coordinate(left),
        "right": _coordinate(left + plot_w),
        "top": _coordinate(top),
        "bottom": _coordinate(base),
        "tick_x": _coordinate(left - 6),
        "edge_y": _coordinate(base + 16),
        "xlabel_x": _coordinate(left + plot_w / 2),
        "xlabel_y": _coordinate(height - 4),
        "bars": bars,
        "edges": [{"x": _coordinate(left + i * slot), "label": str(v)} for i, v in enumerate(edge_labels)],
        "ticks": [
            {"y": _coordinate(y(i * step)), "label": str(int(round(i * step)))}
            for i in range(int(round(stop / step)) + 1)
        ],
        "desc": "; ".join(f"{b['range']}: {b['count']}" for b in bars) + ".",
    }


def pass_rate_chart(checks: Sequence[CheckStatistics], width: int = 760) -> dict[str, Any]:
    """SVG coordinates of one horizontal bar per check: passed, failed, errors and to-do stacked."""
    label_w, value_w, row_h, top = 300, 56, 20, 4
    track_x, track_w = label_w + 6, width - label_w - 6 - value_w
    rows = []
    for i, check in enumerate(checks):
        y = top + i * row_h
        parts = (
            (PASSED, check.passed),
            (FAILED, check.failed),
            (ERROR, check.errors + check.void),
            (NOT_IMPLEMENTED, check.not_implemented),
        )
        segments, x = [], float(track_x)
        for status, count in parts:
            if count:  # count > 0 implies check.ran > 0
                w = track_w * count / check.ran
                segments.append(
                    {"status": status, "label": status_label(status), "count": str(count),
                     "x": _coordinate(x), "width": _coordinate(w)}
                )
                x += w
        rows.append(
            {
                "id": check.id,
                "label": one_line(check.id, 48),
                "y": _coordinate(y + 3),
                "height": _coordinate(row_h - 6),
                "text_y": _coordinate(y + row_h / 2),
                "segments": segments,
                "rate": f"{_percent(check.pass_rate)}%" if check.ran else "not run",
                "summary": f"{check.passed} of {check.ran} passed" if check.ran else "did not run",
            }
        )
    return {
        "width": str(width),
        "height": str(top * 2 + row_h * len(checks)),
        "label_x": _coordinate(label_w),
        "track_x": _coordinate(track_x),
        "track_w": _coordinate(track_w),
        "value_x": _coordinate(track_x + track_w + 6),
        "rows": rows,
    }


def _points(value: Optional[float]) -> str:
    return "" if value is None else fmt_points(value)


def _student_view(row: StudentRow) -> dict[str, str]:
    return {
        "student": row.student,
        "name": row.name,
        "status": row.status,
        "message": row.message,
        "score": _points(row.score),
        "seconds": "" if row.seconds is None else f"{row.seconds:.1f}",
        "report": row.report or "",
    }


def _exercise_view(exercise: ExerciseStatistics) -> dict[str, str]:
    share = (exercise.mean_points or 0.0) / exercise.max_points if exercise.max_points else 0.0
    return {
        "name": exercise.name,
        "title": exercise.title,
        "graded": str(exercise.graded),
        "mean": _points(exercise.mean_points),
        "max": _points(exercise.max_points),
        "bar": _coordinate(min(max(100.0 * share, 0.0), 100.0)),
        "full_marks": _percent(exercise.full_marks_share),
    }


def _check_view(check: CheckStatistics) -> dict[str, Any]:
    return {
        "id": check.id,
        "title": check.title,
        "hidden": check.hidden,
        "ran": str(check.ran),
        "passed": str(check.passed),
        "rate": _percent(check.pass_rate),
        "failed": str(check.failed),
        "errors": str(check.errors + check.void),
        "not_implemented": str(check.not_implemented),
        "skipped": str(check.skipped),
    }


def _failures_view(failures: CheckFailures) -> dict[str, Any]:
    return {
        "check": failures.check,
        "title": failures.title,
        "count": str(failures.count),
        "other_groups": str(failures.other_groups) if failures.other_groups else "",
        "groups": [
            {
                "pattern": group.pattern,
                "example": group.example if group.example != group.pattern else "",
                "count": str(group.count),
                "students": [{"student": s.student, "report": s.report or ""} for s in group.students],
                "more": str(group.count - len(group.students)) if group.count > len(group.students) else "",
            }
            for group in failures.groups
        ],
    }


def summary_context(summary: ClassSummary, title: str = "Class report") -> dict[str, Any]:
    """Everything ``summary.html`` shows, as plain strings, lists and dicts."""
    scores = summary.scores
    statistics_view = []
    if scores:
        pairs = (("Mean", scores.mean), ("Median", scores.median), ("Lowest", scores.minimum), ("Highest", scores.maximum))
        statistics_view = [{"label": label, "value": fmt_points(value)} for label, value in pairs]
    return {
        "title": one_line(title, _NAME_CHARS) or "Class report",
        "version": grader.__version__,
        "students": str(summary.students),
        "graded": str(summary.graded),
        "status_counts": [{"status": s, "count": str(n), "graded": s == GRADED} for s, n in summary.status_counts],
        "scores": statistics_view,
        "histogram": histogram_chart(summary.histogram) if scores else None,
        "exercises": [_exercise_view(e) for e in summary.exercises],
        "pass_rates": pass_rate_chart(summary.checks) if summary.checks else None,
        "checks": [_check_view(c) for c in summary.checks],
        "failures": [_failures_view(f) for f in summary.failures],
        "slowest": [_student_view(row) for row in summary.slowest],
        "rows": [_student_view(row) for row in summary.rows],
    }


def render_summary(summary: ClassSummary, title: str = "Class report") -> str:
    """The class report as one self-contained HTML page."""
    return environment().get_template("summary.html").render(**summary_context(summary, title))


def write_summary(out_dir: Path, summary: ClassSummary, title: str = "Class report") -> Path:
    """Write ``out_dir/summary.html`` (creating ``out_dir``) and return its path; the file is whole or absent.

    :param out_dir: the batch's results folder; students' reports are linked relative to it.
    :param summary: from :func:`build_summary`.
    :param title: the page's heading, e.g. the course and assignment.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out / SUMMARY_NAME, render_summary(summary, title))
