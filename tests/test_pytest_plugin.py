"""``pytest --grade DIR`` (grader/pytest_plugin.py): every check a test item, run as a student runs it.

Most runs here are pytest sessions inside this one (``pytester``), whose grading is replaced by a
made-up report, so that they show how results become outcomes without the cost of grading. One
session, in its own process as a student's IDE starts it, grades a real folder.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import REFERENCE

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def the_plan():
    """The plan a ``--grade`` session makes; planning here also imports what those sessions use, so
    that pytester's in-process runs, which forget the modules they import, import nothing new."""
    import torch

    from grader.config import RunConfig
    from grader.judge import engine
    from grader.plugins import get_plugin_manager

    for name in ("grader.course", "grader.judge.runners", "grader.pytest_plugin", "grader.report.formatting"):
        importlib.import_module(name)
    devices = ("cuda",) if torch.cuda.is_available() else ()
    return engine.plan(get_plugin_manager(), RunConfig(extra_devices=devices))


def every_check(the_plan) -> list:
    """The items of a session in their order: each exercise's checks, then those of a device this machine lacks."""
    return [c for ex in the_plan.exercises for c in (*the_plan.checks, *the_plan.unavailable) if c.exercise == ex.name]


@pytest.fixture(scope="module", autouse=True)
def reference_cache_as_it_was():
    """``--grade`` sessions run in this process turn the reference cache on, as ``grade`` does; the tests
    after these get it as it was."""
    from grader import refcache

    before = refcache.directory()
    yield
    refcache.configure(False if before is None else before)


@pytest.fixture
def reference_copy(pytester):
    folder = pytester.path / "submission"
    folder.mkdir()
    for path in REFERENCE.glob("*.py"):
        if path.name != "__init__.py":
            shutil.copyfile(path, folder / path.name)
    return folder


def listed_check_ids(lines) -> list[str]:
    """Check ids from ``--collect-only -q`` lines ``submission/rnn_scratch.py::rnn.forward``."""
    return [f"{Path(line.split('::')[0]).stem}.{line.split('::')[1]}" for line in lines if "::" in line]


