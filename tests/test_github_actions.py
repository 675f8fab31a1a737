"""Under GitHub Actions: the job summary, the annotations and the step outputs.

Unit tests on reports built by hand (the GitHub environment set with monkeypatch), then one grading
through the CLI, as a pull request's workflow runs it.
"""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from grader.config import RunConfig
from grader.report import github
from grader.report.github import (
    annotation_path,
    annotations,
    code_block,
    command_data,
    command_property,
    markdown_text,
    step_outputs,
    step_summary,
    workflow_command,
)
from grader.results import (
    ERROR,
    FAILED,
    INTEGRITY,
    NOT_IMPLEMENTED,
    PASSED,
    SKIPPED,
    CheckResult,
    ExerciseResult,
    FileProblem,
    GradingReport,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "<script>alert(1)</script>"


def check(exercise: str, name: str, status: str, points: float, max_points: float, hook: str = "", **kw) -> CheckResult:
    kw.setdefault("title", name.replace("_", " "))
    kw.setdefault("message", "")
    return CheckResult(check_id=f"{exercise}.{name}", exercise=exercise, hooks=(hook or exercise,),
                       max_points=max_points, points=points, status=status, **kw)


def exercise(name: str, *checks: CheckResult) -> ExerciseResult:
    return ExerciseResult(name, name.title(), sum(c.points for c in checks), sum(c.max_points for c in checks), checks)


def make_report(submission: str = "/work/ws/student", **kw) -> GradingReport:
    scratch = exercise(
        "rnn_scratch",
        check("rnn_scratch", "params", PASSED, 2, 2, hook="get_params"),
        check("rnn_scratch", "forward", FAILED, 0, 3, hook="rnn",
              message=f"outputs differ | by 0.25 `x` {SCRIPT} & more\nsecond line",
              details="max abs difference 0.25\n```\nnot a fence end " + SCRIPT),
        check("rnn_scratch", "state_shape", NOT_IMPLEMENTED, 0, 1, hook="init_rnn_state",
              message="init_rnn_state is not implemented"),
        check("rnn_scratch", "state_zeros", NOT_IMPLEMENTED, 0, 1.5, hook="init_rnn_state",
              message="init_rnn_state is not implemented"),
        check("rnn_scratch", "secret_forward", FAILED, 0, 4, hook="rnn", title="SECRET-TITLE",
              message="SECRET-MESSAGE", visibility="hidden", hidden=True),
    )
    training = exercise(
        "train_epoch",
        check("train_epoch", "runs", ERROR, 0, 2, hook="train_epoch", message="ZeroDivisionError: 100% off, a:b"),
        check("train_epoch", "cuda", SKIPPED, 0, 0, hook="train_epoch", message="no CUDA device"),
        check("train_epoch", "tamper", INTEGRITY, 0, 1, hook="train_epoch", message="replaced torch.allclose"),
        check("train_epoch", "late", PASSED, 7, 7, hook="train_epoch", title="SECRET-LATE",
              visibility="after_due_date", hidden=True),
    )
    values = dict(
        submission=submission, points=9, max_points=21.5, exercises=(scratch, training),
        locations={"get_params": ("rnn_scratch.py", 3), "rnn": ("rnn_scratch.py", 20),
                   "init_rnn_state": ("rnn_scratch.py", 12)},
        configuration="grader.toml (sha256 1a2b3c4d)", grader_version="0.0.0-test",
        notices=("Trained on the generated corpus.",),
    )
    values.update(kw)
    return GradingReport(**values)


@pytest.fixture
def actions(tmp_path, monkeypatch):
    """A GitHub Actions environment whose files live in tmp_path."""
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": tmp_path / "summary.md",
           "GITHUB_OUTPUT": tmp_path / "output.txt", "GITHUB_WORKSPACE": tmp_path}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return env


