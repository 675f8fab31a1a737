"""Shared fixtures: one runner for the whole session, and helpers to grade a folder."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest

from grader import registry

#: the reference's disk cache of this test session (shared by every `grade` it runs, and by the parallel
#: workers, which inherit the controller's), never the user's
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("GRADER_TEST_CACHE_DIR"):
    CACHE_DIR = os.environ["GRADER_TEST_CACHE_DIR"]
else:
    CACHE_DIR = tempfile.mkdtemp(prefix="grader-test-cache-")
    os.environ["GRADER_TEST_CACHE_DIR"] = CACHE_DIR
    atexit.register(shutil.rmtree, CACHE_DIR, ignore_errors=True)
os.environ["GRADER_CACHE_DIR"] = CACHE_DIR

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference"
SHARED_CORPUS = REPO.parent / "shared" / "data" / "timemachine.txt"
#: which exercise each hook belongs to, and which file holds it, as the registry says
EXERCISE_OF = dict(registry.EXERCISE_OF_HOOK)
FILE_OF = {hook: registry.file_name(exercise) for hook, exercise in EXERCISE_OF.items()}
EXERCISE_OF_FILE = {registry.file_name(exercise.name): exercise.name for exercise in registry.EXERCISES}


def exercises_hooks(*exercises: str) -> dict:
    """``{hook: exercise}`` for the hooks of these exercises."""
    return {hook: exercise for hook, exercise in EXERCISE_OF.items() if exercise in exercises}


@pytest.fixture(scope="session")
def runner():
    import torch

    from grader.judge.runners import Runner

    torch.set_num_threads(1)
    with Runner() as r:
        r.start()
        yield r


@pytest.fixture(scope="session")
def grading(runner):
    """``grading(folder, config=None) -> GradingReport`` with the built-in checks."""
    from grader.judge import engine
    from grader.config import RunConfig
    from grader.plugins import get_plugin_manager

    pm = get_plugin_manager()
    default = RunConfig()
    plans = {}

    def grade(folder: Path, config: Optional[RunConfig] = None):
        config = config or default
        if config not in plans:
            plans[config] = engine.plan(pm, config)
        return engine.grade(folder, config, pm, runner, plans[config])

    return grade


@pytest.fixture
def submission(tmp_path) -> Callable[..., Path]:
    """``submission(files={name: source}, base=True)``: a folder with the reference files
    (when ``base``) overridden or extended by ``files``; a value of None removes a file."""

    def make(files: Optional[dict] = None, base: bool = True) -> Path:
        folder = tmp_path / "submission"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        if base:
            for path in REFERENCE.glob("*.py"):
                if path.name != "__init__.py":
                    shutil.copyfile(path, folder / path.name)
        for name, source in (files or {}).items():
            if source is None:
                (folder / name).unlink(missing_ok=True)
            else:
                (folder / name).write_text(source)
        return folder

    return make


def mutate(filename: str, old: str, new: str, count: int = 1) -> dict:
    """The reference file with ``old`` replaced by ``new``; fails loudly if ``old`` is absent."""
    source = (REFERENCE / filename).read_text()
    assert source.count(old) >= count, f"{old!r} not found in reference/{filename}"
    return {filename: source.replace(old, new)}


def by_exercise(report) -> dict:
    return {ex.name: ex for ex in report.exercises}


def lost(report) -> dict:
    """Points lost per exercise (only exercises that lost any)."""
    return {ex.name: round(ex.max_points - ex.points, 6) for ex in report.exercises if ex.points < ex.max_points}


def edits(filename: str, *pairs: tuple[str, str]) -> dict:
    """Several replacements in one reference file."""
    text = (REFERENCE / filename).read_text()
    for old, new in pairs:
        assert old in text, f"{old!r} not found in reference/{filename}"
        text = text.replace(old, new)
    return {filename: text}


@dataclass(frozen=True)
class Bug:
    """One realistic mistake for the bug zoo."""

    hook: str
    files: dict
    #: checks that must not pass; the first is the one whose message is read
    fails: tuple[str, ...]
    #: at least one of these appears (case-insensitively) in the first failing check's message
    words: tuple[str, ...]
    #: checks of the same exercise that must still pass
    passes: tuple[str, ...] = field(default=())
    #: the misconception that names the mistake on the first failing check, when the catalogue has one
    #: (otherwise ``words`` must name the mistake in the check's own message)
    named: str = ""


def rewrite(hook: str, source: str) -> dict:
    """The reference file of ``hook`` with that function replaced by ``source`` (a student's rewrite)."""
    filename = FILE_OF[hook]
    text = (REFERENCE / filename).read_text()
    pattern = re.compile(rf"@hookimpl\ndef {hook}\(.*?(?=\n\n\n@hookimpl|\Z)", re.S)
    assert pattern.search(text), f"{hook} not found in reference/{filename}"
    return {filename: pattern.sub(lambda _: "@hookimpl\n" + source.strip("\n") + "\n", text, count=1)}


def checks_of(report, exercise: str) -> dict:
    """The report's checks of ``exercise`` by id."""
    return {c.check_id: c for c in report.all_checks() if c.check_id.startswith(exercise + ".")}


def listed(checks: dict) -> str:
    """Checks as lines with their status, misconception and message, for assertion messages."""
    return "\n".join(f"  {c.check_id} [{c.status}] ({c.misconception}) {c.message}" for c in checks.values())


def chromium_dom(page: Path, tmp_path: Path, timeout: float = 120) -> str:
    """The DOM of ``page`` after headless Chromium parsed it (callers skip when chromium is not on PATH)."""
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def failures(report) -> str:
    return "\n".join(f"  {c.check_id} [{c.status}] {c.message}" for c in report.all_checks() if c.status != "passed")


def assert_caught_where_it_lives(report, bug: Bug, exercise: str) -> None:
    """The bug's checks fail with a useful word, and only ``exercise`` loses points."""
    shown = failures(report)
    assert not [p for p in report.problems if p.severity == "error"], report.problems
    checks = {c.check_id: c for c in report.all_checks()}
    for check_id in bug.fails:
        assert checks[check_id].status != "passed", f"{check_id} passed:\n{shown}"
        assert checks[check_id].points < checks[check_id].max_points
    for check_id in bug.passes:
        assert checks[check_id].status == "passed", f"{check_id} should pass:\n{shown}"
    # isolation: every check of another hook kept its points
    elsewhere = [c.check_id for c in report.all_checks() if bug.hook not in c.hooks and c.points < c.max_points]
    assert not elsewhere, f"{bug.hook} mistake charged to {elsewhere}:\n{shown}"
    assert set(lost(report)) == {exercise}, shown
    least = sum(checks[c].max_points for c in bug.fails)
    assert report.max_points - report.points >= least - 1e-6
    carrier = checks[bug.fails[0]]
    message = carrier.message.lower()
    assert any(w.lower() in message for w in bug.words), f"none of {bug.words} in: {carrier.message}"
    assert carrier.misconception == bug.named, f"expected misconception {bug.named!r}, got {carrier.misconception!r}:\n{shown}"
    assert_messages_readable(report)


def assert_messages_readable(report) -> None:
    """Every failing message is whole (nothing cut off) and no cause is told twice in the same words."""
    failing = [c for c in report.all_checks() if c.status != "passed"]
    cut = [c.check_id for c in failing if "…" in c.message or c.message.rstrip().endswith("...")]
    assert not cut, "messages cut off:\n" + failures(report)
    # a "same cause as" pointer is the one repetition allowed: it names the check that tells the cause
    messages = [c.message for c in failing if c.message and not c.same_cause_as]
    repeated = sorted({m for m in messages if messages.count(m) > 1})
    assert not repeated, f"the same message on several checks: {repeated}"


def assert_reports_written(report) -> None:
    """Every reporter copes with the report: results.json parses and report.html is not empty."""
    import json
    import tempfile

    from grader.cli import write_reports
    from grader.config import RunConfig
    from grader.plugins import get_plugin_manager

    with tempfile.TemporaryDirectory() as out:
        assert write_reports(get_plugin_manager(reporters=True), report, RunConfig(out_dir=Path(out)))
        assert json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))["tests"]
        assert len((Path(out) / "report.html").read_text(encoding="utf-8")) > 1000
