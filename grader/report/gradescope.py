"""Gradescope autograder results (``results.json``).

:func:`to_gradescope` maps a report onto Gradescope's format, one test per
check; :func:`write_results_json` writes it. Output fields are declared plain
text so that nothing a student prints is read as HTML or Markdown, and only
keys of Gradescope's specification are written.

A check that is not visible (``hidden``, ``after_due_date``, ``after_published``)
is a test with that visibility, which Gradescope keeps from students; nothing else
in the file tells of it while it is hidden: the top-level ``output`` counts only
the visible checks (:func:`student_view`), and the autograder's stdout is hidden.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from grader import hookimpl
from grader.config import RunConfig
from grader.report import write_text_atomic
from grader.report.formatting import (
    check_number,
    clean_text,
    fmt_percent,
    fmt_score,
    one_line,
    status_label,
    tally,
)
from grader.results import PASSED, CheckResult, ExerciseResult, GradingReport

RESULTS_NAME = "results.json"

# Gradescope caps the size of results.json; a print loop must not cost the grade
_OUTPUT_CHARS = 20_000


def _number(value: Any) -> float:
    # Gradescope rejects NaN/Infinity, which json.dumps would otherwise emit
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return round(number, 6) if math.isfinite(number) else 0.0


def _test_output(check: CheckResult) -> str:
    parts = []
    message = clean_text(check.message).strip()
    head = f"[{status_label(check.status)}]"
    parts.append(f"{head} {message}" if message else head)
    if check.details.strip():
        parts.append(clean_text(check.details).rstrip())
    if check.output.strip():
        parts.append("Output of your code:\n" + clean_text(check.output).rstrip())
    text = "\n\n".join(parts)
    if len(text) > _OUTPUT_CHARS:
        text = text[:_OUTPUT_CHARS] + f"\n… ({len(text) - _OUTPUT_CHARS} more characters not shown)"
    return text


def _tags(exercise: str, hooks: tuple[str, ...]) -> list[str]:
    tags: list[str] = []
    for tag in (exercise, *hooks):
        tag = one_line(tag, 100)
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def student_view(report: GradingReport) -> GradingReport:
    """The report as students may see it now: the visible checks only, the points and figures theirs.

    Exercises left without a visible check are dropped; an exercise that lost a check loses its
    figures too, as they may come from that check.
    """
    exercises = []
    for exercise in report.exercises:
        checks = tuple(c for c in exercise.checks if c.visible)
        if not checks:
            continue
        exercises.append(replace(
            exercise, checks=checks, points=sum(c.points for c in checks), max_points=sum(c.max_points for c in checks),
            figures=exercise.figures if len(checks) == len(exercise.checks) else {}))
    return replace(report, exercises=tuple(exercises), points=sum(e.points for e in exercises),
                   max_points=sum(e.max_points for e in exercises))


def has_hidden(report: GradingReport) -> bool:
    return any(not c.visible for c in report.all_checks())


#: said in the top-level output while some checks are hidden
HIDDEN_NOTE = ("Some checks are hidden until your instructor releases them; the score and counts above are those "
               "of the checks shown.")


def _summary(report: GradingReport) -> str:
    """The top-level output: the visible checks' figures only."""
    shown = student_view(report)
    hidden = has_hidden(report)
    label = "Score on the checks shown" if hidden else "Score"
    lines = [
        f"{label}: {fmt_score(shown.points, shown.max_points)} "
        f"({fmt_percent(shown.points, shown.max_points)}%)"
    ]
    counts = tally(c.status for c in shown.all_checks())
    if counts:
        lines.append(f"Checks: {counts}")
    for exercise in shown.exercises:
        lines.append(f"  {one_line(exercise.name)}: {fmt_score(exercise.points, exercise.max_points)}")
    if hidden:
        lines.append(HIDDEN_NOTE)
    if report.problems:
        lines.append("File problems:")
        lines += [
            f"  {p.severity}: {one_line(p.where, 1000)}: {one_line(p.message, 1000)}" for p in report.problems
        ]
    lines += [f"Note: {one_line(n, 1000)}" for n in report.notices]
    if report.configuration:
        lines.append(f"Course configuration: {one_line(report.configuration, 1000)}")
    if report.grader_version:
        lines.append(f"rnn-grader {report.grader_version}")
    return "\n".join(lines)


def _numbering(report: GradingReport) -> list[tuple[ExerciseResult, list[CheckResult]]]:
    """Exercises and their checks in the order they are numbered: visible ones first, so that the numbers
    students see have no gaps where a hidden check is."""
    def shown_first(checks: "tuple[CheckResult, ...] | list[CheckResult]") -> list[CheckResult]:
        return sorted(checks, key=lambda c: not c.visible)  # stable: keeps each group's order

    exercises = sorted(report.exercises, key=lambda e: not any(c.visible for c in e.checks))
    return [(exercise, shown_first(exercise.checks)) for exercise in exercises]


def to_gradescope(report: GradingReport) -> dict[str, Any]:
    """The report as a Gradescope ``results.json`` object (plain JSON types, the specification's keys only)."""
    tests = []
    for i, (exercise, checks) in enumerate(_numbering(report)):
        for j, check in enumerate(checks):
            tests.append(
                {
                    "name": one_line(f"{exercise.name}: {check.title}", 300),
                    "number": check_number(i, j),
                    "score": _number(check.points),
                    "max_score": _number(check.max_points),
                    # Gradescope knows passed and failed; the grader's own status (error, to do...) rides along
                    "status": "passed" if check.status == PASSED else "failed",
                    "output": _test_output(check),
                    "tags": _tags(exercise.name, check.hooks),
                    "visibility": check.visibility,
                    "extra_data": {"status": str(check.status)},
                }
            )
    return {
        "score": _number(report.points),
        "execution_time": _number(report.seconds),
        "output": _summary(report),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        # what the autograder printed could tell of a hidden check
        "stdout_visibility": "hidden" if has_hidden(report) else "visible",
        "tests": tests,
    }


def without_grading(message: str, stdout_visible: bool = True) -> dict[str, Any]:
    """results.json for a submission that was not graded (nothing to grade, the grader failed): ``message`` says why."""
    return {
        "score": 0.0,
        "output": clean_text(message),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "stdout_visibility": "visible" if stdout_visible else "hidden",
        "tests": [],
    }


def write_results_json(report: GradingReport, out_dir: Path | str) -> Path:
    """Write ``out_dir/results.json`` (creating ``out_dir``) and return its path; the file is whole or absent."""
    return write_results(to_gradescope(report), out_dir)


def write_results(data: dict[str, Any], out_dir: Path | str) -> Path:
    """Write ``data`` (from :func:`to_gradescope` or :func:`without_grading`) as ``out_dir/results.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return write_text_atomic(out / RESULTS_NAME, text + "\n")


@hookimpl
def grader_report(report: GradingReport, config: RunConfig) -> None:
    """Write results.json into ``config.out_dir`` when one is set."""
    if config.out_dir is not None:
        write_results_json(report, config.out_dir)
