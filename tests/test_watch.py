"""``grade --watch DIR``: what changed between two gradings, which saves count, and a real watch session
that regrades after a fix and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REFERENCE, REPO
from grader.results import ERROR, FAILED, NOT_IMPLEMENTED, PASSED, CheckResult, ExerciseResult, FileProblem, GradingReport
from grader.watch import compare_reports, format_changes, wanted


def check(check_id: str, status: str, points: float, max_points: float = 4.0, message: str = "") -> CheckResult:
    exercise = check_id.split(".")[0]
    return CheckResult(check_id=check_id, exercise=exercise, title=f"title of {check_id}", hooks=("rnn",),
                       max_points=max_points, points=points, status=status, message=message)


def report(*checks: CheckResult, problems: tuple[FileProblem, ...] = ()) -> GradingReport:
    exercises = {}
    for c in checks:
        exercises.setdefault(c.exercise, []).append(c)
    built = tuple(ExerciseResult(name, name, sum(c.points for c in cs), sum(c.max_points for c in cs), tuple(cs))
                  for name, cs in exercises.items())
    return GradingReport(submission="sub", points=sum(c.points for c in checks),
                         max_points=sum(c.max_points for c in checks), exercises=built, problems=problems)


BEFORE = report(check("rnn_scratch.forward", FAILED, 0, message="outputs differ at time step 0"),
                check("rnn_scratch.state", PASSED, 3, 3),
                check("predict.prefix", NOT_IMPLEMENTED, 0, 2))


def test_an_improvement_names_the_check_its_statuses_and_points_won():
    after = report(check("rnn_scratch.forward", PASSED, 4), check("rnn_scratch.state", PASSED, 3, 3),
                   check("predict.prefix", NOT_IMPLEMENTED, 0, 2))
    changes = compare_reports(BEFORE, after)
    assert [c.title for c in changes.checks] == ["title of rnn_scratch.forward"]
    assert changes.checks[0].gained == 4
    text = format_changes(changes)
    assert "rnn_scratch: title of rnn_scratch.forward: FAIL -> PASS (+4 points)" in text
    assert "Score: 3/9 -> 7/9 (77.8%)  +4 points" in text
    assert "state" not in text and "predict" not in text  # unchanged checks are not repeated


def test_a_regression_says_what_is_wrong_now():
    after = report(check("rnn_scratch.forward", FAILED, 0, message="outputs differ at time step 0"),
                   check("rnn_scratch.state", ERROR, 0, 3, message="your rnn raised ValueError at rnn_scratch.py:12"),
                   check("predict.prefix", NOT_IMPLEMENTED, 0, 2))
    text = format_changes(compare_reports(BEFORE, after))
    assert "rnn_scratch: title of rnn_scratch.state: PASS -> ERROR (-3 points)" in text
    assert "raised ValueError at rnn_scratch.py:12" in text  # the new message, under the check
    assert "forward" not in text  # still failing the same way: not a change
    assert "Score: 3/9 -> 0/9 (0%)  -3 points" in text


def test_an_unchanged_grading_says_no_change_and_the_score():
    changes = compare_reports(BEFORE, BEFORE)
    assert changes.nothing
    assert format_changes(changes) == "no change: score 3/9 (33.3%)\n"


def test_new_and_solved_file_problems_are_listed():
    syntax = FileProblem("rnn_scratch.py", "rnn_scratch.py:12: invalid syntax")
    typo = FileProblem("predict.py", "defines predcit; did you mean predict?", severity="warning")
    before = report(*BEFORE.all_checks(), problems=(typo,))
    after = report(*BEFORE.all_checks(), problems=(syntax,))
    changes = compare_reports(before, after)
    assert changes.new_problems == (syntax,) and changes.solved_problems == (typo,)
    assert not changes.nothing
    text = format_changes(changes)
    assert "new problem: rnn_scratch.py: rnn_scratch.py:12: invalid syntax" in text
    assert "solved: predict.py: defines predcit" in text
    assert "Score: 3/9 -> 3/9" in text


def test_checks_that_appear_or_go_away_are_named():
    after = report(*BEFORE.all_checks()[:2], check("sine_wave.fit", PASSED, 2, 2))
    text = format_changes(compare_reports(BEFORE, after))
    assert "sine_wave: title of sine_wave.fit: new, PASS (2/2)" in text
    assert "predict: title of predict.prefix: no longer graded" in text


@pytest.mark.parametrize("path, graded", [
    ("sub/rnn_scratch.py", True), ("sub/lesson.ipynb", True),
    ("sub/.rnn_scratch.py.swp", False), ("sub/rnn_scratch.py~", False), ("sub/.#rnn_scratch.py", False),
    ("sub/#rnn_scratch.py#", False), ("sub/__pycache__/rnn_scratch.cpython-311.py", False),
    ("sub/.hidden.py", False), ("sub/notes.txt", False), ("sub/rnn_scratch.py.tmp123", False),
])
def test_only_saves_of_code_files_count(path, graded):
    assert wanted(path) is graded


def test_watch_cannot_go_with_batch_demo_or_fail_under(tmp_path):
    for extra in (["--batch", str(tmp_path), "--out", str(tmp_path / "o")], ["--demo"], [str(REFERENCE), "--fail-under", "50"]):
        done = subprocess.run([sys.executable, "-m", "grader", "--watch", *extra], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2, extra
        assert "--watch" in done.stderr and "Traceback" not in done.stderr


class _Lines:
    """A stream's lines as they arrive, read in a thread."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, count: int = 1, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < count:
            assert time.monotonic() < deadline, f"{needle!r} never came; so far:\n{self.text()}"
            time.sleep(0.1)


def test_watch_regrades_after_a_fix_shows_what_changed_and_stops_cleanly_on_ctrl_c(submission):
    correct = (REFERENCE / "rnn_scratch.py").read_text()
    broken = correct.replace("H = torch.tanh(", "H = torch.relu(")
    assert broken != correct
    folder = submission({"rnn_scratch.py": broken})
    proc = subprocess.Popen([sys.executable, "-m", "grader", "--watch", str(folder)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = _Lines(proc.stdout), _Lines(proc.stderr)
        err.wait_for("watching")
        out.wait_for("Score:")
        assert "FAIL" in out.text() and "100/100" not in out.text()
        # an editor's way to save: write a temporary file, then rename it over the original
        (folder / ".rnn_scratch.py.tmp").write_text(correct)
        os.replace(folder / ".rnn_scratch.py.tmp", folder / "rnn_scratch.py")
        out.wait_for("Score:", count=2)
        changes = out.text().split("since the last grading:", 1)[1]
        assert "rnn_scratch:" in changes and "FAIL -> PASS" in changes, changes
        assert "-> 100/100" in changes
        assert "rnn_scratch.py changed" in err.text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.2)  # the last lines of the pipes
        assert "Traceback" not in err.text() + out.text()
        assert "stopped watching" in err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
