"""The class report's page, ``summary.html``: a :class:`~grader.report.summary.ClassSummary` rendered.

:func:`summary_context` turns the summary into view data (strings, and charts reduced to
coordinates), and :func:`render_summary` renders ``templates/summary.html`` with the HTML
report's Jinja environment. Student ids, names and messages come from submissions: the template
only ever autoescapes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import grader
from grader.report import write_text_atomic
from grader.report.formatting import fmt_points, one_line, status_label
from grader.report.gradebook import GRADED
from grader.report.html import environment, nice_ticks
from grader.report.summary import (
    NAME_CHARS, CheckFailures, CheckStatistics, ClassSummary, ExerciseStatistics, HistogramBin, StudentRow,
)
from grader.results import ERROR, FAILED, NOT_IMPLEMENTED, PASSED

SUMMARY_NAME = "summary.html"


# --------------------------------------------------------------------------
# Charts: numbers in, coordinates out
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


# --------------------------------------------------------------------------
# View data and the page
# --------------------------------------------------------------------------


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
        "title": one_line(title, NAME_CHARS) or "Class report",
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
