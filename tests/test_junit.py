"""JUnit XML reports (``grade DIR --junit FILE``), checked against a JUnit schema.

``tests/schemas/junit.xsd`` describes the common JUnit shape that CI report readers expect. It is
not fitted to the grader's output: the XML that pytest itself writes validates against it too.
The reports here are built by hand (no grading), with every status and hostile text.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema  # the test extra: pip install -e ".[test]"

from grader.config import RunConfig
from grader.report import junit
from grader.report.dispatch import _REPORTER_OUTPUT
from grader.results import (
    ERROR,
    FAILED,
    INTEGRITY,
    NOT_IMPLEMENTED,
    PASSED,
    SKIPPED,
    CheckResult,
    ExerciseResult,
    GradingReport,
)

SCHEMA_PATH = Path(__file__).parent / "schemas" / "junit.xsd"
#: what a submission may put in a message: controls, a CDATA end, markup, lone surrogates, non-characters
NASTY = "bad\x00\x08\x0b\x0c\x1b[31m ]]> <script>alert(1)</script> & \"q\" \ud800\udfff \ufffe\uffff ok 🙂"


@pytest.fixture(scope="module")
def schema():
    return xmlschema.XMLSchema(str(SCHEMA_PATH))


def check(exercise: str, name: str, status: str, points: float, max_points: float, **kw) -> CheckResult:
    kw.setdefault("title", name.replace("_", " "))
    kw.setdefault("message", "")
    return CheckResult(check_id=f"{exercise}.{name}", exercise=exercise, hooks=(exercise,), max_points=max_points,
                       points=points, status=status, **kw)


def exercise(name: str, *checks: CheckResult) -> ExerciseResult:
    return ExerciseResult(name, name.title(), sum(c.points for c in checks), sum(c.max_points for c in checks), checks)


def make_report() -> GradingReport:
    """Every status, hostile text in every text field, and hidden checks of three kinds."""
    scratch = exercise(
        "rnn_scratch",
        check("rnn_scratch", "params_shapes", PASSED, 2, 2, seconds=0.25, output="hello from the student\n"),
        check("rnn_scratch", "forward", FAILED, 0, 3, message="outputs differ\nsecond line " + NASTY,
              details="max abs difference 0.25\n" + NASTY, output=NASTY * 2000, seconds=1.5),
        check("rnn_scratch", "state", NOT_IMPLEMENTED, 0, 2, message="init_rnn_state is not implemented"),
        check("rnn_scratch", "secret_forward", FAILED, 0, 4, message="SECRET-MESSAGE", title="SECRET-TITLE",
              visibility="hidden", hidden=True),
    )
    training = exercise(
        "train_epoch",
        check("train_epoch", "runs", ERROR, 0, 2.5, message="ZeroDivisionError: division by zero",
              details='Traceback (most recent call last):\n  File "train_epoch.py", line 7'),
        check("train_epoch", "cuda", SKIPPED, 0, 0, message="no CUDA device here", title="on cuda " + NASTY),
        check("train_epoch", "tamper", INTEGRITY, 0, 1, message="train_epoch.py replaced torch.allclose"),
        check("train_epoch", "late", PASSED, 1, 1, message="SECRET-LATE", visibility="after_due_date", hidden=True),
    )
    only_hidden = exercise(
        "secret_pack",
        check("secret_pack", "SECRET-CHECK", PASSED, 5, 5, visibility="after_published", hidden=True),
    )
    return GradingReport(
        submission="/tmp/sub", points=sum(e.points for e in (scratch, training, only_hidden)),
        max_points=sum(e.max_points for e in (scratch, training, only_hidden)),
        exercises=(scratch, training, only_hidden), grader_version="0.0.0-test",
        configuration="grader.toml (sha256 1a2b3c4d)", seconds=3.0,
    )


@pytest.fixture
def report() -> GradingReport:
    return make_report()


def written(report: GradingReport, tmp_path: Path) -> tuple[Path, ET.Element]:
    path = tmp_path / "reports" / "deep" / "junit.xml"  # the folder does not exist yet
    junit.grader_report(report=report, config=RunConfig(junit_path=path))
    return path, ET.parse(path).getroot()


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in root.iter("testcase")}


def test_report_is_valid_junit(report, tmp_path, schema):
    path, _ = written(report, tmp_path)
    schema.validate(str(path))
    assert path.read_bytes().startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no temporary file left


def test_one_suite_per_exercise_one_case_per_check(report, tmp_path):
    _, root = written(report, tmp_path)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["rnn_scratch", "train_epoch"]  # secret_pack has no visible check
    found = cases(root)
    assert list(found) == ["rnn_scratch.params_shapes", "rnn_scratch.forward", "rnn_scratch.state",
                           "train_epoch.runs", "train_epoch.cuda", "train_epoch.tamper"]
    assert {c.get("classname") for c in suites[0].iter("testcase")} == {"rnn_grader.rnn_scratch"}
    assert found["rnn_scratch.forward"].get("time") == "1.500"
    properties = {p.get("name"): p.get("value") for p in found["rnn_scratch.forward"].find("properties")}
    assert properties == {"title": "forward", "points": "0", "max_points": "3", "status": "failed"}


def test_statuses_become_outcomes(report, tmp_path):
    _, root = written(report, tmp_path)
    found = cases(root)

    def outcome(name: str) -> tuple[str, str] | None:
        children = [c for c in found[name] if c.tag in ("failure", "error", "skipped")]
        assert len(children) <= 1
        return (children[0].tag, children[0].get("type")) if children else None

    assert outcome("rnn_scratch.params_shapes") is None
    assert outcome("rnn_scratch.forward") == ("failure", "failed")
    assert outcome("rnn_scratch.state") == ("failure", "not_implemented")  # it costs points: not a skip
    assert outcome("train_epoch.runs") == ("error", "error")
    assert outcome("train_epoch.cuda") == ("skipped", "skipped")
    assert outcome("train_epoch.tamper") == ("error", "integrity")
    error = found["train_epoch.runs"].find("error")
    assert error.get("message") == "ZeroDivisionError: division by zero"
    assert "[ERROR] 0/2.5 points: runs" in error.text and 'File "train_epoch.py", line 7' in error.text
    assert found["train_epoch.cuda"].find("skipped").get("message") == "no CUDA device here"


def test_counts_match_the_cases(report, tmp_path):
    _, root = written(report, tmp_path)
    for suite in root.findall("testsuite"):
        kids = [k.tag for case in suite.iter("testcase") for k in case]
        assert int(suite.get("tests")) == len(suite.findall("testcase"))
        assert int(suite.get("failures")) == kids.count("failure")
        assert int(suite.get("errors")) == kids.count("error")
        assert int(suite.get("skipped")) == kids.count("skipped")
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "6", "failures": "2", "errors": "2", "skipped": "1"}
    assert [s.get("time") for s in root.findall("testsuite")] == ["1.750", "0.000"]
    assert root.get("time") == "1.750"


def test_suite_properties_count_visible_checks_only(report, tmp_path):
    _, root = written(report, tmp_path)
    scratch = {p.get("name"): p.get("value") for p in root.find("testsuite").find("properties")}
    # the hidden 0/4 check is not in the exercise's score
    assert scratch == {"score": "2", "max_score": "7", "configuration": "grader.toml (sha256 1a2b3c4d)",
                       "grader_version": "0.0.0-test"}


def test_hidden_checks_leave_nothing(report, tmp_path):
    path, root = written(report, tmp_path)
    text = path.read_text(encoding="utf-8")
    for secret in ("SECRET", "secret_forward", "late", "secret_pack"):
        assert secret not in text


def test_hostile_text_is_escaped_or_removed(report, tmp_path, schema):
    path, root = written(report, tmp_path)
    raw = path.read_text(encoding="utf-8")
    assert "<script>" not in raw and "&lt;script&gt;" in raw
    assert "]]>" not in raw  # ElementTree writes '>' in text as &gt;
    failure = cases(root)["rnn_scratch.forward"].find("failure")
    # the one-line message: controls shown as escapes, no newline, markup kept as text
    message = failure.get("message")
    assert message.startswith("outputs differ second line bad\\x00\\x08 \\x1b[31m ]]> <script>")  # \\v\\f are spaces
    assert "\\ud800\\udfff" in message and "🙂" in message
    assert "\ufffe" not in raw and "\uffff" not in raw
    assert "]]> <script>alert(1)</script> & \"q\"" in failure.text
    # the student's output is kept, cut to a bounded size
    out = cases(root)["rnn_scratch.forward"].find("system-out").text
    assert out.startswith("bad\\x00") and "more characters not shown" in out and len(out) < 11_000
    assert cases(root)["rnn_scratch.params_shapes"].find("system-out").text == "hello from the student"
    title = cases(root)["train_epoch.cuda"].find("properties/property[@name='title']").get("value")
    assert title.startswith("on cuda bad\\x00")
    schema.validate(str(path))


def test_xml_text_keeps_what_xml_can_hold():
    assert junit.xml_text("a\tb\nc 🙂 é") == "a\tb\nc 🙂 é"
    assert junit.xml_text("x\x00y\x1bz") == "x\\x00y\\x1bz"
    assert junit.xml_text("\ud83d!") == "\\ud83d!"
    assert junit.xml_text("\ufffe\uffff") == ""


def test_nothing_written_without_junit_path(report, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    junit.grader_report(report=report, config=RunConfig(out_dir=tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


def test_empty_report_is_valid(tmp_path, schema):
    path = junit.write_junit(GradingReport(submission="x", points=0, max_points=0, exercises=()), tmp_path / "j.xml")
    schema.validate(str(path))
    assert ET.parse(path).getroot().get("tests") == "0"


def test_reporter_is_built_in_and_named_for_failures():
    from grader.plugins import BUILTIN_REPORTERS

    assert "grader.report.junit" in _REPORTER_OUTPUT
    assert "grader.report.junit" in BUILTIN_REPORTERS


# --------------------------------------------------------------------------
# the schema itself: it accepts pytest's JUnit XML and refuses broken documents
# --------------------------------------------------------------------------

PYTEST_SAMPLE = '''
    import sys
    import pytest

    @pytest.fixture
    def broken():
        raise RuntimeError("fixture <broke> & ]]>")

    def test_passes(record_property):
        record_property("answer", 42)
        print("to stdout")
        print("to stderr", file=sys.stderr)

    def test_fails():
        assert 1 == 2, "one is not two <b>"

    def test_errors(broken):
        pass

    def test_skips():
        pytest.skip("not here")

    @pytest.mark.xfail(reason="known")
    def test_xfails():
        assert False

    @pytest.mark.parametrize("n", [1, 2])
    def test_param(n):
        assert n
'''


@pytest.mark.parametrize("family", ["xunit1", "xunit2"])
def test_schema_accepts_pytest_junit_xml(tmp_path, schema, family):
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(PYTEST_SAMPLE), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # none of this project's settings
    out = tmp_path / "pytest.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={out}",
         "-o", f"junit_family={family}", "-o", "junit_logging=all", "test_sample.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})  # pytest alone, without installed plugins
    assert out.is_file(), done.stdout + done.stderr
    root = ET.parse(out).getroot()
    tags = {element.tag for element in root.iter()}
    assert {"testsuites", "testsuite", "testcase", "failure", "error", "skipped", "system-out",
            "system-err", "properties", "property"} <= tags
    schema.validate(str(out))


@pytest.mark.parametrize("broken", [
    '<testsuites><testsuite name="s" tests="1"><testcase/></testsuite></testsuites>',  # a case without a name
    '<testsuites><testsuite name="s" tests="-1"/></testsuites>',  # a negative count
    '<testsuites><testsuite name="s" tests="1" time="soon"/></testsuites>',  # a time that is no number
    '<testsuites><testcase name="c"/></testsuites>',  # a case outside any suite
    '<testsuites><testsuite name="s" tests="1"><testcase name="c"><oops/></testcase></testsuite></testsuites>',
    '<testsuites><testsuite tests="1"/></testsuites>',  # a suite without a name
])
def test_schema_refuses_broken_documents(schema, broken):
    assert not schema.is_valid(broken)
