"""The class files of a batch: ``gradebook.csv``, ``gradebook-canvas.csv`` and ``summary.html``.

The class is built by hand from records as the batch writes them: full marks, partial marks, a
load error, unreadable archives, a time-out, hostile names and messages, non-ASCII names. The
headless-browser test runs only where ``chromium`` is on PATH.
"""

from __future__ import annotations

import csv
import re
import shutil
import statistics
from pathlib import Path
from typing import Any, Optional

import pytest

from conftest import chromium_dom
from grader.registry import EXERCISES
from grader.report.gradebook import (
    CANVAS_COLUMNS,
    CANVAS_NAME,
    GRADEBOOK_NAME,
    canvas_rows,
    write_canvas_csv,
    write_gradebook,
)
from grader.report.summary import build_summary, normalise_message, report_link
from grader.report.summary_html import SUMMARY_NAME, render_summary, write_summary

NAMES = [e.name for e in EXERCISES]
SCRATCH, CLIPPING = NAMES[0], NAMES[1]
HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_MESSAGE = "<img src=x onerror=alert(2)> differs"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# the checks every graded student has: (id, exercise, max points)
CHECKS = (
    (f"{SCRATCH}.params.shapes", SCRATCH, 4.0),
    (f"{SCRATCH}.rnn.outputs", SCRATCH, 6.0),
    (f"{CLIPPING}.norm", CLIPPING, 5.0),
    (f"{CLIPPING}.hidden.scale", CLIPPING, 5.0),
)


def record(
    student: str,
    outcomes: Optional[dict[str, tuple[str, str]]] = None,
    status: str = "graded",
    *,
    score: Any = "auto",
    name: Optional[str] = None,
    email: Optional[str] = None,
    lms_id: Optional[str] = None,
    message: str = "",
    seconds: float = 1.0,
    source: Optional[str] = None,
    report: Optional[str] = "report.html",
) -> dict:
    """A batch record; ``outcomes`` maps a check id to ``(status, message)``, the rest pass."""
    record = {
        "format": 1, "student": student, "name": name, "email": email, "lms_id": lms_id,
        "source": source or f"{student}.zip", "status": status, "message": message,
        "score": None, "points": None, "max_points": None, "exercises": {}, "checks": [],
        "seconds": seconds, "fingerprint": "0" * 64, "graded_at": "2026-12-02T11:00:00Z", "report": None,
    }
    if outcomes is None:  # nothing was graded
        return record
    checks, exercises = [], {}
    for check_id, exercise, most in CHECKS:
        check_status, check_message = outcomes.get(check_id, ("passed", ""))
        points = most if check_status == "passed" else 0.0
        checks.append({"id": check_id, "exercise": exercise, "title": f"title of {check_id}", "status": check_status,
                       "points": points, "max_points": most, "message": check_message, "hidden": "hidden" in check_id})
        entry = exercises.setdefault(exercise, {"title": exercise, "points": 0.0, "max_points": 0.0})
        entry["points"] += points
        entry["max_points"] += most
    points = sum(c["points"] for c in checks)
    total = sum(c["max_points"] for c in checks)
    record.update(checks=checks, exercises=exercises, points=points, max_points=total, report=report,
                  score=100.0 * points / total if score == "auto" else score)
    return record


def make_class() -> list[dict]:
    shapes, outputs, norm, hidden = (c[0] for c in CHECKS)
    todo = ("not_implemented", "get_params raises NotImplementedError")
    import_error = ("error", "could not import rnn_scratch.py")
    return [
        record("alice", {}, name="Alice Liddell", email="alice@example.org", lms_id="1001", seconds=3.2),
        record("bob", {outputs: ("failed", "outputs differ at t=3 by 0.25")}, name="Bob", lms_id="1002",
               seconds=4.0, score=70.00000001),
        record("carol", {outputs: ("failed", "outputs differ at t=5 by 1.5e-3"),
                         norm: ("error", "RuntimeError: shape (2, 3) vs (3, 2)")}, email="carol@example.org",
               seconds=12.5),
        record("dave", {outputs: ("failed", "outputs differ at t=12 by 7"), shapes: todo}, seconds=2.0),
        record("erin", {outputs: ("failed", "outputs differ at t=1 by 2")}, report=None, seconds=2.1),
        record("frank", {c[0]: import_error for c in CHECKS}, status="load-error",
               message="rnn_scratch.py: SyntaxError: invalid syntax (line 3)", seconds=0.8),
        record("grace", None, status="bad-archive", message="grace.zip is not a zip archive", seconds=0.1),
        record("mallory", {outputs: ("failed", HOSTILE_MESSAGE)}, name=HOSTILE_NAME, seconds=7.0),
        record("oscar", None, status="unsafe-archive", name="+ceo", email="@home",
               message="=HYPERLINK(\"http://x\") escapes the archive", source="-rf.zip", seconds=0.2),
        record("peggy", {outputs: ("failed", "x"), norm: ("failed", "y"), hidden: ("failed", "z")},
               score=10.0, seconds=1.5),
        record("trent", None, status="timed-out", message="ran out of time", seconds=300.0),
        record("zoë", {}, name="Zoë Ångström-Łukasiewicz", lms_id="1012", email="zoe@example.org", seconds=9.0),
    ]


