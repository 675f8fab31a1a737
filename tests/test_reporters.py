"""Tests of the built-in reporters: terminal summary, HTML report, Gradescope results.

The HTML of two fixed reports is compared with ``tests/gold/report.html`` (every
status, hostile text) and ``tests/gold/report-diagnosis.html`` (recognised
mistakes, "same cause as" links, charts). After an intended change to the
templates or to :mod:`grader.report.html`, regenerate both and review the diff::

    GRADER_UPDATE_GOLD=1 python -m pytest -n 0 tests/test_reporters.py

The headless-browser test runs only where ``chromium`` is on PATH.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import pluggy
import pytest

import grader
from conftest import chromium_dom
from grader import hookspecs
from grader.report import gradescope, terminal
from grader.report import html as html_report
from grader.config import RunConfig
from grader.report.html import exact_ticks, line_chart, nice_ticks, render_html, templates_dir, write_html
from grader.figures import perplexity_chart
from grader.report.formatting import fmt_points, hint_first, one_line, split_diagnosis, without_torch_advice
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
GOLD_DIAGNOSIS = Path(__file__).parent / "gold" / "report-diagnosis.html"
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


#: how the catalogue words a recognised mistake (grader.definitions.Misconception.wording)
RELU_WORDING = ("Likely mistake: the hidden state uses ReLU instead of tanh. The book's RNN squashes every new state "
                "with tanh, so each H stays in (-1, 1); ReLU lets it grow without bound. "
                "Fix: H = torch.tanh(X @ W_xh + H @ W_hh + b_h)")
#: a training chart where the student's line is the reference's: both must stay visible
PERPLEXITY = perplexity_chart([20.0, 15.0, 12.5, 11.0], [20.0, 15.0, 12.5, 11.0], 3.5, "training perplexity per epoch")


def make_diagnosed_report() -> GradingReport:
    """A failing rnn as the judge reports it: one check names the mistake, two others share its cause."""
    rnn = (
        check("rnn_scratch", 1, FAILED, 0, 7, title="rnn computes the reference's outputs", hooks=("rnn",),
              message=RELU_WORDING, misconception="rnn_scratch.relu",
              details="What the check saw: outputs differ in 3918 of 3920 entries; largest error 3.68 " + SCRIPT,
              figures={"largest error": 3.68, "hidden values": {
                  "series": [{"label": "yours", "x": [1, 2, 3], "y": [0.5, 2.5, 7.0]},
                             {"label": "reference", "x": [1, 2, 3], "y": [0.4, 0.7, 0.9]}],
                  "title": "largest |H| per time step", "xlabel": "time step", "ylabel": "value"}}),
        check("rnn_scratch", 2, FAILED, 0, 3, title="rnn starts from the state it is given", hooks=("rnn",),
              message="same cause as rnn_scratch.1 (the hidden state uses ReLU instead of tanh)",
              misconception="rnn_scratch.relu", same_cause_as="rnn_scratch.1",
              details="What the check saw: outputs differ in 3916 of 3920 entries"),
        check("rnn_scratch", 3, ERROR, 0, 5, title="gradients through rnn", hooks=("rnn",),
              message="rnn raised RuntimeError: Trying to backward through the graph a second time (or directly "
                      "access saved tensors after they have already been freed). Saved intermediate values of the "
                      "graph are freed when you call .backward() or autograd.grad(). Specify retain_graph=True if "
                      "you need to backward through the graph a second time or if you need to access saved tensors "
                      "after calling backward. at rnn_scratch.py:40 in rnn: H.backward() "
                      "(hint: detach the carried state instead of keeping its graph)"),
    )
    training = (
        check("train_epoch", 1, PASSED, 3, 3, title="perplexity after 4 epochs", hooks=("train_epoch",),
              message="perplexity 11 after 4 epochs (reference 11)", figures={"perplexity": PERPLEXITY}),
    )
    return GradingReport(
        submission="submissions/bob", points=3, max_points=18,
        exercises=(
            ExerciseResult("rnn_scratch", "RNN from scratch", 0, 15, rnn),
            # the engine gathers the checks' charts for the exercise as well
            ExerciseResult("train_epoch", "Training one epoch", 3, 3, training, figures={"perplexity": PERPLEXITY}),
        ),
        seconds=7.25, grader_version="0.0.0-test",
    )


@pytest.fixture
def report() -> GradingReport:
    return make_report()


@pytest.fixture
def diagnosed() -> GradingReport:
    return make_diagnosed_report()


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
    # the reference differs from the student's line without colour: thin and dashed, drawn on top of it
    assert 'class="series reference" stroke="#1f2328" fill="none" stroke-width="1.5"' in html
    assert 'stroke-dasharray="6 4"' in html
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


def test_x_axis_starts_where_the_data_starts():
    # epochs are counted from 1: no tick for an epoch 0 that never was
    assert exact_ticks(1, 8) == (1, 8, [1, 2, 3, 4, 5, 6, 7, 8])
    assert exact_ticks(1, 40)[2] == [1, 10, 20, 30, 40]
    lo, hi, ticks = exact_ticks(0.25, 6.2)
    assert (lo, hi) == (0.25, 6.2) and ticks == [1, 2, 3, 4, 5, 6]
    chart = line_chart(PERPLEXITY["series"], xlabel="epoch")
    assert [t["label"] for t in chart["xticks"]] == ["1", "2", "3", "4"]
    assert chart["xticks"][0]["pos"] == chart["plot"]["left"]  # the first epoch at the axis


def test_reference_line_stays_visible_where_it_coincides():
    chart = line_chart(PERPLEXITY["series"])
    yours, reference, lowest = chart["lines"]
    assert yours["polylines"] == reference["polylines"]  # the same data: the same coordinates
    # the reference is drawn last (on top), thinner than the student's and dashed; the legend keeps the given order
    assert chart["drawn"][-1] is reference and [line["label"] for line in chart["lines"]] == [
        "yours", "reference", "lowest possible"]
    assert float(reference["width"]) < float(yours["width"]) and reference["dash"] and not yours["dash"]
    assert lowest["dash"] and lowest["color"] not in (yours["color"], reference["color"])


def test_perplexity_chart_names_its_axes():
    assert (PERPLEXITY["xlabel"], PERPLEXITY["ylabel"]) == ("epoch", "perplexity")
    assert [s["x"][0] for s in PERPLEXITY["series"]] == [1, 1, 1]
    html = render_html(make_diagnosed_report())
    assert re.search(r'<text class="axis-label x-label"[^>]*>epoch</text>', html)
    assert re.search(r'<text class="axis-label y-label"[^>]*>perplexity</text>', html)
    assert "x axis: epoch; y axis: perplexity;" in html  # said to screen readers too


def test_html_draws_each_chart_once(diagnosed):
    html = render_html(diagnosed)
    # the exercise's copy of its check's chart is not drawn again
    assert html.count(">training perplexity per epoch</figcaption>") == 1
    # a chart only the exercise has is still drawn (tests/gold/report.html's perplexity)
    assert "<svg" in render_html(make_report()).split('id="exercise-2"')[1]


def _row(html: str, anchor: str) -> str:
    match = re.search(rf'<tr class="[^"]*" id="{re.escape(anchor)}">(.*?)</tr>', html, re.S)
    assert match, f"no row {anchor}"
    return match[1]


def test_html_shows_the_diagnosis_first_and_what_the_check_saw_below(diagnosed):
    html = render_html(diagnosed)
    row = _row(html, "check-1.1")
    box = re.search(r'<div class="diagnosis" role="note">(.*?)</div>', row, re.S)[1]
    assert "<strong>Likely mistake:</strong> the hidden state uses ReLU instead of tanh." in box
    assert "<strong>Fix:</strong> H = torch.tanh(X @ W_xh + H @ W_hh + b_h)" in box
    # the observation follows, open, without repeating its heading; submission text stays text
    saw = row.index("<details open><summary>What the check saw</summary><pre>outputs differ in 3918")
    assert saw > row.index('class="diagnosis"')
    assert "&lt;script&gt;" in row and "<script" not in html


def test_html_same_cause_links_to_the_check_that_names_it(diagnosed):
    html = render_html(diagnosed)
    row = _row(html, "check-1.2")
    assert ('same cause as <a href="#check-1.1" title="rnn computes the reference&#39;s outputs">check 1.1</a> '
            "(the hidden state uses ReLU instead of tanh)") in row
    assert 'class="diagnosis"' not in row  # the cause is told once, at check 1.1
    assert re.search(r'<details open><summary>What the check saw</summary><pre>outputs differ in 3916', row)
    # a check named that is not in the report is not linked
    lone = check("rnn_scratch", 9, FAILED, 0, 1, message="same cause as elsewhere.1 (x)", same_cause_as="elsewhere.1")
    alone = GradingReport("s", 0, 1, (ExerciseResult("rnn_scratch", "RNN", 0, 1, (lone,)),))
    assert "same cause as elsewhere.1 (x)</div>" in render_html(alone)


def test_html_opens_the_figures_of_failing_checks(diagnosed):
    html = render_html(diagnosed)
    assert "<details open><summary>Figures</summary>" in _row(html, "check-1.1")
    assert "<details><summary>Figures</summary>" in _row(html, "check-2.1")  # a passing check's stay closed


def test_hint_first_puts_the_hint_before_the_quoted_error():
    message = ("rnn raised RuntimeError: Expected all tensors to be on the same device, but found at least two "
               "devices, cpu and meta! Other sentence. at rnn_scratch.py:37 in rnn: H = X @ W "
               "(hint: create every tensor on the device you were given)")
    told = hint_first(message)
    assert told == ("rnn raised an error: create every tensor on the device you were given. torch said "
                    "(RuntimeError): Expected all tensors to be on the same device, but found at least two devices, "
                    "cpu and meta! (at rnn_scratch.py:37 in rnn: H = X @ W)")
    assert hint_first(told) == told
    # a check's own "; what to do" after the line the error was raised on
    own = ("forward raised TypeError: bad operand; really at rnn_concise.py:3 in forward: y = f(x); "
           "one-hot encode the tokens")
    assert hint_first(own) == ("forward raised an error: one-hot encode the tokens. Python said (TypeError): bad "
                               "operand; really (at rnn_concise.py:3 in forward: y = f(x))")
    for plain in ("ZeroDivisionError: division by zero", "outputs differ; check H", RELU_WORDING,
                  "rnn raised ValueError: no hint here at f.py:2 in rnn: x",
                  "rnn raised an error: detach the state. torch said (RuntimeError): Trying to backward (at f.py, "
                  "line 2, in rnn: x)"):
        assert hint_first(plain) == plain


def test_a_diagnosis_worded_otherwise_is_shown_whole():
    assert split_diagnosis(RELU_WORDING)[1] == "H = torch.tanh(X @ W_xh + H @ W_hh + b_h)"
    assert split_diagnosis("Likely mistake: the bias is missing.") == ("the bias is missing.", "")
    mine = check("rnn_scratch", 1, FAILED, 0, 1, message="Likely mistake: the bias is missing.", misconception="pack.bias")
    html = render_html(GradingReport("s", 0, 1, (ExerciseResult("rnn_scratch", "RNN", 0, 1, (mine,)),)))
    assert "<strong>Likely mistake:</strong> the bias is missing.</p>" in html and "<strong>Fix:" not in html


def test_torch_advice_that_is_the_wrong_fix_is_left_out():
    error = ("Trying to backward through the graph a second time (or directly access saved tensors after they have "
             "already been freed). Saved intermediate values of the graph are freed when you call .backward() or "
             "autograd.grad(). Specify retain_graph=True if you need to backward through the graph a second time or "
             "if you need to access saved tensors after calling backward.")
    assert "retain_graph" not in without_torch_advice(error)
    assert without_torch_advice(error).endswith("autograd.grad().")
    anomaly = ("one of the variables needed for gradient computation has been modified by an inplace operation. "
               "Hint: enable anomaly detection to find the operation that failed to compute its gradient, with "
               "torch.autograd.set_detect_anomaly(True).")
    assert without_torch_advice(anomaly) == anomaly.split(" Hint:")[0]


def test_terminal_tells_a_diagnosis_whole_with_the_hint_first(diagnosed, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = format_summary(diagnosed, RunConfig())
    flat = " ".join(line.strip() for line in text.splitlines())
    assert "Likely mistake: the hidden state uses ReLU instead of tanh." in flat
    assert "Fix: H = torch.tanh(X @ W_xh + H @ W_hh + b_h)" in flat and "…" not in text
    # "same cause as" names the other check as the terminal lists it: by its title
    assert ('same cause as "rnn computes the reference\'s outputs" (the hidden state uses ReLU instead of tanh)'
            in flat)
    hint = flat.index("rnn raised an error: detach the carried state instead of keeping its graph.")
    assert hint < flat.index("torch said (RuntimeError): Trying to backward through the graph a second time")
    assert any(line.strip().startswith("Fix: H = torch.tanh(") for line in text.splitlines())
    assert "retain_graph" not in text and all(len(line) <= 100 for line in text.splitlines())


@pytest.mark.parametrize("make, gold", [(make_report, GOLD), (make_diagnosed_report, GOLD_DIAGNOSIS)],
                         ids=["statuses", "diagnosis"])
def test_html_gold(make, gold):
    html = render_html(make())
    update = "GRADER_UPDATE_GOLD=1 python -m pytest -n 0 tests/test_reporters.py"
    if os.environ.get("GRADER_UPDATE_GOLD") == "1":
        gold.parent.mkdir(parents=True, exist_ok=True)
        gold.write_text(html, encoding="utf-8")
        return
    assert gold.is_file(), f"no gold file; run: {update}"
    expected = gold.read_text(encoding="utf-8")
    if html != expected:
        import difflib

        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), html.splitlines(True), f"gold/{gold.name}", "rendered", n=2
            )
        )
        pytest.fail(f"HTML differs from tests/gold/{gold.name}; if intended, run {update}\n" + diff[:6000])


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not on PATH")
def test_html_in_headless_browser(report, tmp_path):
    path = write_html(report, tmp_path / "out")
    dom = chromium_dom(path, tmp_path, timeout=30)
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
