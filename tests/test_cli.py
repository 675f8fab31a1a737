"""The command line: exit codes, usage errors without tracebacks, written reports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REFERENCE, REPO
from grader import cli


def grade(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["does-not-exist/"], "does not exist"),
    (["README.md"], "is a file"),
    ([], "give a submission folder"),
    (["reference/", "--demo"], "not both"),
    (["reference/", "--fail-under", "120"], "from 0 to 100"),
    (["reference/", "--corpus", "missing.txt"], "missing.txt"),
])
def test_usage_errors_exit_2_without_traceback(args, message):
    done = grade(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_empty_folder_suggests_init(tmp_path):
    done = grade(str(tmp_path))
    assert done.returncode == 2
    assert "--init" in done.stderr


def test_init_copies_skeletons_and_keeps_existing_files(tmp_path):
    (tmp_path / "predict.py").write_text("# mine\n")
    done = grade("--init", str(tmp_path))
    assert done.returncode == 0
    assert {p.name for p in tmp_path.glob("*.py")} == {"rnn_scratch.py", "grad_clipping.py", "predict.py", "train_epoch.py",
                                                      "rnn_concise.py", "sine_wave.py", "gradient_flow.py"}
    assert (tmp_path / "predict.py").read_text() == "# mine\n"


def test_demo_writes_html_and_gradescope_json_and_explains_failures(tmp_path):
    done = grade("--demo", "--out", str(tmp_path / "out"), "--fail-under", "90")
    assert done.returncode == 1, done.stdout + done.stderr  # graded, but under the threshold
    assert "FAIL" in done.stdout and "label" in done.stdout and "JOINT" in done.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert 0 < results["score"] < 100
    failing = [t for t in results["tests"] if t["status"] == "failed"]
    assert {tag for t in failing for tag in t["tags"]} >= {"grad_clipping", "train_epoch"}
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Y.T.reshape(-1)" in html


def test_reference_full_marks_exit_0_with_fail_under():
    done = grade(str(REFERENCE), "--fail-under", "100")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "100/100" in done.stdout
    # stderr is a pipe here, not a terminal: no progress line anywhere
    assert "starting the grader" not in done.stderr and "\x1b[K" not in done.stderr + done.stdout


def test_grading_is_deterministic(tmp_path):
    first = grade("--demo", "--out", str(tmp_path / "a"))
    second = grade("--demo", "--out", str(tmp_path / "b"))
    assert first.returncode == second.returncode == 0

    def scores(folder):
        data = json.loads((folder / "results.json").read_text())
        return [(t["name"], t["score"], t["status"], t["output"].split("\n")[0]) for t in data["tests"]]

    strip = lambda rows: [r for r in rows if "tokens/s" not in r[3]]  # noqa: E731 - speed differs run to run
    assert strip(scores(tmp_path / "a")) == strip(scores(tmp_path / "b"))


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("env, tty, choice, expected", [
    ({}, True, "auto", True),
    ({}, False, "auto", False),                       # a CI log: plain text
    ({"NO_COLOR": "1"}, True, "auto", False),
    ({"FORCE_COLOR": "1"}, False, "auto", True),      # forced in a CI log
    ({"FORCE_COLOR": "0"}, False, "auto", False),
    ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True, "auto", False),
    ({"TERM": "dumb"}, True, "auto", False),
    ({"NO_COLOR": "1"}, False, "always", True),       # the option wins over the environment
    ({"FORCE_COLOR": "1"}, True, "never", False),
])
def test_colour_follows_the_option_then_no_color_and_force_color(monkeypatch, env, tty, choice, expected):
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.use_color(choice, _Stream(tty)) is expected


def _grade_with_stderr_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """``grade`` with stderr on a pseudo-terminal (120 columns) and stdout on a pipe: (status, stdout, terminal)."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen([sys.executable, "-m", "grader", *args], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the process closed its end
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    stdout = proc.stdout.read().decode()
    status = proc.wait(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    return status, stdout, seen.decode("utf-8", "replace")


def test_progress_shows_on_a_terminal_from_the_start_and_is_wiped_before_the_report():
    status, stdout, terminal = _grade_with_stderr_on_a_terminal(str(REFERENCE))
    assert status == 0, stdout + terminal
    assert "starting the grader" in terminal  # something at once, while torch loads and the runner starts
    assert "loading your files" in terminal
    assert "checks, " in terminal and "/7 exercises" in terminal
    assert terminal.endswith("\r\x1b[K"), repr(terminal[-200:])  # the line wiped: the report starts clean
    assert "100/100" in stdout
    assert "\x1b[K" not in stdout and "starting the grader" not in stdout and "checks, " not in stdout


def test_quiet_shows_no_progress_on_a_terminal():
    status, stdout, terminal = _grade_with_stderr_on_a_terminal("--demo", "-q")
    assert status == 0, stdout + terminal
    assert terminal == ""
    assert "Score:" in stdout


def test_quiet_leaves_the_notes_out_of_the_terminal_summary_only():
    from grader.config import RunConfig
    from grader.report.terminal import format_summary
    from grader.results import GradingReport

    report = GradingReport(submission="my_rnn", points=0, max_points=0, exercises=(),
                           notices=("sandbox off: student code ran unisolated",))
    assert "Note: sandbox off" in format_summary(report, RunConfig())
    quiet = format_summary(report, RunConfig(quiet=True))
    assert "Note:" not in quiet and "Score:" in quiet


def test_progress_counts_checks_and_finished_exercises():
    from types import SimpleNamespace

    from grader.judge.progress import CheckTally

    events = []
    a1, a2, b1 = SimpleNamespace(exercise="a"), SimpleNamespace(exercise="a"), SimpleNamespace(exercise="b")
    tally = CheckTally([[a1], [a2, b1]], events.append)
    tally.judged([a2, b1])
    tally.judged([a1])
    assert [(e.checks_done, e.checks_total, e.exercises_done, e.exercises_total, e.exercise) for e in events] == [
        (0, 3, 0, 2, ""), (2, 3, 1, 2, "a"), (3, 3, 2, 2, "a")]