@pytest.fixture(scope="module")
def klass() -> list[dict]:
    return make_class()


def read_csv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------
# gradebook.csv
# --------------------------------------------------------------------------


def test_gradebook_columns_and_values(klass, tmp_path):
    path = write_gradebook(tmp_path / "results", list(reversed(klass)), NAMES)
    assert path == tmp_path / "results" / GRADEBOOK_NAME
    rows = read_csv(path)
    header = rows[0]
    assert header[: len(NAMES) + 3] == ["student", "score", *NAMES, "status"]
    assert {"name", "email", "message"} <= set(header)
    table = {row[0]: dict(zip(header, row)) for row in rows[1:]}
    assert [row[0] for row in rows[1:]] == sorted(r["student"] for r in klass)

    for r in klass:
        row = table[r["student"]]
        assert row["status"] == r["status"]
        if r["score"] is None:
            assert row["score"] == "" and all(row[name] == "" for name in NAMES)
            continue
        assert float(row["score"]) == pytest.approx(r["score"], abs=0.005)
        for name in NAMES:
            expected = r["exercises"].get(name)
            if expected is None:
                assert row[name] == ""
            else:
                assert float(row[name]) == pytest.approx(expected["points"], abs=0.005)
    # rounded, no float noise
    assert table["bob"]["score"] == "70"
    assert table["carol"]["score"] == "45" and table["carol"][SCRATCH] == "4"
    assert table["zoë"]["name"] == "Zoë Ångström-Łukasiewicz"
    assert table["frank"]["score"] == "0" and table["frank"]["status"] == "load-error"


def test_gradebook_guards_formulas(klass, tmp_path):
    rows = read_csv(write_gradebook(tmp_path, klass, NAMES))
    header = rows[0]
    oscar = dict(zip(header, next(row for row in rows if row[0] == "oscar")))
    assert oscar["name"] == "'+ceo" and oscar["email"] == "'@home" and oscar["source"] == "'-rf.zip"
    assert oscar["message"].startswith("'=HYPERLINK(")
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS) or is_number(cell), cell


def test_gradebook_guard_sees_leading_whitespace(tmp_path):
    klass = [record("a", None, status="empty", message="\t=1+1"), record("b", None, status="empty", message="\r@x")]
    rows = read_csv(write_gradebook(tmp_path, klass, NAMES))
    messages = [row[rows[0].index("message")] for row in rows[1:]]
    assert all(m.startswith("'") for m in messages), messages


# --------------------------------------------------------------------------
# gradebook-canvas.csv
# --------------------------------------------------------------------------


def test_canvas_csv(klass, tmp_path):
    path = write_canvas_csv(tmp_path, klass, points_possible=20)
    assert path.name == CANVAS_NAME
    rows = read_csv(path)
    assert rows[0] == [*CANVAS_COLUMNS, "RNN exercises"]
    assert rows[1][0].strip() == "Points Possible"
    assert rows[1][1:5] == ["", "", "", ""] and float(rows[1][5]) == 20
    students = rows[2:]
    assert len(students) == len(klass)
    for row, r in zip(students, sorted(klass, key=lambda r: r["student"])):
        student, canvas_id, sis_user, sis_login, section, grade = row
        assert student.removeprefix("'") == (r["name"] or r["student"])
        assert canvas_id == (r["lms_id"] or "")
        assert sis_user == "" and section == ""
        assert sis_login.lstrip("'") == (r["email"] or "")
        if r["score"] is not None:  # graded, also when a file failed to import (that costs its checks)
            assert float(grade) == pytest.approx(r["score"] * 20 / 100, abs=0.005)
        else:
            assert grade == "", r["student"]  # an empty cell keeps the grade Canvas has
    assert ["'+ceo", "", "", "'@home", "", ""] in students
    assert ["Alice Liddell", "1001", "", "alice@example.org", "", "20"] in students


