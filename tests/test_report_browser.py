"""The HTML report of a failing submission as a student sees it: rendered by headless Chromium.

Two reports: one built by hand (``make_diagnosed_report`` in test_reporters.py: a recognised
mistake, checks sharing its cause, a chart where the student's line is the reference's), and one
from a real grading of the scratch RNN with ReLU in place of tanh, a mistake the grader names.
Chromium parses each page and the test reads its DOM back: the diagnosis is there, "same cause
as" links to the check that names it, every chart has both axes labelled, and a failing check's
explanation is open. Runs only where ``chromium`` is on PATH.
"""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator, Optional

import pytest

from conftest import chromium_dom, mutate
from grader.config import RunConfig
from grader.report.html import write_html
from grader.report.terminal import format_summary
from grader.results import ERROR, FAILED
from test_reporters import make_diagnosed_report

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not on PATH")


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Optional["Node"]) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.parts: list[str] = []  # text, in document order with the children's

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find(self, tag: str, cls: str = "", **attrs: str) -> Iterator["Node"]:
        for child in self.children:
            if child.tag == tag and (not cls or cls in child.classes()) and all(
                    child.attrs.get(k) == v for k, v in attrs.items()):
                yield child
            yield from child.find(tag, cls, **attrs)

    def one(self, tag: str, cls: str = "", **attrs: str) -> "Node":
        found = list(self.find(tag, cls, **attrs))
        assert len(found) == 1, f"{len(found)} <{tag} class={cls!r} {attrs}> in <{self.tag} {self.attrs}>"
        return found[0]


class _Tree(HTMLParser):
    VOID = {"meta", "link", "br", "img", "input", "hr", "line", "polyline", "circle", "rect", "path"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.at = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.at)
        self.at.children.append(node)
        if tag not in self.VOID:
            self.at = node

    def handle_startendtag(self, tag, attrs):
        self.at.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.at))

    def handle_endtag(self, tag):
        node = self.at
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.at = node.parent

    def handle_data(self, data):
        node = self.at
        while node is not None:  # every ancestor's text holds it
            node.parts.append(data)
            node = node.parent


def rendered(path: Path, tmp_path: Path) -> Node:
    """The page's DOM after Chromium parsed it."""
    dom = chromium_dom(path, tmp_path)
    assert "<svg" in dom, "Chromium returned no page"
    tree = _Tree()
    tree.feed(dom)
    return tree.root


def assert_charts_have_labelled_axes(dom: Node) -> int:
    """Every chart names both axes; returns how many charts there are."""
    charts = list(dom.find("svg", "chart"))
    for chart in charts:
        caption = chart.parent.one("figcaption").text
        x, y = chart.one("text", "x-label"), chart.one("text", "y-label")
        assert x.text and y.text, f"chart {caption!r} has an unlabelled axis"
        assert "rotate(-90" in y.attrs.get("transform", ""), caption  # read along the axis
        assert list(chart.find("g", "series")), f"chart {caption!r} draws no line"
    return len(charts)


def assert_failing_checks_open(dom: Node, report) -> None:
    """The message of every failing check shows, and its details and figures are open."""
    for number, check in numbered(report):
        row = dom.one("tr", id=f"check-{number}")
        failing = check.status in (FAILED, ERROR)
        for details in row.find("details"):
            summary = details.one("summary").text
            if summary != "Output of your code":
                assert ("open" in details.attrs) == failing, (number, summary)


def numbered(report) -> Iterator[tuple[str, object]]:
    for i, exercise in enumerate(report.exercises):
        for j, check in enumerate(exercise.checks):
            yield f"{i + 1}.{j + 1}", check


