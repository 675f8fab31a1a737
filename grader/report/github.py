"""GitHub Actions: the job summary, annotations on the student's files, and step outputs.

Active only where ``GITHUB_ACTIONS`` is ``true``. Three outputs, each read by GitHub:

* a Markdown summary appended to the file ``$GITHUB_STEP_SUMMARY`` names (the run's summary page);
* workflow commands on stdout, ``::error file=...,line=...,title=...::message``, which GitHub shows
  on the line of the failing function in the pull request's diff;
* ``score``, ``max_score``, ``percent`` and ``untrusted`` appended to ``$GITHUB_OUTPUT``, for later steps.

Everything here is shown to the student, and anyone who can read the pull request: only checks whose
visibility is "visible" appear, and the score is theirs alone. Texts from a submission are escaped for
where they go: Markdown (no markup, no raw HTML) or a workflow command (no new line, no forged property).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from grader import hookimpl
from grader.config import RunConfig
from grader.report.formatting import clean_text, fmt_percent, fmt_points, fmt_score, one_line, status_label, tally, trim
from grader.results import (
    ERROR,
    FAILED,
    INTEGRITY,
    NOT_IMPLEMENTED,
    PASSED,
    SKIPPED,
    VISIBLE,
    CheckResult,
    GradingReport,
)

#: GitHub shows 10 error annotations per step and 50 per job: beyond that they are lost, so the last
#: one says how many more there are and where to read them
MAX_ANNOTATIONS = 50
#: longest message an annotation carries; the summary and the report have the rest
_ANNOTATION_CHARS = 2_000
#: longest message in a summary table cell, and longest explanation under "Details"
_CELL_CHARS = 300
_DETAILS_CHARS = 2_000
#: checks whose explanation the summary shows in full (the table lists them all)
_DETAILED_CHECKS = 20
#: longest summary written (GitHub takes at most 1 MiB per step; a pack may have many checks)
_SUMMARY_CHARS = 500_000

_MARKS = {PASSED: "✅", FAILED: "❌", ERROR: "💥", INTEGRITY: "⛔", NOT_IMPLEMENTED: "📝", SKIPPED: "⏭️"}
HIDDEN_LINE = "Hidden checks are graded by your instructor; they are not shown here."


def active(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process runs in a GitHub Actions job."""
    return environ.get("GITHUB_ACTIONS") == "true"


# --------------------------------------------------------------------------
# escaping
# --------------------------------------------------------------------------

# CommonMark lets a backslash escape any ASCII punctuation. Text here never starts a line, so these
# are the ones that still make markup: code, emphasis, links and images, table cells, strike-through,
# GitHub's math, mentions and issue references
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|~$@#])")


def markdown_text(text: Any, limit: int = _CELL_CHARS) -> str:
    """Student text as one line of Markdown that renders as itself: no markup, no HTML, fit for a table cell."""
    flat = one_line(text, limit)
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", flat)


def code_block(text: str) -> str:
    """A fenced block that shows ``text`` verbatim: the fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def command_data(text: str) -> str:
    """The message of a workflow command: it must stay on its line."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def command_property(text: str) -> str:
    """A property value of a workflow command: also no ``:`` or ``,`` that would end it."""
    return command_data(text).replace(":", "%3A").replace(",", "%2C")


# the runner reads a line as a command when it starts with "::" after spaces, or holds "##[" (the old form)
_COMMAND_START = re.compile(r"^(\s*):(?=:)|#(?=#\[)", re.M)


def defuse_commands(text: str) -> str:
    """Student text printed to a GitHub Actions log, made unable to act as a workflow command.

    A line such as ``::stop-commands::x`` or ``::error::fake`` in a submission's output would otherwise
    switch off or forge this grader's annotations; a zero-width space after the first ``:`` or ``#``
    keeps the text readable and inert. For reporters that print a submission's text line by line.
    """
    return _COMMAND_START.sub(lambda m: m.group(0) + "\u200b", text)


def workflow_command(kind: str, message: str, **properties: Any) -> str:
    """``::kind prop=value,...::message``, properties left out when None or empty."""
    given = [f"{name}={command_property(str(value))}" for name, value in properties.items()
             if value is not None and str(value) != ""]
    return f"::{kind}{' ' + ','.join(given) if given else ''}::{command_data(message)}"


# --------------------------------------------------------------------------
# what the student may see
# --------------------------------------------------------------------------


def visible_score(report: GradingReport) -> tuple[float, float]:
    """Points and maximum of the visible checks: a hidden check's score is not the student's to see yet."""
    checks = [c for c in report.all_checks() if c.visible]
    return sum(c.points for c in checks), sum(c.max_points for c in checks)


