"""The class's gradebooks: ``gradebook.csv`` for the instructor, ``gradebook-canvas.csv`` for Canvas.

Both are rebuilt from the students' batch records (plain dicts, see ``record.json``). Cells that
come from a submission or a file name are guarded against spreadsheet formulas: a text starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``. Numbers are
written as numbers, rounded to two decimals.

Importing ``gradebook-canvas.csv`` into Canvas
----------------------------------------------
The file follows the layout of Canvas's own gradebook export: the columns ``Student``, ``ID``,
``SIS User ID``, ``SIS Login ID`` and ``Section``, then one column for the assignment, then a
``Points Possible`` row. Each student's row holds their name (or student id when the roster gave
none) under ``Student``, their Canvas user id (the roster's ``lms_id``) under ``ID`` and their
e-mail address under ``SIS Login ID``; ``SIS User ID`` and ``Section`` stay empty. Canvas matches
rows to students by these columns; the Canvas user id is the surest, so give the roster's ``lms_id``.

1. Choose where the grades go:

   * into an existing assignment: export the Canvas gradebook once (Grades > Export) and copy
     that assignment's column header exactly, including the number in parentheses, e.g.
     ``RNN exercises (123456)``; pass it as the assignment name, or rename the last column of
     ``gradebook-canvas.csv`` to it;
   * into a new assignment: keep the header as written (no number in parentheses); Canvas
     creates an assignment of that name worth the ``Points Possible`` row's points.

2. In Canvas: Grades > Import, choose ``gradebook-canvas.csv``, check the changes Canvas lists,
   and confirm.

The score is written in points out of ``points_possible`` (100 unless chosen otherwise; use the
assignment's points in Canvas). A student who was not graded (an empty or unreadable submission,
a duplicate id, ...) gets an empty cell, and an empty cell leaves the grade in Canvas as it
was; such students are listed with their status in ``gradebook.csv`` and ``summary.html``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from grader.report import write_text_atomic
from grader.report.formatting import fmt_points, one_line

GRADEBOOK_NAME = "gradebook.csv"
CANVAS_NAME = "gradebook-canvas.csv"

#: the record status of a student whose submission was graded
GRADED = "graded"
#: Canvas's identity columns, in the order its own export writes them
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
#: the first cell of Canvas's points-possible row, as its export writes it
CANVAS_POINTS_ROW = "    Points Possible"

# a spreadsheet reads a cell starting with one of these as a formula
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_TEXT_CHARS = 300
_MESSAGE_CHARS = 500


def finite_number(value: Any) -> Optional[float]:
    """``value`` as a float when it is a finite number (not a bool, not a string), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def number_cell(value: Any) -> str:
    """A number rounded to two decimals without trailing zeros (``87.5``, ``100``); empty when none."""
    number = finite_number(value)
    return "" if number is None else fmt_points(number)


def text_cell(value: Any, limit: int = _TEXT_CHARS) -> str:
    """Text on one line that a spreadsheet shows as text, never runs as a formula.

    :param value: any value from a record; ``None`` is an empty cell.
    :param limit: longest text kept.
    """
    text = "" if value is None else str(value)
    # the guard looks at the raw text too: one_line strips a leading tab or carriage return
    risky = text.startswith(_FORMULA_STARTS)
    text = one_line(text, limit)
    return "'" + text if risky or text.startswith(_FORMULA_STARTS) else text


def is_graded(record: Mapping[str, Any]) -> bool:
    """Whether the record holds a grade: the submission was graded, even if a file failed to import or a
    check ran out of time (those cost their checks' points); not when nothing could be read."""
    return finite_number(record.get("score")) is not None


def student_records(records: Iterable[Any]) -> list[Mapping[str, Any]]:
    """The records that are mappings, sorted by student id."""
    return sorted((r for r in records if isinstance(r, Mapping)), key=lambda r: str(r.get("student") or ""))


def exercise_name(exercise: Any) -> str:
    """An exercise's name, given the name or an object with ``.name`` (a registry ``Exercise``)."""
    return str(getattr(exercise, "name", exercise))