def test_canvas_existing_assignment_and_bad_settings(klass):
    assert canvas_rows(klass, "RNN exercises (4242)")[0][-1] == "RNN exercises (4242)"
    with pytest.raises(ValueError, match="assignment name"):
        canvas_rows(klass, "  ")
    for bad in (0, -5, float("nan"), "100"):
        with pytest.raises(ValueError, match="points possible"):
            canvas_rows(klass, points_possible=bad)


def test_canvas_keeps_grade_of_student_skipped_as_unchanged():
    kept = record("ann", {})
    kept.update(status="skipped-unchanged", graded_status="graded")
    rows = canvas_rows([kept])
    assert float(rows[2][-1]) == 100


# --------------------------------------------------------------------------
# The class summary's data
# --------------------------------------------------------------------------


def graded_scores(klass: list[dict]) -> list[float]:
    return [r["score"] for r in klass if r["score"] is not None]


def test_summary_scores_and_histogram(klass):
    summary = build_summary(klass, NAMES)
    scores = graded_scores(klass)
    assert summary.students == len(klass)
    assert summary.scores.count == len(scores)
    assert summary.scores.mean == pytest.approx(statistics.mean(scores))
    assert summary.scores.median == pytest.approx(statistics.median(scores))
    assert (summary.scores.minimum, summary.scores.maximum) == (min(scores), max(scores))
    assert [(b.low, b.high) for b in summary.histogram] == [(10 * i, 10 * i + 10) for i in range(10)]
    expected = [sum(1 for s in scores if 10 * i <= s < 10 * i + 10 or (i == 9 and s == 100)) for i in range(10)]
    assert [b.count for b in summary.histogram] == expected
    assert sum(expected) == len(scores) and expected[9] >= 2 and expected[1] == 1  # 100s and the 10
    counts = dict(summary.status_counts)
    assert counts == {s: sum(1 for r in klass if r["status"] == s) for s in {r["status"] for r in klass}}
    assert summary.status_counts[0][0] == "graded"


def test_summary_exercises(klass):
    summary = build_summary(klass, NAMES)
    assert [e.name for e in summary.exercises] == NAMES
    assert summary.exercises[0].title == EXERCISES[0].title
    graded = [r for r in klass if r["score"] is not None]
    scratch = summary.exercises[0]
    points = [r["exercises"][SCRATCH]["points"] for r in graded]
    assert scratch.graded == len(graded)
    assert scratch.mean_points == pytest.approx(statistics.mean(points))
    assert scratch.max_points == 10
    assert scratch.full_marks == sum(1 for p in points if p == 10)
    assert summary.exercises[2].graded == 0 and summary.exercises[2].mean_points is None


def test_summary_pass_rates(klass):
    summary = build_summary(klass, NAMES)
    assert [c.id for c in summary.checks] == [c[0] for c in CHECKS]
    for check in summary.checks:
        statuses = [c["status"] for r in klass for c in r["checks"] if c["id"] == check.id]
        assert check.ran == len(statuses)
        assert check.passed == statuses.count("passed")
        assert check.failed == statuses.count("failed")
        assert check.errors == statuses.count("error")
        assert check.not_implemented == statuses.count("not_implemented")
        assert check.pass_rate == pytest.approx(statuses.count("passed") / len(statuses))
    outputs = summary.checks[1]
    assert outputs.failed == 6 and outputs.errors == 1  # frank's import error counts as an error


def test_summary_groups_failure_messages(klass):
    summary = build_summary(klass, NAMES)
    outputs = next(f for f in summary.failures if f.check == CHECKS[1][0])
    top = outputs.groups[0]
    assert top.pattern == "outputs differ at t=# by #"
    assert top.count == 4  # bob, carol, dave and erin: t and the difference differ
    assert [s.student for s in top.students] == ["bob", "carol", "dave"]
    assert top.students[0].report == "bob/report.html"
    failing = [c for r in klass for c in r["checks"] if c["id"] == outputs.check and c["status"] != "passed"]
    assert outputs.count == len(failing) == sum(g.count for g in outputs.groups)
    assert outputs.other_groups == 0
    assert [g.count for g in outputs.groups] == sorted((g.count for g in outputs.groups), reverse=True)
    # checks with the most failures first
    assert [f.count for f in summary.failures] == sorted((f.count for f in summary.failures), reverse=True)
    erin = build_summary([r for r in klass if r["student"] == "erin"], NAMES).failures[0].groups[0]
    assert erin.students[0].report is None  # no report, no link


