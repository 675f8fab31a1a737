"""JUnit XML (``grade DIR --junit FILE``): one test case per check, for CI test reports.

JUnit is the format CI services read to list tests (GitHub test reporters, GitLab's merge
request widget, Jenkins). Its reader is the student, in the log of a pull request, so only
checks whose visibility is "visible" appear: a hidden check leaves no name, message, score or
count behind. Test case names are check ids (``rnn_scratch.forward``), stable between runs so
that CI services can follow a check's history.

Text from a submission goes through :func:`xml_text`: control characters shown as ``\\xNN``
(as every reporter shows them), and anything else XML 1.0 cannot hold removed.
ElementTree escapes the rest (``<``, ``&``, ``]]>``, quotes).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable

from grader import hookimpl
from grader.config import RunConfig
from grader.report import write_text_atomic
from grader.report.formatting import clean_text, fmt_points, one_line, status_label, trim
from grader.results import (
    ERROR,
    FAILED,
    INTEGRITY,
    NOT_IMPLEMENTED,
    PASSED,
    SKIPPED,
    CheckResult,
    GradingReport,
)

#: the ``classname`` of every test case is this prefix and the exercise name
CLASS_PREFIX = "rnn_grader"

#: how much of a check's explanation and of the student's printed output a test case keeps
_TEXT_CHARS = 20_000
_OUTPUT_CHARS = 10_000

#: what XML 1.0 can hold (its ``Char`` production); everything else is removed
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: Any) -> str:
    """``text`` as XML 1.0 can hold it: controls and lone surrogates shown escaped, other misfits removed."""
    return _NOT_XML.sub("", clean_text(text))


# status -> (element, type): not implemented costs points, so it is a failure, not a skip
_OUTCOME = {
    FAILED: ("failure", "failed"),
    NOT_IMPLEMENTED: ("failure", "not_implemented"),
    ERROR: ("error", "error"),
    INTEGRITY: ("error", "integrity"),
    SKIPPED: ("skipped", "skipped"),
}


def _outcome(status: str) -> tuple[str, str] | None:
    """The child element a status becomes; None for a pass. An unknown status is a failure (it earned nothing sure)."""
    if status == PASSED:
        return None
    return _OUTCOME.get(status, ("failure", one_line(status, 40) or "failed"))


def _seconds(values: Iterable[float]) -> str:
    total = 0.0
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number == number and 0 <= number < float("inf"):  # NaN, negatives and infinities count as nothing
            total += number
    return f"{total:.3f}"


def _properties(parent: ET.Element, values: dict[str, str]) -> None:
    properties = ET.SubElement(parent, "properties")
    for name, value in values.items():
        ET.SubElement(properties, "property", name=name, value=xml_text(value))


def _failure_text(check: CheckResult) -> str:
    parts = [f"[{status_label(check.status)}] {fmt_points(check.points)}/{fmt_points(check.max_points)} points: "
             f"{clean_text(check.title)}"]
    if check.message.strip():
        parts.append(clean_text(check.message).strip())
    if check.details.strip():
        parts.append(clean_text(check.details).rstrip())
    return xml_text(trim("\n\n".join(parts), _TEXT_CHARS))


def _output(text: str) -> str:
    text = clean_text(text).rstrip()
    if len(text) > _OUTPUT_CHARS:
        text = text[:_OUTPUT_CHARS] + f"\n… ({len(text) - _OUTPUT_CHARS} more characters not shown)"
    return xml_text(text)


def _testcase(suite: ET.Element, check: CheckResult, exercise: str) -> str:
    """Add one check's test case to ``suite``; returns the element its outcome became ("" for a pass)."""
    case = ET.SubElement(suite, "testcase", classname=xml_text(f"{CLASS_PREFIX}.{exercise}"),
                         name=xml_text(check.check_id), time=_seconds([check.seconds]))
    _properties(case, {"title": one_line(check.title, 300), "points": fmt_points(check.points),
                       "max_points": fmt_points(check.max_points), "status": one_line(check.status, 40)})
    outcome = _outcome(check.status)
    if outcome is not None:
        tag, kind = outcome
        message = xml_text(one_line(check.message, 500) or one_line(check.title, 300))
        ET.SubElement(case, tag, message=message, type=kind).text = _failure_text(check)
    if check.output.strip():
        ET.SubElement(case, "system-out").text = _output(check.output)
    return outcome[0] if outcome else ""


def to_junit(report: GradingReport) -> ET.Element:
    """The report as a ``<testsuites>`` element: one suite per exercise with visible checks."""
    root = ET.Element("testsuites", name="rnn-grader")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seconds = []
    for exercise in report.exercises:
        # the checks of a device this machine lacks (CUDA) are test cases too, skipped
        checks = [c for c in exercise.checks if c.visible]
        checks += [c for c in report.skipped_here if c.exercise == exercise.name and c.visible]
        if not checks:
            continue
        suite = ET.SubElement(root, "testsuite", name=xml_text(exercise.name))
        _properties(suite, {
            "score": fmt_points(sum(c.points for c in checks)),
            "max_score": fmt_points(sum(c.max_points for c in checks)),
            "configuration": one_line(report.configuration, 500) or "the grader's defaults",
            "grader_version": one_line(report.grader_version, 100),
            **({"untrusted": one_line(", ".join(report.untrusted), 2000)} if report.untrusted else {}),
        })
        counts = {"failure": 0, "error": 0, "skipped": 0}
        for check in checks:
            tag = _testcase(suite, check, exercise.name)
            if tag:
                counts[tag] += 1
        suite_counts = {"tests": len(checks), "failures": counts["failure"], "errors": counts["error"],
                        "skipped": counts["skipped"]}
        for key, value in suite_counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", _seconds(c.seconds for c in checks))
        seconds += [c.seconds for c in checks]
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _seconds(seconds))
    return root


def junit_xml(report: GradingReport) -> str:
    """The JUnit XML document of a report, as text."""
    root = to_junit(report)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: GradingReport, path: Path | str) -> Path:
    """Write the JUnit XML of ``report`` to ``path`` (creating its folder); the file is whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, junit_xml(report))


@hookimpl
def grader_report(report: GradingReport, config: RunConfig) -> None:
    """Write the JUnit XML report when ``--junit FILE`` asked for one."""
    if config.junit_path is not None:
        write_junit(report, config.junit_path)