def exercise_points(record: Mapping[str, Any], name: str) -> Any:
    """The points the record holds for exercise ``name``, or ``None``."""
    exercises = record.get("exercises")
    entry = exercises.get(name) if isinstance(exercises, Mapping) else None
    return entry.get("points") if isinstance(entry, Mapping) else None


def _csv_text(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(rows)
    return buffer.getvalue()


def gradebook_rows(records: Sequence[Mapping[str, Any]], exercises: Sequence[Any]) -> list[list[str]]:
    """``gradebook.csv`` as rows of cells, the header first."""
    names = [exercise_name(e) for e in exercises]
    rows = [["student", "score", *names, "status", "name", "email", "lms_id", "source", "message"]]
    for record in student_records(records):
        rows.append(
            [
                text_cell(record.get("student")),
                number_cell(record.get("score")),
                *(number_cell(exercise_points(record, name)) for name in names),
                text_cell(record.get("status")),
                text_cell(record.get("name")),
                text_cell(record.get("email")),
                text_cell(record.get("lms_id")),
                text_cell(record.get("source")),
                text_cell(record.get("message"), _MESSAGE_CHARS),
            ]
        )
    return rows


def write_gradebook(out_dir: Path, records: Sequence[Mapping[str, Any]], exercises: Sequence[Any]) -> Path:
    """Write ``out_dir/gradebook.csv``: one row per student, sorted by student id.

    Columns: ``student``, ``score`` (percent), one per exercise (its points; empty when the
    record has none), ``status``, then ``name``, ``email``, ``lms_id``, ``source`` and ``message``.

    :param out_dir: the batch's results folder (created when missing).
    :param records: the students' records.
    :param exercises: exercise names (or registry exercises) in lesson order.
    :returns: the path written; the file is whole or absent.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out / GRADEBOOK_NAME, _csv_text(gradebook_rows(records, exercises)))


def canvas_rows(
    records: Sequence[Mapping[str, Any]], assignment: str = "RNN exercises", points_possible: float = 100.0
) -> list[list[str]]:
    """``gradebook-canvas.csv`` as rows of cells: the header, the points-possible row, one row per student.

    :raises ValueError: when ``assignment`` is blank or ``points_possible`` is not a positive number.
    """
    header = one_line(assignment, _TEXT_CHARS)
    if not header:
        raise ValueError("the Canvas assignment name is empty: give the assignment's name as Canvas shows it")
    possible = finite_number(points_possible)
    if possible is None or possible <= 0:
        raise ValueError(
            f"the Canvas assignment's points possible must be a positive number, not {points_possible!r}"
        )
    blank_identity = [""] * (len(CANVAS_COLUMNS) - 1)
    rows = [[*CANVAS_COLUMNS, text_cell(header)], [CANVAS_POINTS_ROW, *blank_identity, number_cell(possible)]]
    for record in student_records(records):
        grade = ""
        if is_graded(record):
            score = min(max(float(record["score"]), 0.0), 100.0)
            grade = number_cell(score * possible / 100.0)
        rows.append(
            [
                text_cell(record.get("name") or record.get("student")),
                text_cell(record.get("lms_id")),
                "",
                text_cell(record.get("email")),
                "",
                grade,
            ]
        )
    return rows


def write_canvas_csv(
    out_dir: Path,
    records: Sequence[Mapping[str, Any]],
    assignment: str = "RNN exercises",
    points_possible: float = 100.0,
) -> Path:
    """Write ``out_dir/gradebook-canvas.csv`` in Canvas's gradebook import format (see the module's notes).

    :param out_dir: the batch's results folder (created when missing).
    :param records: the students' records.
    :param assignment: the assignment column's header: the existing assignment's header from a
        Canvas export (``"Name (id)"``), or a new assignment's name.
    :param points_possible: the assignment's points in Canvas; a score of 87.5 % is written as
        ``87.5 * points_possible / 100``.
    :raises ValueError: when ``assignment`` is blank or ``points_possible`` is not a positive number.
    :returns: the path written; the file is whole or absent.
    """
    rows = canvas_rows(records, assignment, points_possible)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out / CANVAS_NAME, _csv_text(rows))
