"""Grading one folder from start to end: what ``grade DIR``, the Gradescope autograder and
``pytest --grade DIR`` share.

The runner is launched first, so that it imports torch while this process does the same and
computes the reference's side of every check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from grader.config import RunConfig
from grader.judge.progress import PREPARING, STARTING, Progress, ProgressEvent, tell
from grader.results import GradingReport

if TYPE_CHECKING:  # pragma: no cover
    from grader.judge.runners import Runner


def judge_setup(config: RunConfig, reporters: bool = True) -> tuple[RunConfig, Any]:
    """Torch as the runner has it, the devices there are, and the plugin manager (with the packs).

    :raises grader.packs.PackError: a pack cannot be loaded.
    """
    import torch

    from grader import refcache
    from grader.plugins import get_plugin_manager

    # the reference's computations come from the disk cache when they can; never a secret seed's inputs
    refcache.configure(False if config.secret else None)
    torch.set_num_threads(1)  # the judge's reference runs must match the runner's
    if torch.cuda.is_available():
        config = replace(config, extra_devices=("cuda",))
    return config, get_plugin_manager(reporters=reporters, plugin_dirs=config.plugin_dirs)


@dataclass(frozen=True)
class Graded:
    report: GradingReport
    #: the plugin manager it was graded with (its reporters, when asked for)
    pm: Any
    config: RunConfig
    #: whether the sandbox isolated the submission's code
    isolated: bool


def new_runner(config: RunConfig) -> "Runner":
    """A runner (not started) isolated as ``config`` asks."""
    from grader.judge.runners import Runner

    return Runner(sandbox="require" if config.isolation == "require" else "auto")


def grade_folder(folder: Path, config: RunConfig, reporters: bool = True, progress: Optional[Progress] = None,
                 runner: Optional["Runner"] = None) -> Graded:
    """Grade ``folder`` with a runner of its own, or with ``runner`` (left running for the next grading;
    one that died since is started again).

    :param progress: hears each phase of the grading and each run that came back (the CLI's progress line).
    :raises grader.judge.runners.RunnerError: the runner could not start (or not isolated, when required).
    :raises grader.course.CourseError: the course configuration names what does not exist.
    :raises grader.packs.PackError: a pack cannot be loaded.
    """
    from grader.judge import engine

    started = time.monotonic()
    tell(progress, ProgressEvent(STARTING))
    own = runner is None
    if own:
        runner = new_runner(config)
        runner.launch()
    try:
        config, pm = judge_setup(config, reporters)
        tell(progress, ProgressEvent(PREPARING))
        the_plan = None  # with a secret the inputs depend on the submission: engine.grade plans once it is read
        if not config.secret:
            the_plan = engine.plan(pm, config)
            engine.warm_up(the_plan)  # the reference's side of every check, while the runner starts
        report = engine.grade(folder, config, pm, runner, the_plan, progress=progress)
        # "graded in": what the student waited, the runner's start and the planning included
        report = replace(report, seconds=round(time.monotonic() - started, 3))
    finally:
        if own:
            runner.stop()
    return Graded(report, pm, config, runner.isolated)
