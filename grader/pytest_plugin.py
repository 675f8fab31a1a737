"""``pytest --grade DIR``: the grading of a folder as pytest test items, one per check.

IDE test explorers, ``-k``, ``-x``, ``--lf`` and ``--junitxml`` then work on a grading. pytest loads
this module in every run (entry point ``pytest11``), this project's own test runs included, so
importing it stays cheap (no torch, no judge), and without ``--grade`` it only adds its options:
the hooks that grade belong to a :class:`GradingSession`, registered only when ``--grade`` is given.

With ``--grade`` the session holds only the grading: one collector per exercise, named after the
exercise's file (``DIR/rnn_scratch.py``), one item per check (``DIR/rnn_scratch.py::rnn.forward``).
Collecting only plans, as ``grade --list-checks`` does; the first item to run grades the whole folder
once, as ``grade DIR`` would, and every item reports its own check's result.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from grader.config import RunConfig
    from grader.definitions import Check
    from grader.judge.engine import Plan
    from grader.results import CheckResult, GradingReport

#: a ``def`` at the top of a file, for pointing an item at the student's function without importing it
_TOP_LEVEL_DEF = re.compile(r"^(?:async\s+)?def\s+(\w+)\s*\(", re.MULTILINE)
#: files larger than this are not searched for their functions (the grader refuses them anyway)
_SCAN_LIMIT = 1_000_000


# ------------------------------------------------------------------ options (every pytest run)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rnn-grader", "grading recurrent-network exercises (rnn-grader)")
    group.addoption("--grade", metavar="DIR", default=None,
                    help="grade the .py files in DIR: every check becomes a test item (only those run)")
    group.addoption("--grade-config", metavar="FILE", default=None,
                    help="course configuration for --grade (default: the one next to DIR, else in the working "
                         "directory)")
    group.addoption("--grade-timeout", metavar="SECONDS", type=float, default=None,
                    help="time limit for every check of --grade (default: each check's own)")


def pytest_configure(config: pytest.Config) -> None:
    given = config.getoption("grade")
    if given is None:
        for option in ("--grade-config", "--grade-timeout"):
            if config.getoption(option.lstrip("-").replace("-", "_")) is not None:
                raise pytest.UsageError(f"{option} applies to --grade DIR; give the folder to grade too")
        return
    folder = config.invocation_params.dir / given
    if not folder.exists():
        raise pytest.UsageError(f"--grade {given}: no such folder; give the folder that holds your .py files")
    if not folder.is_dir():
        raise pytest.UsageError(f"--grade {given} is a file; give the folder that holds your .py files")
    if not any(folder.glob("*.py")):
        from grader.judge.loading import no_py_files  # only now: without --grade this module stays cheap

        raise pytest.UsageError(f"--grade {no_py_files(folder, given, command='pytest --grade')}")
    folder = folder.resolve()
    session = GradingSession(folder, _run_config(config, folder))
    config.stash[_SESSION] = session
    config.pluginmanager.register(session, "rnn-grader-session")


def _run_config(config: pytest.Config, folder: Path) -> "RunConfig":
    """The grading's settings: the options, then the course configuration, found as ``grade`` finds it."""
    from grader.config import RunConfig
    from grader.course import CourseError, find_course, load_course

    here = config.invocation_params.dir
    timeout = config.getoption("grade_timeout")
    if timeout is not None and timeout <= 0:
        raise pytest.UsageError("--grade-timeout must be positive")
    chosen = config.getoption("grade_config")
    try:
        if chosen is not None:
            course = load_course(here / chosen)
        else:
            found = find_course((folder, folder.parent, here))
            course = load_course(found) if found is not None else None
    except CourseError as exc:
        raise pytest.UsageError(f"--grade: {exc}") from None
    if course is None:
        return RunConfig(check_timeout=timeout)
    return RunConfig(corpus_path=course.corpus, check_timeout=timeout, course=course)


# ------------------------------------------------------------------ the grading session (only with --grade)


