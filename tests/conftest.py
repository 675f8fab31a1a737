"""Shared fixtures: one runner for the whole session, and helpers to grade a folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference"
SHARED_CORPUS = REPO.parent / "shared" / "data" / "timemachine.txt"


@pytest.fixture(scope="session")
def runner():
    import torch

    from grader.pool import Runner

    torch.set_num_threads(1)
    with Runner() as r:
        r.start()
        yield r


@pytest.fixture(scope="session")
def grading(runner):
    """``grading(folder, config=None) -> GradingReport`` with the built-in checks."""
    from grader import engine
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
