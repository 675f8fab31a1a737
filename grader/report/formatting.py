"""Formatting shared by the reporters: status labels, points and text clean-up.

Pure functions on plain values; no I/O. Texts in a report (messages, details,
captured output, paths) may come from student code, so every reporter passes
them through :func:`clean_text` or :func:`one_line` before showing them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

from grader.hints import LOCATION, PYTHON_ERRORS
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


#: the wording of a recognised misconception (:meth:`grader.definitions.Misconception.wording`)
_DIAGNOSIS = re.compile(r"^Likely mistake: (?P<mistake>.+?) Fix: (?P<fix>.+)$", re.S)


def split_diagnosis(message: str) -> tuple[str, str]:
    """``(mistake and why, fix)`` of a recognised mistake's wording, so that the fix can stand on its own line;
    ``(message, "")`` for any other message (less a "Likely mistake: " it starts with, which reports show as a label)."""
    match = _DIAGNOSIS.match(message)
    if match is None:
        return message.removeprefix("Likely mistake: "), ""
    return match["mistake"].strip(), match["fix"].strip()


# --------------------------------------------------------------------------
# Quoted errors: the hint first, the error trimmed to what matters
# --------------------------------------------------------------------------

#: advice in torch's own error texts that sends a student the wrong way here: a graph reached twice means a
#: state that was not detached (never retain_graph=True), and the debugging switches find nothing in a grading
TORCH_ADVICE = (
    re.compile(r"\s*Specify retain_graph=True\b[^.]*\."),
    re.compile(r"\s*Hint: enable anomaly detection\b.*?set_detect_anomaly\(True\)\.?", re.S),
    re.compile(r"\s*Hint: the backtrace further above\b.*?Good luck!", re.S),
    re.compile(r"\s*CUDA kernel errors might be asynchronously reported\b[^.]*\."),
    re.compile(r"\s*For debugging consider passing CUDA_LAUNCH_BLOCKING=1\.?"),
    re.compile(r"\s*Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions\.?"),
)

# "<who> raised <Type>: <error text>[ at file.py:N in f: code][ (hint: ...) | ; what to do]"
_RAISED = re.compile(
    r"^(?P<who>.*?) raised (?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt)): (?P<rest>.+)$", re.S)
_HINT_MARK = " (hint: "
# where the runner says the error was raised: " at file.py:12 in rnn: <the line>"
_LOCATION = re.compile(rf" at {LOCATION}(?: in [\w<>.]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])")


def without_torch_advice(text: str) -> str:
    """``text`` less the advice torch adds to its errors that is the wrong fix in these exercises."""
    for advice in TORCH_ADVICE:
        text = advice.sub("", text)
    return text


def _last_location(text: str) -> Optional[re.Match[str]]:
    found = None
    for found in _LOCATION.finditer(text):
        pass
    return found


def _split_hint(rest: str) -> tuple[str, str]:
    """``(error, hint)`` of what follows "raised Type: "; the hint is "" when there is none."""
    if rest.endswith(")") and _HINT_MARK in rest:
        at = rest.rindex(_HINT_MARK)
        return rest[:at], rest[at + len(_HINT_MARK):-1]
    # a check's own "; what to do" after the runner's location (torch's text may hold "; " before it)
    location = _last_location(rest)
    if location is not None:
        at = rest.rfind("; ", location.end())
        if at >= 0:
            return rest[:at], rest[at + 2:]
    return rest, ""


def _first_sentence(text: str) -> str:
    parts = _SENTENCE_END.split(text, maxsplit=1)
    return parts[0] if len(parts) > 1 and len(parts[0]) >= 20 else text


def hint_first(message: str) -> str:
    """A message quoting an error with a hint after it, said with the hint first.

    ``"rnn raised RuntimeError: <torch's text> at f.py, line 3, in rnn: <code> (hint: <what to do>)"`` becomes
    ``"rnn raised an error: <what to do>. torch said (RuntimeError): <its first sentence> (at f.py, line 3, ...)"``,
    the words :func:`grader.hints.explain_error` gives the errors it words itself: a student reads the fix first,
    and the error, trimmed to what went wrong, shows where. Torch's advice that is the wrong fix here is left
    out of every message. Any other message is returned as it is.
    """
    message = without_torch_advice(message)
    match = _RAISED.match(message)
    if match is None:
        return message
    error, hint = _split_hint(match["rest"])
    hint = hint.strip().rstrip(". ")
    if not hint:
        return message
    location = _last_location(error)
    text, where = (error[:location.start()], error[location.start() + len(" at "):]) if location else (error, "")
    source = "Python" if match["type"] in PYTHON_ERRORS else "torch"
    return (f"{match['who']} raised an error: {hint}. {source} said ({match['type']}): "
            f"{_first_sentence(text.strip())}" + (f" (at {where.strip()})" if where.strip() else ""))