class GraderUnavailable(Exception):
    """The grading could not run (not the submission's fault): every item says why."""


class GradingSession:
    """One ``--grade DIR`` run: its settings, the plan once collected, the report once graded; its hooks
    replace the session's collection and add the score to pytest's summary."""

    def __init__(self, folder: Path, config: "RunConfig") -> None:
        self.folder = folder
        self.config = config
        self.plan: Optional["Plan"] = None
        self.report: Optional["GradingReport"] = None
        self.results: dict[str, "CheckResult"] = {}
        #: why the grading could not run, once it was tried
        self.failure: Optional[str] = None
        #: ``wanted(exercise, check name)``: whether the command line's paths and node ids select a check
        self.wanted: Callable[[str, str], bool] = lambda exercise, check: True
        #: check items this session runs (fewer than the plan's checks after ``-k`` or node ids)
        self.selected = 0

    # -- hooks

    def pytest_report_header(self, config: pytest.Config) -> str:
        import grader

        course = self.config.course
        setup = f"course configuration {course.path}" if course is not None else "the grader's default settings"
        return f"rnn-grader {grader.__version__}: grading {self.folder} with {setup}"

    def pytest_collection(self, session: pytest.Session) -> None:
        # here, so that a bad configuration or path is a usage error rather than a collection error
        self.wanted = _wanted(session.config, self.folder)
        self.make_plan()

    @pytest.hookimpl(tryfirst=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Optional[pytest.CollectReport]:
        """The session collects the grading's exercises instead of the test paths."""
        if not isinstance(collector, pytest.Session):
            return None
        from grader.registry import file_name

        assert self.plan is not None
        exercises = []
        for exercise in self.plan.exercises:
            # with the checks of a device this machine lacks, which are reported as skipped
            checks = [c for c in (*self.plan.checks, *self.plan.unavailable)
                      if c.exercise == exercise.name and self.wanted(exercise.name, c.name)]
            if checks:
                path = self.folder / file_name(exercise.name)
                exercises.append(ExerciseFile.from_parent(collector, name=exercise.name, path=path,
                                                          nodeid=_node_id(collector.config, path),
                                                          title=exercise.title, checks=checks))
        return pytest.CollectReport(collector.nodeid, "passed", None, exercises)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selected = len(session.items)  # after -k, -m and --lf chose

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item) -> Generator[None, Any, Any]:
        report = yield
        # a skipped check points at the student's function, not at the line of this module that skipped it
        if isinstance(item, CheckItem) and report.skipped and isinstance(report.longrepr, tuple):
            path, line, _ = item.location
            report.longrepr = (path, None if line is None else line + 1, report.longrepr[2])
        return report

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.report is None and self.failure is None:
            return  # nothing graded: --collect-only, or every check deselected
        from grader.report.formatting import fmt_percent, fmt_score, one_line

        tr = terminalreporter
        tr.write_sep("=", f"rnn-grader: {self.folder}")
        if self.report is None:
            tr.write_line(str(self.failure), red=True)
            return
        report = self.report
        if report.problems:
            tr.write_line("File problems:", bold=True)
            for problem in report.problems:
                error = problem.severity == "error"
                tr.write_line(f"  {problem.severity}  {one_line(problem.where, 1000)}: "
                              f"{one_line(problem.message, 1000)}", red=error, yellow=not error)
        for notice in report.notices:
            tr.write_line(f"Note: {one_line(notice, 1000)}")
        if report.configuration:
            tr.write_line(f"Configuration: {one_line(report.configuration, 1000)}")
        score = (f"Score: {fmt_score(report.points, report.max_points)} "
                 f"({fmt_percent(report.points, report.max_points)}%)")
        if self.plan is not None and self.selected < len(self.plan.checks):
            score += f" for all {len(self.plan.checks)} checks, also those not selected in this run"
        tr.write_line(score, bold=True)

    # -- planning and grading

    def make_plan(self) -> None:
        """Plan as ``grade --list-checks`` does; this imports torch, which only ``--grade`` sessions pay for."""
        from grader.course import CourseError
        from grader.judge import engine
        from grader.judge.single import judge_setup
        from grader.packs import PackError

        if self.config.corpus_path is not None:
            from grader.corpus import CorpusError, load_corpus

            try:
                load_corpus(self.config.corpus_path)
            except CorpusError as exc:
                raise pytest.UsageError(f"--grade: {exc}") from None
        try:
            config, pm = judge_setup(self.config, reporters=False)  # with the devices grading runs on
            self.plan = engine.plan(pm, config)
        except (CourseError, PackError, ValueError) as exc:
            raise pytest.UsageError(f"--grade: {exc}") from None

    def result(self, check_id: str) -> "CheckResult":
        """The check's result, grading the whole folder the first time any result is asked for."""
        if self.report is None and self.failure is None:
            self._grade()
        if self.failure is not None:
            raise GraderUnavailable(self.failure)
        if check_id not in self.results:
            raise GraderUnavailable(f"the grading has no result for {check_id}")
        return self.results[check_id]

    def _grade(self) -> None:
        """Grade the folder as ``grade DIR`` and the Gradescope autograder do."""
        from grader.course import CourseError
        from grader.judge.runners import RunnerError
        from grader.judge.single import grade_folder
        from grader.packs import PackError

        try:
            self.report = grade_folder(self.folder, self.config, reporters=False).report
        except (RunnerError, CourseError, PackError) as exc:
            self.failure = f"the grader could not run: {exc}"
            return
        except Exception as exc:  # a fault of the grader: its traceback shows once, at the first check
            self.failure = f"the grader failed ({type(exc).__name__}: {exc}); see the first check's error"
            raise
        self.results = {c.check_id: c for c in (*self.report.all_checks(), *self.report.skipped_here)}


