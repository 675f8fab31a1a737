"""Gradescope autograder results (``results.json``).

:func:`to_gradescope` maps a report onto Gradescope's format, one test per
check; :func:`write_results_json` writes it. Output fields are declared plain
text so that nothing a student prints is read as HTML or Markdown.
"""

from __future__ import annotations

import json
import math
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
from grader.results import PASSED, CheckResult, GradingReport

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


def _summary(report: GradingReport) -> str:
    lines = [
        f"Score: {fmt_score(report.points, report.max_points)} "
        f"({fmt_percent(report.points, report.max_points)}%)"
    ]
    counts = tally(c.status for c in report.all_checks())
    if counts:
        lines.append(f"Checks: {counts}")
    for exercise in report.exercises:
        lines.append(f"  {one_line(exercise.name)}: {fmt_score(exercise.points, exercise.max_points)}")
    if report.problems:
        lines.append("File problems:")
        lines += [
            f"  {p.severity}: {one_line(p.path, 1000)}: {one_line(p.message, 1000)}" for p in report.problems
        ]
    lines += [f"Note: {one_line(n, 1000)}" for n in report.notices]
    if report.grader_version:
        lines.append(f"rnn-grader {report.grader_version}")
    return "\n".join(lines)


def to_gradescope(report: GradingReport) -> dict[str, Any]:
    """The report as a Gradescope ``results.json`` object (plain JSON types only)."""
    tests = []
    for i, exercise in enumerate(report.exercises):
        for j, check in enumerate(exercise.checks):
            tests.append(
                {
                    "name": one_line(f"{exercise.name}: {check.title}", 300),
                    "number": check_number(i, j),
                    "score": _number(check.points),
                    "max_score": _number(check.max_points),
                    "status": "passed" if check.status == PASSED else "failed",
                    "output": _test_output(check),
                    "tags": _tags(exercise.name, check.hooks),
                    "visibility": "after_published" if check.hidden else "visible",
                }
            )
    return {
        "score": _number(report.points),
        "max_score": _number(report.max_points),
        "execution_time": _number(report.seconds),
        "output": _summary(report),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "stdout_visibility": "visible",
        "tests": tests,
    }


def write_results_json(report: GradingReport, out_dir: Path | str) -> Path:
    """Write ``out_dir/results.json`` (creating ``out_dir``) and return its path; the file is whole or absent."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_gradescope(report), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return write_text_atomic(out / RESULTS_NAME, text + "\n")


@hookimpl
def grader_report(report: GradingReport, config: RunConfig) -> None:
    """Write results.json into ``config.out_dir`` when one is set."""
    if config.out_dir is not None:
        write_results_json(report, config.out_dir)