def has_hidden(report: GradingReport, course: Any = None) -> bool:
    """Whether some check is kept from the student: in the report, or by the course configuration.

    Hidden checks do not run without ``--hidden``, so a report graded in CI rarely holds one; the
    course configuration still says when some of its checks are hidden.
    """
    if any(not c.visible for c in report.all_checks()):
        return True
    if course is None:
        return False
    tables = [*getattr(course, "per_exercise", {}).values(), *getattr(course, "per_check", {}).values()]
    chosen = [getattr(course, "visibility", None), *(t.get("visibility") for t in tables)]
    return any(v not in (None, "", VISIBLE) for v in chosen)


def _notices(report: GradingReport) -> list[str]:
    """The report's notices, less the untrustworthy one the banner already says."""
    return [n for n in report.notices if not (report.untrusted and str(n).startswith("untrustworthy"))]


def _untrusted_files(report: GradingReport, limit: int = 20) -> str:
    files = [one_line(f, 200) for f in report.untrusted]
    more = f" and {len(files) - limit} more" if len(files) > limit else ""
    return ", ".join(files[:limit]) + more


# --------------------------------------------------------------------------
# the job summary
# --------------------------------------------------------------------------


def step_summary(report: GradingReport, course: Any = None) -> str:
    """The Markdown appended to ``$GITHUB_STEP_SUMMARY`` (``course``: the configuration that graded it)."""
    points, max_points = visible_score(report)
    checks = [(ex.name, c) for ex in report.exercises for c in ex.checks if c.visible]
    lines = [f"## rnn-grader: {fmt_score(points, max_points)} points ({fmt_percent(points, max_points)}%)", ""]
    if report.untrusted:
        lines += ["> [!CAUTION]",
                  "> **This result cannot be trusted.** The pull request changed files outside the exercise "
                  f"files: {markdown_text(_untrusted_files(report), 4000)}. The score above may not be the "
                  "grader's own; your instructor's grading decides.", ""]
    for notice in _notices(report):
        lines += [f"> **Note:** {markdown_text(notice, 1000)}", ""]
    configuration = (f"the course configuration {markdown_text(report.configuration, 300)}"
                     if report.configuration else "the grader's default settings")
    about = [f"Graded with {configuration}"]
    if report.grader_version:
        about.append(f"rnn-grader {markdown_text(report.grader_version, 50)}")
    counts = tally(c.status for _, c in checks)
    if counts:
        about.append(counts)
    lines += [" · ".join(about) + ".", ""]
    if report.problems:
        lines.append("**Problems with your files:**")
        lines += [f"- {markdown_text(p.severity, 20)}: {markdown_text(p.where, 200)}: {markdown_text(p.message, 500)}"
                  for p in report.problems]
        lines.append("")
    if checks:
        lines += ["| exercise | check | points | status | what to fix |", "|---|---|---:|---|---|"]
        for exercise, check in checks:
            fix = "" if check.status == PASSED else markdown_text(check.message)
            lines.append(f"| {markdown_text(exercise, 100)} | {markdown_text(check.title, 200)} "
                         f"({markdown_text(check.check_id, 200)}) | {fmt_score(check.points, check.max_points)} | "
                         f"{_MARKS.get(check.status, '')} {status_label(check.status)} | {fix} |")
        lines.append("")
    detailed = [(ex, c) for ex, c in checks if c.status not in (PASSED, SKIPPED, NOT_IMPLEMENTED) and c.details.strip()]
    if detailed:
        lines += ["### Details", ""]
        for exercise, check in detailed[:_DETAILED_CHECKS]:
            lines += [f"**{markdown_text(exercise, 100)}: {markdown_text(check.title, 200)}**", "",
                      code_block(trim(clean_text(check.details).rstrip(), _DETAILS_CHARS)), ""]
        if len(detailed) > _DETAILED_CHECKS:
            lines += [f"… and {len(detailed) - _DETAILED_CHECKS} more; run `grade` on your files to see them all.",
                      ""]
    if has_hidden(report, course):
        lines += [HIDDEN_LINE, ""]
    text = "\n".join(lines) + "\n"
    if len(text) > _SUMMARY_CHARS:  # GitHub refuses a step's whole summary past 1 MiB
        cut = text.rindex("\n", 0, _SUMMARY_CHARS)
        text = text[:cut] + "\n\n… the rest is cut; run `grade` on your files to see it.\n"
    return text


# --------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------


def annotation_path(submission: str, file: str, workspace: Optional[str]) -> str:
    """Where GitHub finds a submission file: relative to its repository's checkout when that lies in the
    workspace (a checkout into a subfolder, ``path: submission``, has its own root), else to the
    workspace; absolute outside it."""
    path = Path(submission) / file
    if workspace:
        for candidate, root in ((path, Path(workspace)), (path.resolve(), Path(workspace).resolve())):
            try:
                relative = candidate.relative_to(root)
            except ValueError:
                continue
            for depth in range(len(relative.parts) - 1, 0, -1):  # the innermost checkout below the workspace
                if (root.joinpath(*relative.parts[:depth]) / ".git").exists():
                    return Path(*relative.parts[depth:]).as_posix()
            return relative.as_posix()
    return path.resolve().as_posix()