_SESSION = pytest.StashKey[GradingSession]()


def _node_id(config: pytest.Config, path: Path) -> str:
    """``path`` as pytest names files in node ids: relative to the rootdir, with ``/``."""
    try:
        return os.path.relpath(path, config.rootpath).replace(os.sep, "/")
    except ValueError:  # another drive (Windows): nothing is relative to the rootdir
        return path.as_posix()


def _wanted(config: pytest.Config, folder: Path) -> Callable[[str, str], bool]:
    """Which checks the command line's paths and node ids select (all when it gives none).

    An IDE runs one test as ``pytest --grade DIR DIR/rnn_scratch.py::rnn.forward``; pytest itself only
    checks that such paths exist, since the session does not collect them.
    """
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return lambda exercise, check: True
    chosen: list[tuple[Optional[str], Optional[str]]] = []  # (exercise, check); None: all of them
    for arg in config.args:
        path_text, *parts = arg.split("[")[0].split("::")
        path = (config.invocation_params.dir / path_text).resolve()
        if path == folder or path in folder.parents:
            chosen.append((None, None))
        elif path.parent == folder and path.suffix == ".py":
            chosen.append((path.stem, parts[0] if parts else None))
        else:
            raise pytest.UsageError(f"{arg} is not part of the grading of {folder}: with --grade, pytest "
                                    "runs only the checks; run other tests in a separate pytest run")
    return lambda exercise, check: any(e in (None, exercise) and c in (None, check) for e, c in chosen)


# ------------------------------------------------------------------ the items