def commands(text: str) -> list[tuple[str, dict[str, str], str]]:
    """``(kind, properties, message)`` of each workflow command in ``text``, properties unescaped."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(r"::(\w+)(?: ([^:]*))?::(.*)", line)
        if match:
            props = dict(p.split("=", 1) for p in match.group(2).split(",")) if match.group(2) else {}
            found.append((match.group(1), {k: unescape(v) for k, v in props.items()}, unescape(match.group(3))))
    return found


def unescape(text: str) -> str:
    for code, char in (("%3A", ":"), ("%2C", ","), ("%0D", "\r"), ("%0A", "\n"), ("%25", "%")):
        text = text.replace(code, char)
    return text


# --------------------------------------------------------------------------
# escaping
# --------------------------------------------------------------------------


def test_workflow_command_escaping():
    assert command_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert command_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    line = workflow_command("error", "two\nlines :: ok", file="dir,x/a:b.py", line=7, title="t", col=None)
    assert line == "::error file=dir%2Cx/a%3Ab.py,line=7,title=t::two%0Alines :: ok"
    assert workflow_command("notice", "plain") == "::notice::plain"
    # a forged command inside a message stays inside the message
    assert "\n" not in workflow_command("error", "x\n::add-mask::secret\n::error::fake")


def test_defuse_commands():
    text = "ok\n::stop-commands::x\n   ::error::fake\nsay ##[error]x and a::b\n"
    defused = github.defuse_commands(text)
    assert defused == "ok\n:\u200b:stop-commands::x\n   :\u200b:error::fake\nsay #\u200b#[error]x and a::b\n"
    assert not any(line.lstrip().startswith("::") or "##[" in line for line in defused.splitlines())


def test_markdown_text_is_inert():
    text = markdown_text(f"a | b `c` *d* [l](http://x) ![i](y) {SCRIPT} & &amp; @someone $x$ #12\nnext")
    assert "\n" not in text
    assert "<" not in text and ">" not in text.replace("&gt;", "")
    assert "&lt;script&gt;" in text and "&amp;amp;" in text
    assert re.search(r"(?<!\\)[|`*\[\]@$]", text) is None  # every markup character escaped
    assert r"a \| b \`c\` \*d\*" in text


def test_code_block_fence_outlasts_backticks():
    block = code_block("x\n````\ny")
    assert block.startswith("`````text\n") and block.endswith("\n`````")
    assert code_block("plain") == "```text\nplain\n```"


def test_annotation_path(tmp_path):
    inside = tmp_path / "repo" / "student"
    assert annotation_path(str(inside), "rnn.py", str(tmp_path / "repo")) == "student/rnn.py"
    assert annotation_path(str(inside), "rnn.py", str(inside)) == "rnn.py"
    elsewhere = annotation_path(str(tmp_path / "other"), "rnn.py", str(tmp_path / "repo"))
    assert elsewhere == (tmp_path / "other" / "rnn.py").resolve().as_posix()
    assert annotation_path(str(inside), "rnn.py", None) == (inside / "rnn.py").resolve().as_posix()
    # the workflow checks the pull request out into submission/: paths start at that checkout's root
    checkout = tmp_path / "ws" / "submission"
    (checkout / ".git").mkdir(parents=True)
    (checkout / "exercises").mkdir()
    assert annotation_path(str(checkout / "exercises"), "rnn.py", str(tmp_path / "ws")) == "exercises/rnn.py"


def test_the_terminal_summary_cannot_issue_workflow_commands(monkeypatch, capsys):
    from grader.report.terminal import TerminalReporter

    forged = check("rnn_scratch", "rnn.forward", "failed", 0, 7, "rnn", output="::error file=x.py::forged\n::stop-commands::tok")
    report = make_report(exercises=(exercise("rnn_scratch", forged),))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    TerminalReporter().grader_report(report, RunConfig(verbose=True))
    out = capsys.readouterr().out
    assert "forged" in out and not any(line.lstrip().startswith("::") for line in out.splitlines())


# --------------------------------------------------------------------------
# the summary
# --------------------------------------------------------------------------


def test_summary_shows_visible_checks_and_score():
    text = step_summary(make_report())
    assert text.startswith("## rnn-grader: 2/10.5 points (19%)\n")  # hidden points are in neither number
    assert "grader.toml (sha256 1a2b3c4d)" in text and "rnn-grader 0.0.0-test" in text
    assert "| exercise | check | points | status | what to fix |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 7  # every visible check, hidden ones left out
    assert any("forward" in row and "0/3" in row and "❌ FAIL" in row and "outputs differ \\| by 0.25 \\`x\\`" in row
               for row in rows)
    assert any("state shape" in row and "📝 TODO" in row for row in rows)
    assert any("cuda" in row and "SKIP" in row for row in rows)
    assert all(row.count(" | ") == 4 for row in rows), "a message must not add or remove table columns"
    assert "Note:** Trained on the generated corpus." in text
    assert github.HIDDEN_LINE in text


def test_summary_leaks_no_hidden_check():
    text = step_summary(make_report())
    assert "SECRET" not in text and "secret_forward" not in text and "late" not in text


def test_summary_without_hidden_checks_says_nothing_of_them():
    report = make_report()
    report = GradingReport(**{**report.__dict__, "exercises": tuple(
        ExerciseResult(e.name, e.title, e.points, e.max_points, tuple(c for c in e.checks if c.visibility == "visible"))
        for e in report.exercises)})
    assert github.HIDDEN_LINE not in step_summary(report)


def test_summary_says_the_course_hides_checks():
    report = make_report()
    visible_only = GradingReport(**{**report.__dict__, "exercises": report.exercises[:0]})
    assert github.HIDDEN_LINE not in step_summary(visible_only, SimpleNamespace(visibility=None, per_exercise={},
                                                                                per_check={}))
    for course in (SimpleNamespace(visibility="hidden", per_exercise={}, per_check={}),
                   SimpleNamespace(visibility=None, per_exercise={"predict": {"points": 2}},
                                   per_check={"predict.text": {"visibility": "after_due_date"}})):
        assert github.HIDDEN_LINE in step_summary(visible_only, course)


def test_long_summary_is_cut(monkeypatch):
    monkeypatch.setattr(github, "_SUMMARY_CHARS", 600)
    text = step_summary(make_report())
    assert len(text) < 700 and text.endswith("the rest is cut; run `grade` on your files to see it.\n")


def test_summary_escapes_submission_text():
    text = step_summary(make_report())
    assert "<script>" not in text.split("### Details")[0]  # outside code blocks: never raw HTML
    assert "&lt;script&gt;" in text
    details = text.split("### Details")[1]
    # explanations go verbatim in a fence that a student's backticks cannot close
    assert "````text\nmax abs difference 0.25\n```\nnot a fence end <script>" in details


def test_summary_puts_the_untrusted_banner_first():
    report = make_report(untrusted=(".github/workflows/grade.yml", "tests/test_x.py"),
                         notices=("untrustworthy: this pull request changed files ...", "Trained on X."))
    text = step_summary(report)
    heading, rest = text.split("\n", 1)
    assert rest.lstrip().startswith("> [!CAUTION]\n> **This result cannot be trusted.**")
    assert ".github/workflows/grade.yml" in text and "tests/test\\_x.py" in text
    assert "untrustworthy: this pull" not in text  # the notice is not said twice
    assert text.index("CAUTION") < text.index("Trained on X")


def test_summary_lists_file_problems():
    report = make_report(problems=(FileProblem("rnn_scratch.py", "SyntaxError: invalid syntax", line=9),))
    assert "- error: rnn\\_scratch.py:9: SyntaxError" in step_summary(report)


# --------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------


def test_annotations_point_at_the_function():
    found = commands("\n".join(annotations(make_report(), workspace="/work/ws")))
    by_title = {props.get("title", ""): (kind, props, message) for kind, props, message in found}
    kind, props, message = by_title["rnn_scratch: forward (FAIL 0/3 points)"]
    assert kind == "error" and props["file"] == "student/rnn_scratch.py" and props["line"] == "20"
    assert message.startswith(f"outputs differ | by 0.25 `x` {SCRIPT} & more\nsecond line\n\nmax abs difference")
    # not implemented: one annotation per function, not one per check
    todo = [f for f in found if "not implemented" in f[1].get("title", "")]
    assert len(todo) == 1
    assert todo[0][1]["line"] == "12" and "init_rnn_state is not implemented yet: 2 checks (2.5 points)" in todo[0][2]
    # errors and integrity too; passes and skips are not annotated
    assert {t for t in by_title if t.startswith("train_epoch")} == {
        "train_epoch: runs (ERROR 0/2 points)", "train_epoch: tamper (VOID 0/1 points)"}
    assert by_title["train_epoch: runs (ERROR 0/2 points)"][2] == "ZeroDivisionError: 100% off, a:b"
    # train_epoch has no location: an annotation without file or line
    assert "file" not in by_title["train_epoch: runs (ERROR 0/2 points)"][1]
    assert len(found) == 4


def test_annotations_leak_no_hidden_check():
    text = "\n".join(annotations(make_report(), workspace="/work/ws"))
    assert "SECRET" not in text and "secret_forward" not in text


def test_annotations_for_untrusted_and_problems():
    report = make_report(untrusted=("tests/test_grade.py",),
                         problems=(FileProblem("rnn_scratch.py", "could not be imported: SyntaxError: invalid syntax "
                                                                 "at rnn_scratch.py:9", line=9),
                                   FileProblem(".", "has 40 .py files", severity="warning")))
    found = commands("\n".join(annotations(report, workspace="/work/ws")))
    assert found[0][0] == "warning" and found[0][1]["title"] == "Untrustworthy result"
    assert "tests/test_grade.py" in found[0][2]
    assert found[1][0] == "error" and found[1][1]["file"] == "student/rnn_scratch.py" and found[1][1]["line"] == "9"
    assert found[2][0] == "warning" and "file" not in found[2][1]


def test_annotations_are_capped():
    many = exercise("rnn_scratch", *(check("rnn_scratch", f"c{i}", FAILED, 0, 1, message=f"m{i}") for i in range(80)))
    lines = annotations(make_report(exercises=(many,)))
    assert len(lines) == github.MAX_ANNOTATIONS
    assert lines[-1].startswith("::notice title=More problems::31 more problems are not annotated")


# --------------------------------------------------------------------------
# the reporter
# --------------------------------------------------------------------------


def test_reporter_writes_everything_under_actions(actions, capsys):
    actions["GITHUB_STEP_SUMMARY"].write_text("earlier step\n", encoding="utf-8")
    report = make_report(submission=str(actions["GITHUB_WORKSPACE"] / "student"))
    github.grader_report(report=report, config=RunConfig())
    summary = actions["GITHUB_STEP_SUMMARY"].read_text(encoding="utf-8")
    assert summary.startswith("earlier step\n## rnn-grader: 2/10.5 points")  # appended, never replaced
    assert actions["GITHUB_OUTPUT"].read_text(encoding="utf-8") == (
        "score=2\nmax_score=10.5\npercent=19\nuntrusted=false\n")
    out = capsys.readouterr().out
    assert "::error file=student/rnn_scratch.py,line=20,title=rnn_scratch%3A forward (FAIL 0/3 points)::" in out


def test_reporter_is_silent_elsewhere(actions, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_ACTIONS", "false")
    github.grader_report(report=make_report(), config=RunConfig())
    assert capsys.readouterr().out == ""
    assert not actions["GITHUB_STEP_SUMMARY"].exists() and not actions["GITHUB_OUTPUT"].exists()


def test_reporter_without_files(actions, monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    monkeypatch.delenv("GITHUB_OUTPUT")
    github.grader_report(report=make_report(), config=RunConfig())
    assert "::error" in capsys.readouterr().out


def test_step_outputs_untrusted():
    assert "untrusted=true\n" in step_outputs(make_report(untrusted=("x",)))


# --------------------------------------------------------------------------
# end to end: the CLI in a pull request's workflow
# --------------------------------------------------------------------------

def test_cli_under_github_actions(tmp_path, monkeypatch, capsys):
    """The reference with one wrong function (rnn forgets the recurrence), graded as the workflow grades it."""
    pytest.importorskip("grader.course", reason="the course configuration is not in this tree yet")
    from grader import cli

    work = tmp_path / "ws"
    student = work / "submission"
    student.mkdir(parents=True)
    for source in sorted((REPO / "reference").glob("*.py")):
        if source.name != "__init__.py":
            shutil.copy(source, student / source.name)
    file = student / "rnn_scratch.py"
    text = file.read_text(encoding="utf-8")
    right = "H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)"
    assert right in text, "reference/rnn_scratch.py changed: pick another mistake"
    file.write_text(text.replace(right, "H = torch.tanh(torch.mm(X, W_xh) + b_h)"), encoding="utf-8")
    def_line = text.splitlines().index("def rnn(inputs, state, params):") + 1

    summary = tmp_path / "summary.md"
    for name, value in {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": summary, "GITHUB_WORKSPACE": work,
                        "GITHUB_OUTPUT": tmp_path / "output.txt"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(tmp_path)
    junit_xml = tmp_path / "reports" / "junit.xml"
    code = cli.main([str(student), "--no-config", "--fail-under", "100", "--color", "never", "--junit", str(junit_xml)])
    out = capsys.readouterr().out
    assert code == cli.BELOW_THRESHOLD, out
    errors = [c for c in commands(out) if c[0] == "error"]
    assert errors, out
    # every failing check is rnn's: annotated on its file, at its def line
    assert all(props.get("file") == "submission/rnn_scratch.py" and props.get("line") == str(def_line)
               for _, props, _ in errors), errors
    assert all(props["title"].startswith("rnn_scratch: ") for _, props, _ in errors)
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## rnn-grader: ") and "❌ FAIL" in text
    assert re.search(r"\| rnn\\_scratch \| .* \| 0/\d+(\.\d+)? \| ❌ FAIL \| \S", text)
    outputs = (tmp_path / "output.txt").read_text(encoding="utf-8")
    assert re.fullmatch(r"score=[\d.]+\nmax_score=[\d.]+\npercent=[\d.]+\nuntrusted=false\n", outputs)
    # the same run's JUnit report: rnn's checks fail, the rest pass
    failed = {case.get("name") for case in ET.parse(junit_xml).getroot().iter("testcase")
              if case.find("failure") is not None}
    assert failed and all(name.startswith("rnn_scratch.rnn.") for name in failed)


def test_registered_as_builtin_reporter():
    from grader.plugins import BUILTIN_REPORTERS

    assert "grader.report.github" in BUILTIN_REPORTERS
