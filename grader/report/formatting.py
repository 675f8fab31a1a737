"""Formatting shared by the reporters: status labels, points and text clean-up.

Pure functions on plain values; no I/O. Texts in a report (messages, details,
captured output, paths) may come from student code, so every reporter passes
them through :func:`clean_text` or :func:`one_line` before showing them.
"""

from __future__ import annotations

import math
import re
from typing import Any

from grader.prose import shorten
from grader.results import ERROR, FAILED, INTEGRITY, NOT_IMPLEMENTED, PASSED, SKIPPED

#: Statuses in the order reporters list and count them.
STATUS_ORDER = (PASSED, FAILED, ERROR, INTEGRITY, NOT_IMPLEMENTED, SKIPPED)

STATUS_LABELS = {
    PASSED: "PASS",
    FAILED: "FAIL",
    ERROR: "ERROR",
    INTEGRITY: "VOID",
    NOT_IMPLEMENTED: "TODO",
    SKIPPED: "SKIP",
}

#: Words for counts in summaries ("3 failed", "1 to do"); see :func:`count_phrase`.
STATUS_WORDS = {
    PASSED: "passed",
    FAILED: "failed",
    ERROR: "error",
    INTEGRITY: "void",
    NOT_IMPLEMENTED: "to do",
    SKIPPED: "skipped",
}

#: Longest one-line message a summary shows.
MESSAGE_LIMIT = 160

# C0/C1 controls except tab and newline: ANSI escapes or carriage returns from
# student output must not repaint a terminal or corrupt a report. Lone surrogates
# (a "\ud800" in student text) cannot be written as UTF-8 and would break a report file.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SPACE = re.compile(r"\s+")


def status_label(status: str) -> str:
    """Short upper-case mark for a status: PASS, FAIL, ERROR, TODO, SKIP."""
    return STATUS_LABELS.get(status, str(status).upper() or "?")


def fmt_points(value: Any) -> str:
    """Points without noise: ``7.5``, ``10``, ``0.33``; ``?`` when not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "?"
    if not math.isfinite(number):
        return "?"
    text = f"{number:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def fmt_score(points: Any, max_points: Any) -> str:
    return f"{fmt_points(points)}/{fmt_points(max_points)}"


def fmt_percent(points: float, max_points: float) -> str:
    """Percentage with at most one decimal: ``87.5``, ``100``."""
    try:
        value = 100.0 * float(points) / float(max_points) if max_points else 0.0
    except (TypeError, ValueError, ZeroDivisionError):
        return "0"
    if not math.isfinite(value):
        return "0"
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(text: Any) -> str:
    """Multi-line text made safe to print: control characters shown as ``\\xNN``, lone surrogates as ``\\udNNN``."""
    if text is None:
        return ""
    text = str(text).replace("\r\n", "\n")
    return _CONTROL.sub(_escape_control, text)


def trim(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, after a sentence or a word, ending with an ellipsis when cut."""
    return shorten(text, limit)


def one_line(text: Any, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line: whitespace runs collapsed, controls escaped, trimmed."""
    flat = _SPACE.sub(" ", "" if text is None else str(text)).strip()
    return trim(clean_text(flat), limit)


def status_counts(statuses: Any) -> list[tuple[str, int]]:
    """``[(status, count)]`` in :data:`STATUS_ORDER`, zero counts left out; unknown statuses last."""
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    known = [(s, counts.pop(s)) for s in STATUS_ORDER if s in counts]
    return known + sorted(counts.items())


def count_phrase(status: str, count: int) -> str:
    """``"3 failed"``, ``"1 error"``, ``"2 errors"``."""
    word = STATUS_WORDS.get(status, str(status))
    if status == ERROR and count != 1:
        word += "s"
    return f"{count} {word}"


def tally(statuses: Any) -> str:
    """``"2 passed, 1 failed, 1 to do"`` for the given statuses; empty when there are none."""
    return ", ".join(count_phrase(s, n) for s, n in status_counts(statuses))


def check_number(exercise_index: int, check_index: int) -> str:
    """Gradescope-style number of a check, both indices 0-based: ``(0, 2) -> "1.3"``."""
    return f"{exercise_index + 1}.{check_index + 1}"
