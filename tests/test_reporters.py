"""Tests of the built-in reporters: terminal summary, HTML report, Gradescope results.

The HTML of a fixed report is compared with ``tests/gold/report.html``. After an
intended change to the templates or to :mod:`grader.report.html`, regenerate it
and review the diff::

    GRADER_UPDATE_GOLD=1 python -m pytest tests/test_reporters.py

The headless-browser test runs only where ``chromium`` is on PATH.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pluggy
import pytest

import grader
from grader import hookspecs
from grader.report import gradescope, terminal
from grader.report import html as html_report
from grader.config import RunConfig
from grader.report.html import line_chart, nice_ticks, render_html, templates_dir, write_html
from grader.report.formatting import fmt_points, one_line
from grader.results import (
    ERROR,
    FAILED,
    NOT_IMPLEMENTED,
    PASSED,
    SKIPPED,
    CheckResult,
    ExerciseResult,
    FileProblem,
    GradingReport,
)
from grader.report.terminal import TerminalReporter, format_summary

GOLD = Path(__file__).parent / "gold" / "report.html"
SCRIPT = "<script>alert(1)</script>"
JINJA = "{{ 7*7 }}"


def check(exercise: str, n: int, status: str, points: float, max_points: float, **kw) -> CheckResult:
    kw.setdefault("title", f"check {n}")
    kw.setdefault("message", "")
    kw.setdefault("hooks", (exercise,))
    return CheckResult(
        check_id=f"{exercise}.{n}",
        exercise=exercise,
        max_points=max_points,
        points=points,
        status=status,
        **kw,
    )


def make_report() -> GradingReport:
    """Two exercises, every status, a file problem, hostile text and a chart; fixed version and times."""
    scratch = (
        check("rnn_scratch", 1, PASSED, 2, 2, title="get_params shapes", hooks=("get_params",), seconds=0.01),
        check(
            "rnn_scratch",
            2,
            FAILED,
            0,
            3,
            title="rnn outputs",
            hooks=("rnn", "get_params"),
            message=f"outputs differ {SCRIPT} {JINJA}",
            details="max abs difference 0.25 at [3, 1]\nexpected shape (35, 28)",
            output=f"debug: {SCRIPT}\n\x1b[31mred\x1b[0m",
            seconds=0.42,
            figures={"max_abs_diff": 0.25, "note": SCRIPT},
        ),
        check(
            "rnn_scratch",
            3,
            NOT_IMPLEMENTED,
            0,
            2,
            title="init_rnn_state",
            hooks=("init_rnn_state",),
            message="init_rnn_state is not implemented",
        ),
    )
    training = (
        check(
            "train_epoch",
            1,
            ERROR,
            0,
            2.5,
            title="one epoch runs",
            hooks=("train_epoch",),
            message="ZeroDivisionError: division by zero " + "x" * 400,
            details='Traceback (most recent call last):\n  File "student/train.py", line 7\nZeroDivisionError',
        ),
        check(
            "train_epoch",
            2,
            SKIPPED,
            0,
            1,
            title="perplexity falls",
            hooks=("train_epoch", "grad_clipping"),
            message="skipped: one epoch runs failed",
        ),
        check(
            "train_epoch",
            3,
            PASSED,
            1.5,
            1.5,
            title="hidden timing",
            hooks=("train_epoch",),
            message="fast enough",
            hidden=True,
        ),
    )
    return GradingReport(
        submission="submissions/alice",
        points=3.5,
        max_points=12,
        exercises=(
            ExerciseResult("rnn_scratch", "RNN from scratch", 2, 7, scratch, figures={"parameters": 1628}),
            ExerciseResult(
                "train_epoch",
                "Training one epoch",
                1.5,
                5,
                training,
                figures={
                    "perplexity": {
                        "series": [
                            {"label": "yours " + SCRIPT, "x": [1, 2, 3, 4], "y": [12.0, 8.5, 6.25, 5.0]},
                            {"label": "reference", "x": [1, 2, 3, 4], "y": [11.0, 7.0, float("nan"), 4.0]},
                        ],
                        "xlabel": "epoch",
                        "ylabel": "perplexity",
                    },
                    "tokens/s": 51234.5,
                },
            ),
        ),
        problems=(
            FileProblem("student/extra.py", f"unknown hook name 'rnn_forward' {SCRIPT}"),
            FileProblem("student/notes.py", "no hooks found", severity="warning"),
        ),
        implemented={"rnn": "student/rnn.py", "get_params": "student/rnn.py"},
        notices=("Trained on the generated corpus.",),
        seconds=12.5,
        corpus={"name": "markov", "tokens": 20000},
        grader_version="0.0.0-test",
    )


@pytest.fixture
def report() -> GradingReport:
    return make_report()


# --------------------------------------------------------------------------
# shared formatting
# --------------------------------------------------------------------------


def test_fmt_points():
    assert [fmt_points(v) for v in (7.5, 10, 0, 1 / 3, -0.0, float("nan"), "x")] == [
        "7.5",
        "10",
        "0",
        "0.33",
        "0",
        "?",
        "?",
    ]


def test_one_line_trims_and_escapes_controls():
    text = one_line("a\n  b\x1b[31m" + "y" * 300)
    assert len(text) == 160 and text.endswith("…")
    assert text.startswith("a b\\x1b[31m")


# --------------------------------------------------------------------------
# terminal
# --------------------------------------------------------------------------


def test_terminal_summary(report, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = format_summary(report, RunConfig())
    assert text.splitlines()[0] == "rnn-grader 0.0.0-test: grading submissions/alice"
    assert "student/extra.py: unknown hook name 'rnn_forward'" in text
    assert "rnn_scratch  2/7  RNN from scratch" in text
    assert re.search(r"FAIL +0/3 +rnn outputs: outputs differ <script>alert\(1\)</script>", text)
    assert re.search(r"TODO +0/2 +init_rnn_state: init_rnn_state is not implemented", text)
    assert re.search(r"ERROR +0/2.5 +one epoch runs: ZeroDivisionError", text)
    assert re.search(r"SKIP +0/1 +perplexity falls: skipped", text)
    assert "Score: 3.5/12 (29.2%)" in text
    assert "Note: Trained on the generated corpus." in text
    # passing checks and details only in verbose mode; no colour unless asked
    assert "get_params shapes" not in text
    assert "max abs difference" not in text
    assert "\x1b[" not in text
    # a failing check's whole message is shown, wrapped at the terminal's width
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "ZeroDivisionError" in line)
    error = next(c for c in report.all_checks() if "ZeroDivisionError" in c.message)
    shown = "".join(line.strip() for line in lines[start:start + 12])
    assert "".join(error.message.split()) in shown.replace(" ", "") and "…" not in shown
    assert all(len(line) <= 100 for line in lines[start:start + 12])


def test_terminal_wraps_at_the_terminal_width(report, monkeypatch):
    monkeypatch.setenv("COLUMNS", "70")
    lines = format_summary(report, RunConfig()).splitlines()
    start = next(i for i, line in enumerate(lines) if "ZeroDivisionError" in line)
    assert len(lines[start]) <= 70 and lines[start + 1].startswith(" " * 10)


def test_terminal_verbose_and_color(report):
    text = format_summary(report, RunConfig(verbose=True, color=True))
    assert "get_params shapes" in text
    assert "hidden timing [hidden]: fast enough" in text
    assert "| max abs difference 0.25 at [3, 1]" in text
    # the student's own escape codes are shown, not interpreted
    assert "\\x1b[31mred" in text
    assert "\x1b[31mFAIL" in text
    assert "\x1b[1mScore: 3.5/12\x1b[0m" in text


def test_terminal_reporter_as_plugin(report, tmp_path):
    """Registered through pluggy, runs after the writers and names the files they wrote."""
    pm = pluggy.PluginManager(grader.PROJECT)
    pm.add_hookspecs(hookspecs)
    stream = io.StringIO()
    pm.register(TerminalReporter(stream))
    pm.register(html_report)
    pm.register(gradescope)
    pm.hook.grader_report(report=report, config=RunConfig(out_dir=tmp_path / "out"))
    text = stream.getvalue()
    assert "Score: 3.5/12" in text
    assert f"HTML report: {tmp_path / 'out' / 'report.html'}" in text
    assert f"Gradescope results: {tmp_path / 'out' / 'results.json'}" in text


def test_terminal_module_plugin_writes_stdout(report, capsys):
    terminal.grader_report(report=report, config=RunConfig())
    assert "Score: 3.5/12" in capsys.readouterr().out


def test_terminal_narrow_encoding(report):
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    TerminalReporter(stream).grader_report(report, RunConfig())
    assert b"Score: 3.5/12" in raw.getvalue()


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------


def test_templates_found():
    folder = templates_dir()
    assert {"base.html", "report.html"} <= {p.name for p in folder.iterdir()}


def test_templates_never_mark_data_safe():
    for path in templates_dir().glob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\|\s*safe\b", text), path
        assert "autoescape false" not in text, path


def test_html_escapes_untrusted_text(report):
    html = render_html(report)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # data is never evaluated as a template
    assert JINJA in html
    assert ">49<" not in html and " 49 " not in html
    assert "\x1b" not in html


def test_html_is_self_contained(report):
    html = render_html(report)
    assert not re.search(r"https?://", html)
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html


def test_html_content(report):
    html = render_html(report)
    assert "Score: 3.5 / 12" in html and "29.2%" in html
    for label in ("PASS", "FAIL", "ERROR", "TODO", "SKIP"):
        assert f">{label}</span>" in html
    assert "student/extra.py" in html and "WARNING" in html
    assert html.count("<details") >= 4 and "<pre>" in html
    assert "<svg" in html and "<polyline" in html
    assert 'stroke-dasharray="7 4"' in html  # second series differs without colour
    assert "tokens/s" in html and "51234.5" in html
    assert "yours &lt;script&gt;" in html


def test_write_html_creates_folder(report, tmp_path):
    path = write_html(report, tmp_path / "a" / "b")
    assert path == tmp_path / "a" / "b" / "report.html"
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_html_plugin_needs_out_dir(report, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    html_report.grader_report(report=report, config=RunConfig())
    gradescope.grader_report(report=report, config=RunConfig())
    assert list(tmp_path.iterdir()) == []


def test_nice_ticks():
    assert nice_ticks(0.3, 9.6) == (0.0, 10.0, 2.0)
    start, stop, step = nice_ticks(5, 5)
    assert start <= 5 <= stop and step > 0


def test_line_chart_tolerates_bad_data():
    chart = line_chart(
        [
            {"label": "a", "y": [1, None, "x", float("inf"), 2, 3]},
            "not a series",
            {"label": "b", "x": [0], "y": [float("nan")]},
        ]
    )
    assert not chart["empty"]
    assert len(chart["lines"]) == 2
    assert chart["lines"][0]["dots"] and chart["lines"][0]["polylines"]
    assert chart["lines"][1]["polylines"] == [] and chart["lines"][1]["dots"] == []
    assert line_chart([])["empty"] and line_chart("junk")["empty"]


def test_html_gold(report):
    html = render_html(report)
    if os.environ.get("GRADER_UPDATE_GOLD") == "1":
        GOLD.parent.mkdir(parents=True, exist_ok=True)
        GOLD.write_text(html, encoding="utf-8")
        return
    assert GOLD.is_file(), "no gold file; run: GRADER_UPDATE_GOLD=1 python -m pytest tests/test_reporters.py"
    expected = GOLD.read_text(encoding="utf-8")
    if html != expected:
        import difflib

        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), html.splitlines(True), "gold/report.html", "rendered", n=2
            )
        )
        pytest.fail(
            "HTML differs from tests/gold/report.html; if intended, run "
            "GRADER_UPDATE_GOLD=1 python -m pytest tests/test_reporters.py\n" + diff[:6000]
        )


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not on PATH")
def test_html_in_headless_browser(report, tmp_path):
    path = write_html(report, tmp_path / "out")
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "Score: 3.5 / 12" in dom
    # the serialised DOM still holds the hostile text as text, not as an element
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script" not in dom.lower()


# --------------------------------------------------------------------------
# Gradescope
# --------------------------------------------------------------------------


#: Gradescope's results.json specification: the keys a file and each of its tests may have
GRADESCOPE_KEYS = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
                   "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
GRADESCOPE_TEST_KEYS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
                        "tags", "visibility", "extra_data"}
STATUSES = {PASSED, FAILED, ERROR, NOT_IMPLEMENTED, SKIPPED, "integrity"}


def _assert_gradescope_shape(data: dict, stdout_visibility: str = "visible") -> None:
    assert set(data) <= GRADESCOPE_KEYS
    assert set(data) >= {"score", "execution_time", "output", "stdout_visibility", "tests"}
    for key in ("score", "execution_time"):
        assert isinstance(data[key], (int, float)) and not isinstance(data[key], bool)
    assert isinstance(data["output"], str)
    assert data["stdout_visibility"] == stdout_visibility
    for test in data["tests"]:
        assert set(test) == {"name", "number", "score", "max_score", "status", "output", "tags", "visibility",
                             "extra_data"}
        assert set(test) <= GRADESCOPE_TEST_KEYS
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert re.fullmatch(r"\d+\.\d+", test["number"])
        assert isinstance(test["score"], (int, float)) and isinstance(test["max_score"], (int, float))
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in ("passed", "failed")
        assert test["extra_data"]["status"] in STATUSES
        assert test["status"] == ("passed" if test["extra_data"]["status"] == PASSED else "failed")
        assert test["visibility"] in ("visible", "hidden", "after_due_date", "after_published")
        assert isinstance(test["tags"], list) and all(isinstance(t, str) for t in test["tags"])


def test_gradescope_results(report, tmp_path):
    path = gradescope.write_results_json(report, tmp_path / "out")
    assert path.name == "results.json"
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    _assert_gradescope_shape(data, stdout_visibility="hidden")  # the report has a hidden check
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    assert data["score"] == 3.5 and data["execution_time"] == 12.5
    assert sum(t["score"] for t in data["tests"]) == pytest.approx(data["score"])
    assert sum(t["max_score"] for t in data["tests"]) == pytest.approx(report.max_points)
    assert len(data["tests"]) == len(report.all_checks())

    tests = {t["number"]: t for t in data["tests"]}
    assert tests["1.1"]["name"] == "rnn_scratch: get_params shapes"
    assert tests["1.1"]["status"] == "passed"
    assert tests["1.2"]["status"] == "failed"
    assert tests["1.2"]["tags"] == ["rnn_scratch", "rnn", "get_params"]
    assert SCRIPT in tests["1.2"]["output"] and "max abs difference" in tests["1.2"]["output"]
    assert "debug:" in tests["1.2"]["output"]
    assert all(tests[n]["status"] == "failed" for n in ("1.3", "2.1", "2.2"))
    assert [tests[n]["extra_data"]["status"] for n in ("1.3", "2.1", "2.2")] == [NOT_IMPLEMENTED, ERROR, SKIPPED]
    assert tests["2.3"]["visibility"] == "after_published"
    assert tests["2.2"]["visibility"] == "visible"
    # the top-level output counts the visible checks only: 2/7 + 0/3.5, not the total of 12 with the hidden check
    assert "student/extra.py" in data["output"] and "Score on the checks shown: 2/10.5" in data["output"]
    assert "/12" not in data["output"] and "hidden timing" not in data["output"]
    assert "hidden until" in data["output"]


def test_gradescope_survives_non_finite_numbers(report):
    broken = GradingReport(
        submission="s", points=float("nan"), max_points=10, exercises=(), seconds=float("inf")
    )
    data = gradescope.to_gradescope(broken)
    json.dumps(data, allow_nan=False)
    assert data["score"] == 0 and data["tests"] == []


def test_gradescope_caps_long_output():
    noisy = check("predict", 1, FAILED, 0, 1, output="spam\n" * 100_000)
    report = GradingReport("s", 0, 1, (ExerciseResult("predict", "Predict", 0, 1, (noisy,)),))
    output = gradescope.to_gradescope(report)["tests"][0]["output"]
    assert len(output) < 21_000 and output.endswith("more characters not shown)")
