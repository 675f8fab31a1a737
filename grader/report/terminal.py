"""Terminal summary of a grading.

:func:`format_summary` turns a report into text; :class:`TerminalReporter`
writes that text to a stream. Register either this module (writes to the
current ``sys.stdout``) or a ``TerminalReporter(stream)`` instance, not both,
or the summary is printed twice.

The reporter runs ``trylast`` so that report.html and results.json already
exist when it says where they were written.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Mapping, Optional, Sequence, TextIO

from grader import hookimpl
from grader.config import RunConfig
from grader.report.formatting import (
    MESSAGE_LIMIT,
    STATUS_ORDER,
    clean_text,
    fmt_percent,
    fmt_points,
    fmt_score,
    hint_first,
    one_line,
    split_diagnosis,
    status_label,
    tally,
)
from grader.results import (
    ERROR,
    FAILED,
    NOT_IMPLEMENTED,
    PASSED,
    SKIPPED,
    CheckResult,
    ExerciseResult,
    GradingReport,
)

#: the most of a failing check's message the terminal shows (a message is a few sentences; this stops floods)
DIAGNOSIS_LIMIT = 2000
#: Files other reporters write into ``config.out_dir``, with how to name them.
OUTPUT_FILES = (("report.html", "HTML report"), ("results.json", "Gradescope results"))

_RESET = "\x1b[0m"
_STYLES = {
    PASSED: "\x1b[32m",  # green
    FAILED: "\x1b[31m",  # red
    ERROR: "\x1b[1;31m",  # bold red
    NOT_IMPLEMENTED: "\x1b[33m",  # yellow
    SKIPPED: "\x1b[36m",  # cyan
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "warning": "\x1b[33m",
}

_MARK_WIDTH = max(len(status_label(s)) for s in STATUS_ORDER)
_INDENT = "  "
# details and output sit under the check's title column
_BODY_INDENT = _INDENT + " " * (_MARK_WIDTH + 2) + "| "


class _Painter:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, style: str) -> str:
        code = _STYLES.get(style)
        if not self.color or not code or not text:
            return text
        return f"{code}{text}{_RESET}"


def painted(text: str, style: str, color: bool) -> str:
    """``text`` in the terminal's colour for ``style`` (a status, "bold", "dim" or "warning") when ``color``."""
    return _Painter(color)(text, style)


def shown_message(check: CheckResult, titles: Mapping[str, str]) -> str:
    """What the terminal says about a check: a quoted error with the hint first, and "same cause as"
    naming the other check by its title (the terminal lists checks by title, not by id)."""
    message = hint_first(check.message) if check.status != PASSED else check.message
    title = titles.get(check.same_cause_as) if check.same_cause_as else None
    if title and check.same_cause_as in message:
        message = message.replace(check.same_cause_as, f'"{title}"', 1)
    return message


def _check_lines(
    check: CheckResult, points_width: int, verbose: bool, paint: _Painter, titles: Mapping[str, str]
) -> list[str]:
    mark = paint(status_label(check.status).ljust(_MARK_WIDTH), check.status)
    score = fmt_score(check.points, check.max_points).rjust(points_width)
    title = one_line(check.title, MESSAGE_LIMIT)
    if check.hidden:
        title += " [hidden]"
    lead = f"{_INDENT}{mark}  {score}  "
    # every message whole, wrapped, never cut (a failing check's fix is usually at its end); a recognised
    # mistake's fix gets a line of its own
    message = one_line(shown_message(check, titles), DIAGNOSIS_LIMIT)
    mistake, fix = split_diagnosis(message) if check.status != PASSED else (message, "")
    paragraphs = [f"{title}: Likely mistake: {mistake}", f"Fix: {fix}"] if fix else [
        f"{title}: {message}" if message else title]
    pad = " " * len(f"{_INDENT}{status_label(check.status).ljust(_MARK_WIDTH)}  {score}  ")
    rows = [row for paragraph in paragraphs for row in _wrap(paragraph, _width() - len(pad))]
    return [lead + rows[0]] + [pad + row for row in rows[1:]] + _body_lines(check, verbose, paint)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in rows of at most ``width`` columns, broken between words (only a word longer than a row is split)."""
    return textwrap.wrap(text, width=max(width, 40), break_on_hyphens=False) or [""]


def _body_lines(check: CheckResult, verbose: bool, paint: _Painter) -> list[str]:
    lines: list[str] = []
    if verbose:
        if check.details:  # what the check saw, wrapped like the message (the output below keeps its lines)
            for line in clean_text(check.details).splitlines():
                lines += [_BODY_INDENT + row for row in _wrap(line, _width() - len(_BODY_INDENT))]
        if check.output:
            lines.append(_BODY_INDENT + paint("output:", "dim"))
            lines += [_BODY_INDENT + line for line in clean_text(check.output).splitlines()]
    return lines


def _width() -> int:
    """Columns to wrap at: the terminal's (or $COLUMNS), within reason."""
    return min(max(shutil.get_terminal_size((100, 24)).columns, 60), 160)