def test_diagnosis_and_labelled_charts_in_the_browser(tmp_path):
    report = make_diagnosed_report()
    dom = rendered(write_html(report, tmp_path / "out"), tmp_path)
    carrier = dom.one("tr", id="check-1.1")
    box = carrier.one("div", "diagnosis")
    assert box.text.startswith("Likely mistake: the hidden state uses ReLU instead of tanh.")
    assert box.one("p", "fix").text == "Fix: H = torch.tanh(X @ W_xh + H @ W_hh + b_h)"
    saw = next(d for d in carrier.find("details") if d.one("summary").text == "What the check saw")
    assert "open" in saw.attrs and saw.one("pre").text.startswith("outputs differ in 3918 of 3920 entries")
    assert "<script>alert(1)</script>" in saw.one("pre").text and not list(dom.find("script"))
    # the other checks with that cause link to it, and the link leads to a row that exists
    link = dom.one("tr", id="check-1.2").one("div", "cause").one("a")
    assert link.attrs["href"] == "#check-1.1" and link.text == "check 1.1"
    # a quoted torch error: the hint first, torch's advice to retain the graph gone
    error = dom.one("tr", id="check-1.3").one("div", "message").text
    assert error.index("detach the carried state") < error.index("torch said (RuntimeError): Trying to backward")
    assert "retain_graph" not in error
    # charts: labelled axes, the failing check's figures open, the reference drawn over the student's line
    assert assert_charts_have_labelled_axes(dom) == 2  # the exercise's copy of the perplexity chart is not drawn
    assert_failing_checks_open(dom, report)
    perplexity = dom.one("tr", id="check-2.1").one("svg", "chart")
    assert perplexity.one("text", "x-label").text == "epoch"
    assert perplexity.one("text", "y-label").text == "perplexity"
    lines = list(perplexity.find("g", "series"))
    assert "reference" in lines[-1].classes() and lines[-1].attrs.get("stroke-dasharray")
    ticks = [t.text for t in perplexity.find("text") if t.attrs.get("text-anchor") == "middle"
             and "axis-label" not in t.classes()]
    assert ticks[0] == "1"  # epochs counted from 1


def test_a_real_grading_of_relu_for_tanh_in_the_browser(grading, submission, tmp_path, monkeypatch):
    folder = submission(mutate("rnn_scratch.py", "H = torch.tanh(", "H = torch.relu("))
    report = grading(folder)
    checks = dict(numbered(report))
    carriers = [n for n, c in checks.items() if c.misconception and not c.same_cause_as]
    assert len(carriers) == 1, [(n, c.check_id, c.message) for n, c in checks.items() if c.status != "passed"]
    carrier = checks[carriers[0]]
    followers = [n for n, c in checks.items() if c.same_cause_as == carrier.check_id]

    dom = rendered(write_html(report, tmp_path / "out"), tmp_path)
    box = dom.one("tr", id=f"check-{carriers[0]}").one("div", "diagnosis")
    assert "ReLU instead of tanh" in box.text and box.one("p", "fix").text.startswith("Fix: H = torch.tanh(")
    for number in followers:
        link = dom.one("tr", id=f"check-{number}").one("div", "cause").one("a")
        assert link.attrs["href"] == f"#check-{carriers[0]}"
    # every chart of the report (training, sine wave, Jacobians) names its axes, and is drawn once
    assert assert_charts_have_labelled_axes(dom) >= 4
    for section in dom.find("section", "exercise"):
        captions = [f.text for f in section.find("figcaption")]
        assert len(captions) == len(set(captions)), captions
    assert_failing_checks_open(dom, report)

    # the terminal tells the same diagnosis whole, its fix on a line of its own
    monkeypatch.setenv("COLUMNS", "100")
    text = format_summary(report, RunConfig())
    checks_lines = [line for line in text.splitlines() if line.startswith("  ")]  # not the header's file path
    assert "…" not in text and all(len(line) <= 100 for line in checks_lines)
    flat = " ".join(line.strip() for line in text.splitlines())
    assert "Likely mistake: the hidden state uses ReLU instead of tanh." in flat
    assert any(re.match(r"\s+Fix: H = torch\.tanh\(", line) for line in text.splitlines())
    assert flat.count("ReLU lets it grow without bound") == 1  # the cause told once