class ExerciseFile(pytest.Collector):
    """One exercise: its checks, under the name of the file that holds it in the submission."""

    def __init__(self, *, title: str, checks: list["Check"], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.checks = checks

    def collect(self) -> list["CheckItem"]:
        lines = _def_lines(self.path)
        return [CheckItem.from_parent(self, name=check.name, check=check, line=lines.get(check.hook))
                for check in self.checks]

    def reportinfo(self) -> tuple[Path, Optional[int], str]:
        return self.path, None, f"{self.name}: {self.title}"


def _def_lines(path: Path) -> dict[str, int]:
    """0-based line of each top-level ``def`` in a file, read as text (student code never runs here)."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > _SCAN_LIMIT:
            return {}
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    lines: dict[str, int] = {}
    for match in _TOP_LEVEL_DEF.finditer(text):
        lines.setdefault(match.group(1), text.count("\n", 0, match.start()))
    return lines


class CheckNotPassed(Exception):
    """A check that did not pass; :meth:`CheckItem.repr_failure` shows its message, not a traceback."""

    def __init__(self, result: "CheckResult") -> None:
        super().__init__(result.message)
        self.result = result


class CheckItem(pytest.Item):
    """One check; it passes, fails or is skipped as the check's result says."""

    def __init__(self, *, check: "Check", line: Optional[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.line = line
        self.result: Optional["CheckResult"] = None

    def reportinfo(self) -> tuple[Path, Optional[int], str]:
        return self.path, self.line, f"{self.check.id}: {self.check.title}"

    def setup(self) -> None:
        # grading is the grader's work, not the check's: a grader that cannot run is an error at setup
        why = None
        try:
            self.result = self.config.stash[_SESSION].result(self.check.id)
        except GraderUnavailable as exc:
            why = str(exc)
        if why is not None:  # the reason alone: the grader's stack is no help to a student
            pytest.fail(why, pytrace=False)

    def runtest(self) -> None:
        from grader.report.formatting import fmt_points
        from grader.results import PASSED, SKIPPED

        result = self.result
        assert result is not None
        self.user_properties += [("points", fmt_points(result.points)), ("max_points", fmt_points(result.max_points)),
                                 ("status", result.status)]
        if result.output:
            self.add_report_section("call", "output", _clean(result.output))
        if result.status == PASSED:
            return
        if result.status == SKIPPED:
            pytest.skip(_one_line(result.message) or "cannot run here")
        raise CheckNotPassed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckNotPassed):
            # --tb=line: pytest prints the one line (reprcrash) itself
            brief = self.config.getoption("tbstyle", "auto") == "line"
            return CheckFailure(excinfo.value.result, self.location, brief)
        return super().repr_failure(excinfo, style=style)


# ------------------------------------------------------------------ how a check that did not pass reads


#: ERROR and NOT_IMPLEMENTED are named: pytest counts both as failures
_STATUS_WORDS = {"failed": "failed", "error": "error", "not_implemented": "not implemented", "integrity": "integrity"}


def failure_text(result: "CheckResult") -> tuple[str, str]:
    """``(headline, whole text)`` of a check that did not pass: status, points and message, then details."""
    from grader.report.formatting import fmt_score

    status = _STATUS_WORDS.get(result.status, result.status.replace("_", " "))
    headline = f"{status} ({fmt_score(result.points, result.max_points)} points): {_one_line(result.message)}"
    body = [headline]
    if result.details:
        body += ["", *_clean(result.details).splitlines()]
    return headline, "\n".join(body)


@dataclass(frozen=True)
class _Crash:
    """Where and why, as pytest's one-line summaries (``-ra``, ``--tb=line``, JUnit's message) read it."""

    path: str
    lineno: Optional[int]
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{'' if self.lineno is None else self.lineno + 1}: {self.message}"


class CheckFailure:
    """A failed check as pytest shows it: the student-facing message and details, no grader traceback."""

    def __init__(self, result: "CheckResult", location: tuple[str, Optional[int], str], brief: bool = False) -> None:
        headline, self.text = failure_text(result)
        self.reprcrash = _Crash(location[0], location[1], headline)
        self.brief = brief

    def toterminal(self, tw: Any) -> None:
        if self.brief:
            return
        for number, line in enumerate(self.text.splitlines()):
            tw.line(line, red=number == 0, bold=number == 0)

    def __str__(self) -> str:
        return self.text


def _clean(text: str) -> str:
    from grader.report.formatting import clean_text

    return clean_text(text)


def _one_line(text: str) -> str:
    from grader.report.formatting import one_line

    return one_line(text, 1000)