def _exercise_lines(exercise: ExerciseResult, verbose: bool, paint: _Painter, titles: Mapping[str, str]) -> list[str]:
    head = f"{one_line(exercise.name)}  {paint(fmt_score(exercise.points, exercise.max_points), 'bold')}"
    if exercise.title and exercise.title != exercise.name:
        head += "  " + paint(one_line(exercise.title), "dim")
    lines = [head]
    shown = [c for c in exercise.checks if verbose or c.status != PASSED]
    width = max((len(fmt_score(c.points, c.max_points)) for c in shown), default=0)
    for check in shown:
        lines += _check_lines(check, width, verbose, paint, titles)
    return lines


def written_files(config: RunConfig) -> list[tuple[str, Path]]:
    """``[(description, path)]`` of the report files present in ``config.out_dir``."""
    if config.out_dir is None:
        return []
    out_dir = Path(config.out_dir)
    return [(label, out_dir / name) for name, label in OUTPUT_FILES if (out_dir / name).is_file()]


def format_summary(
    report: GradingReport,
    config: RunConfig,
    written: Sequence[tuple[str, Path]] = (),
) -> str:
    """The whole terminal summary as text (ANSI colour only when ``config.color``)."""
    paint = _Painter(config.color)
    version = f"rnn-grader {report.grader_version}" if report.grader_version else "rnn-grader"
    lines = [f"{paint(version, 'bold')}: grading {one_line(report.submission, 1000)}"]
    if report.configuration:
        lines.append(paint(f"configuration: {one_line(report.configuration, 1000)}", "dim"))

    if report.problems:
        lines += ["", paint("File problems:", "bold")]
        width = max(len(p.severity) for p in report.problems)
        for problem in report.problems:
            severity = problem.severity.ljust(width)
            style = ERROR if problem.severity == "error" else "warning"
            # whole, wrapped under the file's name: what to do is usually at the end
            pad = " " * len(f"{_INDENT}{severity}  ")
            text = f"{one_line(problem.where, 1000)}: {one_line(problem.message, DIAGNOSIS_LIMIT)}"
            rows = _wrap(text, _width() - len(pad))
            lines += [f"{_INDENT}{paint(severity, style)}  {rows[0]}"] + [pad + row for row in rows[1:]]

    titles = {c.check_id: one_line(c.title, MESSAGE_LIMIT) for c in report.all_checks()}
    for exercise in report.exercises:
        lines.append("")
        lines += _exercise_lines(exercise, config.verbose, paint, titles)

    counts = tally(c.status for c in report.all_checks())
    score = f"Score: {fmt_score(report.points, report.max_points)}"
    lines += [
        "",
        f"{paint(score, 'bold')} ({fmt_percent(report.points, report.max_points)}%)"
        + (f"  {counts}" if counts else ""),
    ]
    if config.verbose and report.seconds:
        lines.append(f"Graded in {fmt_points(report.seconds)} s")
    for notice in () if config.quiet else report.notices:  # -q: the notes stay in the files, off the terminal
        lines.append(f"Note: {one_line(notice, 1000)}")
    for label, path in written:
        lines.append(f"{label}: {path}")
    return with_paths("\n".join(lines) + "\n", report.submission)


def _write(stream: TextIO, text: str) -> None:
    try:
        stream.write(text)
    except UnicodeEncodeError:
        # a narrow console encoding must not lose the summary over one character
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
    stream.flush()



# "rnn_scratch.py:12" where it is not already part of a longer path
_FILE_LINE = re.compile(r"(?<![\w/.-])([\w.-]+\.py):(\d+)\b")


def with_paths(text: str, submission: str) -> str:
    """``text`` with each ``file.py:LINE`` of a submission file given as a path from the working directory
    (``exercises/rnn_scratch.py:12``), which terminals and editors open at that line."""
    if not submission:
        return text
    folder = Path(submission)
    try:
        shown = os.path.relpath(folder)
    except ValueError:  # another drive (Windows)
        shown = str(folder)
    if shown.startswith(os.pardir + os.sep + os.pardir):
        shown = str(folder)
    known: dict[str, bool] = {}

    def linked(match: "re.Match[str]") -> str:
        name = match[1]
        if name not in known:
            known[name] = (folder / name).is_file()
        return f"{os.path.join(shown, name)}:{match[2]}" if known[name] and shown != os.curdir else match[0]

    return _FILE_LINE.sub(linked, text)

class TerminalReporter:
    """Plugin object that prints the summary to ``stream`` (``sys.stdout`` at call time by default)."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def summary(self, report: GradingReport, config: RunConfig) -> str:
        return format_summary(report, config, written_files(config))

    @hookimpl(trylast=True)
    def grader_report(self, report: GradingReport, config: RunConfig) -> None:
        from grader.report import github

        text = self.summary(report, config)
        if github.active():  # a submission's printed "::error::..." must not act as a workflow command
            text = github.defuse_commands(text)
        _write(self.stream, text)


_default = TerminalReporter()


@hookimpl(trylast=True)
def grader_report(report: GradingReport, config: RunConfig) -> None:
    """Print the summary to ``sys.stdout``."""
    _default.grader_report(report, config)


__all__ = ["TerminalReporter", "format_summary", "painted", "written_files", "grader_report"]