def test_normalise_message():
    assert normalise_message("differs at t=3") == normalise_message("differs at t=5") == "differs at t=#"
    assert normalise_message("max error 1.5e-3 > -2") == "max error # > #"
    assert normalise_message("shape (2, 3) vs (3, 2).") == "shape (#, #) vs (#, #)."
    assert normalise_message("W_hh2 and layer1 differ") == "W_hh2 and layer1 differ"
    assert normalise_message("") == "(no message)"


def test_summary_slowest(klass):
    summary = build_summary(klass, NAMES)
    seconds = [row.seconds for row in summary.slowest]
    assert len(seconds) == 10
    assert seconds == sorted((r["seconds"] for r in klass), reverse=True)[:10]
    assert summary.slowest[0].student == "trent"


def test_report_links_stay_relative():
    assert report_link({"student": "a b#", "report": "report.html"}) == "a%20b%23/report.html"
    assert report_link({"student": "javascript:alert(1)", "report": "report.html"}).startswith("javascript%3A")
    for student, report in ((".", "report.html"), ("..", "report.html"), ("a", "../../etc/passwd"),
                            ("a", "/etc/passwd"), ("a", None), ("a", 3), (None, "report.html")):
        assert report_link({"student": student, "report": report}) is None


def test_summary_ignores_malformed_records():
    junk = ["not a record", {"student": "x", "status": "graded", "score": "high", "checks": "none", "exercises": []}]
    summary = build_summary(junk, NAMES)
    assert summary.students == 1 and summary.scores is None and summary.checks == ()


# --------------------------------------------------------------------------
# summary.html
# --------------------------------------------------------------------------


def test_summary_html_escapes_hostile_text(klass):
    html = render_summary(build_summary(klass, NAMES), title="Class <b>RNN</b>")
    assert "<script" not in html.lower() and "<img" not in html.lower() and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "Class &lt;b&gt;RNN&lt;/b&gt;" in html
    assert "Zoë Ångström-Łukasiewicz" in html


def test_summary_html_is_self_contained(klass, tmp_path):
    path = write_summary(tmp_path / "out", build_summary(klass, NAMES))
    assert path == tmp_path / "out" / SUMMARY_NAME
    html = path.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"https?://", html.replace("http://x", ""))  # oscar's message, as text
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    # a picture: the histogram's ten bars and one pass-rate bar per check
    assert len(re.findall(r'<rect class="hist-bar"', html)) == 10
    assert len(re.findall(r'<g class="check-row">', html)) == len(CHECKS)
    assert 'href="alice/report.html"' in html and 'href="zo%C3%AB/report.html"' in html
    assert 'href="erin/' not in html


def test_summary_html_of_empty_class(tmp_path):
    html = write_summary(tmp_path, build_summary([], NAMES)).read_text(encoding="utf-8")
    assert "Nothing was graded" in html and "<svg" not in html


def test_summary_html_when_nobody_was_graded(klass):
    ungraded = [r for r in klass if r["score"] is None]
    html = render_summary(build_summary(ungraded, NAMES))
    assert "No submission was graded" in html and 'class="hist-bar"' not in html
    assert all(r["student"] in html for r in ungraded)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not on PATH")
def test_summary_in_headless_browser(klass, tmp_path):
    summary = build_summary(klass, NAMES)
    path = write_summary(tmp_path / "out", summary)
    dom = chromium_dom(path, tmp_path)
    histogram = re.search(r'<svg class="chart histogram".*?</svg>', dom, re.S)
    assert histogram, "no histogram in the rendered page"
    heights = [float(h) for h in re.findall(r'<rect class="hist-bar"[^>]*\bheight="([0-9.]+)"', histogram.group())]
    assert len(heights) == 10
    # bars are as tall as their counts: the tallest bin has the tallest bar, empty bins none
    counts = [b.count for b in summary.histogram]
    assert heights.index(max(heights)) == counts.index(max(counts))
    assert all((h == 0) == (n == 0) for h, n in zip(heights, counts))
    rates = re.search(r'<svg class="chart pass-rates".*?</svg>', dom, re.S)
    assert rates, "no pass-rate chart in the rendered page"
    for check in summary.checks:
        assert check.id in rates.group()
        assert f"{round(100 * check.pass_rate, 1):g}%" in rates.group()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "<script" not in dom.lower()