def _location(report: GradingReport, check: CheckResult) -> tuple[Optional[str], Optional[int]]:
    for hook in check.hooks:
        where = report.locations.get(hook)
        if where:
            file, line = where
            return str(file), int(line) if line else None
    return None, None


def _check_message(check: CheckResult) -> str:
    parts = [clean_text(check.message).strip() or status_label(check.status)]
    if check.details.strip():
        parts.append(clean_text(check.details).rstrip())
    return trim("\n\n".join(parts), _ANNOTATION_CHARS)


def annotations(report: GradingReport, workspace: Optional[str] = None) -> list[str]:
    """The workflow commands to print: at most :data:`MAX_ANNOTATIONS`, the most useful first."""

    def where(file: Optional[str]) -> Optional[str]:
        return annotation_path(report.submission, file, workspace) if file else None

    found: list[str] = []
    if report.untrusted:
        found.append(workflow_command(
            "warning", f"This pull request changed files outside the exercise files: {_untrusted_files(report)}. "
                       "The grade shown may not be the grader's own; your instructor's grading decides.",
            title="Untrustworthy result"))
    for problem in report.problems:
        file = None if problem.path in ("", ".") else problem.path
        found.append(workflow_command(
            "error" if problem.severity == "error" else "warning", one_line(problem.message, _ANNOTATION_CHARS),
            file=where(file), line=problem.line if problem.line > 0 and file else None,
            title=f"{one_line(problem.path, 200)}: problem with this file"))
    todo: dict[tuple[Optional[str], Optional[int], str], list[CheckResult]] = {}
    for exercise in report.exercises:
        for check in exercise.checks:
            if not check.visible:
                continue
            file, line = _location(report, check)
            if check.status == NOT_IMPLEMENTED:  # one note per unwritten function, not one per check
                todo.setdefault((file, line, exercise.name), []).append(check)
            elif check.status not in (PASSED, SKIPPED):  # failed, error, integrity, or a status of a pack's own
                title = (f"{one_line(exercise.name, 100)}: {one_line(check.title, 200)} "
                         f"({status_label(check.status)} {fmt_score(check.points, check.max_points)} points)")
                found.append(workflow_command("error", _check_message(check), file=where(file),
                                              line=line if file else None, title=title))
    for (file, line, exercise), checks in todo.items():
        hooks = sorted({h for c in checks for h in c.hooks})
        lost = sum(c.max_points for c in checks)
        names = f"{', '.join(one_line(h, 100) for h in hooks)} {'is' if len(hooks) == 1 else 'are'}"
        waiting = (f"{len(checks)} check ({fmt_points(lost)} points) waits" if len(checks) == 1
                   else f"{len(checks)} checks ({fmt_points(lost)} points) wait")
        found.append(workflow_command(
            "error", f"{names} not implemented yet: {waiting} for it.",
            file=where(file), line=line if file else None,
            title=f"{one_line(exercise, 100)}: not implemented (TODO)"))
    if len(found) > MAX_ANNOTATIONS:
        more = len(found) - (MAX_ANNOTATIONS - 1)
        found = found[:MAX_ANNOTATIONS - 1] + [workflow_command(
            "notice", f"{more} more problems are not annotated; the job summary lists every check.",
            title="More problems")]
    return found


# --------------------------------------------------------------------------
# step outputs
# --------------------------------------------------------------------------


def step_outputs(report: GradingReport) -> str:
    """``name=value`` lines for ``$GITHUB_OUTPUT``: the visible score, and whether to trust it."""
    points, max_points = visible_score(report)
    return (f"score={fmt_points(points)}\nmax_score={fmt_points(max_points)}\n"
            f"percent={fmt_percent(points, max_points)}\nuntrusted={'true' if report.untrusted else 'false'}\n")


def _append(path: str, text: str) -> None:
    # GitHub reads these files after the step: each step appends, so never replace what is there
    with open(path, "a", encoding="utf-8", errors="backslashreplace") as stream:
        stream.write(text)


def _print(lines: Iterable[str]) -> None:
    stream = sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    for line in lines:
        print(line.encode(encoding, "backslashreplace").decode(encoding), file=stream)
    stream.flush()


@hookimpl
def grader_report(report: GradingReport, config: RunConfig) -> None:
    """Under GitHub Actions: the job summary, the annotations and the step outputs."""
    environ = os.environ
    if not active(environ):
        return
    summary = environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        _append(summary, step_summary(report, config.course))
    _print(annotations(report, environ.get("GITHUB_WORKSPACE")))
    output = environ.get("GITHUB_OUTPUT")
    if output:
        _append(output, step_outputs(report))