def test_importing_the_plugin_is_cheap():
    # pytest imports it in every run, this project's own included
    code = ("import sys, grader.pytest_plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('grader.judge')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_grade_the_plugin_adds_nothing(pytester):
    pytester.makepyfile(test_plain="""
        def test_one(request):
            plugins = request.config.pluginmanager
            assert plugins.get_plugin("rnn_grader") is not None  # loaded through its entry point
            assert plugins.get_plugin("rnn-grader-session") is None  # its grading hooks are not
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "grading" not in result.stdout.str()
    assert "--grade=DIR" in pytester.runpytest("--help").stdout.str()


def test_collect_only_lists_every_check_without_grading(pytester, reference_copy, the_plan, monkeypatch):
    from grader.judge import engine

    monkeypatch.setattr(engine, "grade", lambda *a, **k: pytest.fail("--collect-only graded the folder"))
    result = pytester.runpytest("--grade", "submission", "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    lines = result.stdout.lines
    assert listed_check_ids(lines) == [c.id for c in every_check(the_plan)]
    assert "submission/rnn_scratch.py::rnn.forward" in lines  # one collector per exercise, named by its file

    # an IDE runs single tests by node id: only those are collected
    result = pytester.runpytest("--grade", "submission", "--collect-only", "-q",
                                "submission/grad_clipping.py::above", "submission/predict.py")
    assert listed_check_ids(result.stdout.lines) == ["grad_clipping.above"] + [
        c.id for c in every_check(the_plan) if c.exercise == "predict"]


@pytest.mark.parametrize("args, says", [
    (["--grade", "missing"], "--grade missing: no such folder"),
    (["--grade", "empty"], "--grade empty has no .py files; run `grade --init empty`"),
    (["--grade", "submission/rnn_scratch.py"], "is a file; give the folder that holds your .py files"),
    (["--grade", "submission", "--grade-timeout", "0"], "--grade-timeout must be positive"),
    (["--grade-timeout", "5"], "--grade-timeout applies to --grade DIR"),
    (["--grade", "submission", "--grade-config", "nope.toml"], "nope.toml: no such configuration file"),
    (["--grade", "submission", "empty"], "empty is not part of the grading of"),
])
def test_bad_input_is_a_usage_error(pytester, reference_copy, the_plan, args, says):
    (pytester.path / "empty").mkdir()
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert says in result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def made_up_report(folder: Path, the_plan, results: dict):
    """A report of ``the_plan``: the check ids in ``results`` with those (status, points, message, more);
    every other check passed."""
    from grader.results import CheckResult, ExerciseResult, FileProblem, GradingReport

    checks = defaultdict(list)
    for check in the_plan.checks:
        status, points, message, more = results.get(check.id, ("passed", check.points, "", {}))
        checks[check.exercise].append(CheckResult(check.id, check.exercise, check.title, (check.hook,),
                                                  float(check.points), float(points), status, message, **more))
    exercises = tuple(ExerciseResult(ex.name, ex.title, sum(c.points for c in checks[ex.name]),
                                     sum(c.max_points for c in checks[ex.name]), tuple(checks[ex.name]))
                      for ex in the_plan.exercises if checks[ex.name])
    not_here = tuple(CheckResult(c.id, c.exercise, c.title, (c.hook,), 0.0, 0.0, "skipped", "no CUDA device here")
                     for c in the_plan.unavailable)
    return GradingReport(str(folder), sum(e.points for e in exercises), sum(e.max_points for e in exercises),
                         exercises, problems=(FileProblem("helper.py", "SyntaxError: invalid syntax (line 3)"),),
                         skipped_here=not_here)


@pytest.fixture
def graded_as(monkeypatch, the_plan):
    """``graded_as(results)``: ``--grade`` sessions get a made-up report instead of grading; returns the calls."""
    from grader.judge import engine
    from grader.judge.runners import Runner

    calls: list[Path] = []
    chosen: dict = {}

    def grade(folder, config, pm, runner, plan, progress=None):
        calls.append(folder)
        return made_up_report(folder, plan, chosen)

    def install(results: dict) -> list[Path]:
        chosen.update(results)
        return calls

    monkeypatch.setattr(Runner, "launch", lambda self: None)
    monkeypatch.setattr(engine, "warm_up", lambda plan: None)
    monkeypatch.setattr(engine, "grade", grade)
    return install


def test_each_item_reports_its_checks_result(pytester, reference_copy, the_plan, graded_as):
    calls = graded_as({
        "grad_clipping.above": ("failed", 1.0, "norm 2.0 after clipping, expected 1.0",
                                {"details": "clip with theta / norm\nfor every parameter", "output": "hello\x1b[2J"}),
        "grad_clipping.below": ("error", 0.0, "grad_clipping raised ValueError: bad", {}),
        "predict.text": ("not_implemented", 0.0, "predict is not implemented", {}),
        "gradient_flow.device.meta": ("skipped", 0.0, "CUDA is not available here", {}),
    })
    result = pytester.runpytest("--grade", "submission", "-ra")
    total, here = len(every_check(the_plan)), len(the_plan.checks)
    result.assert_outcomes(passed=here - 4, failed=3, skipped=1 + len(the_plan.unavailable))
    assert len(calls) == 1  # the first item graded the folder, once for all of them
    out = result.stdout.str()
    points = {c.id: c.points for c in the_plan.checks}
    result.stdout.fnmatch_lines([
        "*grad_clipping.above: gradients above*",
        f"failed (1/{points['grad_clipping.above']:g} points): norm 2.0 after clipping, expected 1.0",
        "clip with theta / norm",
        "*Captured output call*",
        r"hello\x1b[[]2J",  # what the student printed, its controls made harmless
        f"error (0/{points['grad_clipping.below']:g} points): grad_clipping raised ValueError: bad",
        f"not implemented (0/{points['predict.text']:g} points): predict is not implemented",
    ])
    # the short summary: the message, and a skipped check points at the student's file
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] submission/gradient_flow.py:*: CUDA is not available here"])
    result.stdout.fnmatch_lines(["FAILED submission/predict.py::text - not implemented*"])
    max_points = sum(points.values())
    earned = max_points - points["grad_clipping.above"] + 1 - points["grad_clipping.below"] - points["predict.text"] \
        - points["gradient_flow.device.meta"]
    percent = f"{100 * earned / max_points:.1f}".rstrip("0").rstrip(".")
    result.stdout.fnmatch_lines(["*rnn-grader: *submission*", "File problems:",
                                 "  error  helper.py: SyntaxError: invalid syntax (line 3)",
                                 f"Score: {earned:g}/{max_points:g} ({percent}%)"])
    assert "Traceback" not in out and "pytest_plugin.py" not in out

    # deselected checks are graded all the same, once, and the score says it is the folder's
    result = pytester.runpytest("--grade", "submission", "-k", "grad_clipping", "-p", "no:cacheprovider")
    clipping = len([c for c in every_check(the_plan) if c.exercise == "grad_clipping"])
    result.assert_outcomes(passed=clipping - 2, failed=2, deselected=total - clipping)
    assert len(calls) == 2
    result.stdout.fnmatch_lines([f"Score: * for all {here} checks, also those not selected in this run"])

    # pytest's cache knows the checks by their node ids: --lf runs the three that failed
    result = pytester.runpytest("--grade", "submission", "--lf")
    result.assert_outcomes(failed=3, deselected=total - 3)


def test_a_grader_that_cannot_run_is_an_error_of_every_item(pytester, reference_copy, the_plan, monkeypatch):
    from grader.judge.runners import Runner, RunnerError

    starts = []

    def launch(self):
        starts.append(self)
        raise RunnerError("no answer")

    monkeypatch.setattr(Runner, "launch", launch)
    result = pytester.runpytest("--grade", "submission", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=len(every_check(the_plan)))
    assert len(starts) == 1
    result.stdout.fnmatch_lines(["the grader could not run: no answer"])
    assert "Traceback" not in result.stdout.str()


def test_a_real_grading_in_its_own_process(pytester, reference_copy, the_plan):
    """The reference with one exercise broken: its checks fail, every other passes, --junitxml has them all."""
    source = (reference_copy / "grad_clipping.py").read_text()
    assert "    norm = torch.sqrt(" in source
    (reference_copy / "grad_clipping.py").write_text(
        source.replace("    norm = torch.sqrt(", "    raise RuntimeError('broken on purpose')\n    norm = torch.sqrt("))
    broken = [c for c in the_plan.checks if c.exercise == "grad_clipping"]
    # the venv's python and this session's GRADER_CACHE_DIR (tests/conftest.py), inherited
    result = pytester.runpytest_subprocess("--grade", "submission", "--junitxml", "junit.xml", "-p", "no:cacheprovider",
                                           timeout=600)
    result.assert_outcomes(passed=len(the_plan.checks) - len(broken), failed=len(broken),
                           skipped=len(the_plan.unavailable))
    result.stdout.fnmatch_lines(["error (0/* points): grad_clipping raised RuntimeError: broken on purpose*"])
    max_points = sum(c.points for c in the_plan.checks)
    result.stdout.fnmatch_lines([f"Score: {max_points - sum(c.points for c in broken):g}/{max_points:g} (*%)"])
    assert "Traceback" not in result.stdout.str()

    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    seen = {}
    told = {}  # check id -> its failure's text
    for case in cases:
        check_id = f"{case.get('classname').rpartition('.')[2]}.{case.get('name')}"
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        failure = case.find("failure")
        seen[check_id] = (failure is not None, properties)
        if failure is not None:  # the student-facing message, as CI pages show it
            assert failure.get("message").startswith("error (0/"), failure.get("message")
            told[check_id] = failure.text
    # the error is quoted once, by the first check; the others point at it
    first = [c.id for c in broken][0]
    assert "broken on purpose" in told[first]
    assert all(told[c.id].endswith(f"same cause as {first} (grad_clipping raised RuntimeError)") for c in broken[1:]), told
    assert list(seen) == [c.id for c in every_check(the_plan)]
    for check in the_plan.unavailable:  # a device this machine lacks: skipped, worth nothing here
        assert seen[check.id][1]["status"] == "skipped" and float(seen[check.id][1]["max_points"]) == 0
    for check in the_plan.checks:
        failed, properties = seen[check.id]
        assert failed == (check.exercise == "grad_clipping"), check.id
        assert float(properties["max_points"]) == check.points
        assert float(properties["points"]) == (0 if failed else check.points)
        assert properties["status"] == ("error" if failed else "passed")
