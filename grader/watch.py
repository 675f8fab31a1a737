"""``grade --watch DIR``: grade, then grade again whenever a file of DIR is saved, showing what changed.

The first grading prints the whole report; each later one prints only the checks whose status
or points changed, the file problems that appeared or went away, and the new score
(:func:`compare_reports`, :func:`format_changes`). One runner stays warm across gradings, so a
regrade skips starting it. Files are watched with ``watchfiles`` (the operating system's change
notifications) in a thread, so a save made during a grading is graded right after it.
"""

from __future__ import annotations

import queue
import shutil
import signal
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from grader.config import RunConfig
from grader.report.formatting import fmt_percent, fmt_points, fmt_score, one_line, status_label
from grader.report.terminal import painted, shown_message
from grader.results import PASSED, CheckResult, FileProblem, GradingReport

#: what a save of which is graded again (notebooks too, where the grader reads them)
WATCHED_SUFFIXES = (".py", ".ipynb")
#: milliseconds without further changes before a burst of them (an editor's temporary file, rename,
#: a formatter run on save) counts as one save
QUIET_MS = 300
#: the longest burst of changes grouped into one grading, in milliseconds
BURST_MS = 1600
#: the most a changed check's message shows under it
MESSAGE_LIMIT = 600


# ------------------------------------------------------------------------------------------ what changed


@dataclass(frozen=True)
class CheckChange:
    """One check whose status or points differ between two gradings (None: not graded in that one)."""

    exercise: str
    title: str
    before: Optional[CheckResult]
    after: Optional[CheckResult]

    @property
    def gained(self) -> float:
        """Points won (negative: lost) since the last grading."""
        return round((self.after.points if self.after else 0.0) - (self.before.points if self.before else 0.0), 6)


@dataclass(frozen=True)
class ReportChanges:
    checks: tuple[CheckChange, ...]
    #: file problems the new grading has and the last did not, and the other way round
    new_problems: tuple[FileProblem, ...]
    solved_problems: tuple[FileProblem, ...]
    before: GradingReport
    after: GradingReport

    @property
    def nothing(self) -> bool:
        """Whether the student would see no difference."""
        return (not self.checks and not self.new_problems and not self.solved_problems
                and _same(self.before.points, self.after.points) and _same(self.before.max_points, self.after.max_points))


def compare_reports(before: GradingReport, after: GradingReport) -> ReportChanges:
    """What changed from ``before`` to ``after``: checks (by id) whose status or points differ, checks that
    appeared or went away, and file problems that appeared or went away."""
    old = {c.check_id: c for c in before.all_checks()}
    new = {c.check_id: c for c in after.all_checks()}
    changed = []
    for check_id, now in new.items():
        was = old.get(check_id)
        if was is None or was.status != now.status or not _same(was.points, now.points):
            changed.append(CheckChange(now.exercise, now.title, was, now))
    changed += [CheckChange(was.exercise, was.title, was, None) for check_id, was in old.items() if check_id not in new]
    old_problems, new_problems = set(before.problems), set(after.problems)
    return ReportChanges(
        checks=tuple(changed),
        new_problems=tuple(p for p in after.problems if p not in old_problems),
        solved_problems=tuple(p for p in before.problems if p not in new_problems),
        before=before, after=after)


def format_changes(changes: ReportChanges, color: bool = False, width: int = 100) -> str:
    """The changes as terminal lines: one per check (its new message under it when it does not pass),
    one per file problem, then the score, or "no change" and the score."""
    after = changes.after
    score = f"{fmt_score(after.points, after.max_points)} ({fmt_percent(after.points, after.max_points)}%)"
    if changes.nothing:
        return f"no change: score {score}\n"
    titles = {c.check_id: one_line(c.title) for c in after.all_checks()}
    lines = []
    for problem in changes.solved_problems:
        lines += _problem_lines(painted("solved", PASSED, color), problem, width)
    for problem in changes.new_problems:
        word = "new problem" if problem.severity == "error" else f"new {one_line(problem.severity)}"
        style = "error" if problem.severity == "error" else "warning"
        lines += _problem_lines(painted(word, style, color), problem, width)
    for change in changes.checks:
        lines += _check_change_lines(change, titles, color, width)
    gained = round(after.points - changes.before.points, 6)
    was = fmt_score(changes.before.points, changes.before.max_points)
    lines.append(painted(f"Score: {was} -> {score}", "bold", color)
                 + (f"  {_signed(gained)} point{'' if abs(gained) == 1 else 's'}" if gained else ""))
    return "\n".join(lines) + "\n"


def _problem_lines(label: str, problem: FileProblem, width: int) -> list[str]:
    """A file problem whole, wrapped under its label (what to do is usually at its end)."""
    text = f"{one_line(problem.where)}: {one_line(problem.message, MESSAGE_LIMIT)}"
    rows = textwrap.wrap(text, width=max(width - 6, 40), break_on_hyphens=False) or [""]
    return [f"  {label}: {rows[0]}"] + [f"      {row}" for row in rows[1:]]


def _check_change_lines(change: CheckChange, titles: dict[str, str], color: bool, width: int) -> list[str]:
    name = f"{one_line(change.exercise)}: {one_line(change.title)}"
    if change.after is None:
        head = f"{name}: no longer graded"
    else:
        now = painted(status_label(change.after.status), change.after.status, color)
        if change.before is None:
            head = f"{name}: new, {now} ({fmt_score(change.after.points, change.after.max_points)})"
        else:
            head = f"{name}: {painted(status_label(change.before.status), change.before.status, color)} -> {now}"
    if change.gained and change.before is not None:
        head += f" ({_signed(change.gained)} point{'' if abs(change.gained) == 1 else 's'})"
    lines = [f"  {head}"]
    if change.after is not None and change.after.status != PASSED:  # what to do now: the check's own words
        message = one_line(shown_message(change.after, titles), MESSAGE_LIMIT)
        lines += textwrap.wrap(message, width=max(width, 40), initial_indent="      ", subsequent_indent="      ",
                               break_on_hyphens=False)
    return lines


def _signed(points: float) -> str:
    return ("+" if points > 0 else "-") + fmt_points(abs(points))


def _same(a: float, b: float) -> bool:
    return abs(a - b) < 1e-6


# ------------------------------------------------------------------------------------------ watching


def wanted(path: Union[str, Path]) -> bool:
    """Whether a change to ``path`` is a save to grade: a .py or .ipynb file, not hidden, not an editor's
    swap or backup file, not in ``__pycache__``."""
    path = Path(path)
    name = path.name
    if "__pycache__" in path.parts or name.startswith((".", "#", "~")):
        return False
    return name.endswith(WATCHED_SUFFIXES)


def _watch_files(target: Path, saves: "queue.Queue[Union[list[str], BaseException]]", stop: threading.Event) -> None:
    """Put the names of each burst of saved files on ``saves`` until ``stop`` (an error, when watching ends).

    :param target: a folder, or one file (``grade --watch my.ipynb``), watched in its folder: editors save by
        writing a new file and renaming it over the old one
    """
    import watchfiles

    folder, only = (target, None) if target.is_dir() else (target.parent, target.name)

    def saved(_change: object, path: str) -> bool:
        return wanted(path) and (only is None or Path(path).name == only)

    for polling in (None, True):  # the system's notifications; polling where they are missing or used up
        try:
            for changes in watchfiles.watch(folder, watch_filter=saved, stop_event=stop,
                                            step=QUIET_MS, debounce=BURST_MS, recursive=False, raise_interrupt=False,
                                            force_polling=polling):
                saves.put(sorted({Path(path).name for _, path in changes}))
            return
        except Exception as exc:  # noqa: BLE001 - e.g. the folder was deleted: the main thread says so and stops
            if polling:
                saves.put(exc)


def _next_saves(saves: "queue.Queue[Union[list[str], BaseException]]") -> list[str]:
    """The files saved since the last grading, waiting for the first (a short wait at a time, for Ctrl-C)."""
    names: set[str] = set()
    while True:
        try:
            item = saves.get(timeout=0.5 if not names else 0)
        except queue.Empty:
            if names:
                return sorted(names)
            continue
        if isinstance(item, BaseException):
            raise item
        names.update(item)


def watch(folder: Path, config: RunConfig) -> int:
    """Grade ``folder``, then again on every save, until Ctrl-C (or SIGTERM); the exit status of ``grade``.

    :raises grader.judge.runners.RunnerError: the runner could not start for the first grading.
    :raises grader.course.CourseError: the course configuration names what does not exist.
    :raises grader.packs.PackError: a pack cannot be loaded.
    """
    from grader import cli
    from grader.judge.runners import RunnerError
    from grader.judge.single import new_runner

    if config.out_dir is not None:
        try:
            config.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _say(f"grade: cannot write to {config.out_dir}: {exc}; give --out a folder you can write to")
            return cli.USAGE_ERROR
    saves: "queue.Queue[Union[list[str], BaseException]]" = queue.Queue()
    stop = threading.Event()
    runner = None
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # a polite kill ends like Ctrl-C
    try:
        runner = new_runner(config)
        runner.launch()  # it imports torch while this process does the same
        threading.Thread(target=_watch_files, args=(folder, saves, stop), name="watch", daemon=True).start()
        _say(f"watching {folder}; save a file to grade again, Ctrl-C to stop")
        last: Optional[GradingReport] = None
        saved: list[str] = []
        while True:
            if not folder.exists():  # deleted or moved: nothing will be saved there again
                _say(f"grade: {folder} is gone; stopped watching")
                return cli.USAGE_ERROR
            try:
                last = _grade_and_show(folder, config, runner, last, saved)
            except RunnerError as exc:  # the first time, nothing could ever be graded: the caller says why
                if last is None:
                    raise
                _say(f"grade: the grader could not run: {exc}; save again to retry")
            try:
                saved = _next_saves(saves)
            except Exception as exc:  # noqa: BLE001 - the watch itself ended (e.g. the folder is gone)
                _say(f"grade: stopped watching {folder}: {exc}")
                return cli.GRADER_FAILURE
    except KeyboardInterrupt:
        _say("stopped watching")
        return cli.OK
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        stop.set()
        if runner is not None:
            runner.stop()


def _grade_and_show(folder: Path, config: RunConfig, runner, last: Optional[GradingReport],
                    saved: list[str]) -> GradingReport:
    """One grading: the whole report the first time (and each time with -v), else what changed since ``last``."""
    from grader import cli
    from grader.judge.single import grade_folder
    from grader.report.dispatch import write_reports
    from grader.report.progress_line import progress_line

    if saved:
        _say(f"{', '.join(saved)} changed: grading again")
    progress = progress_line(sys.stderr, str(folder), config.quiet)
    try:
        graded = grade_folder(folder, config, progress=progress, runner=runner)
    finally:
        if progress is not None:
            progress.close()
    report, pm, config = cli.reported(graded), graded.pm, graded.config
    if last is not None:
        print()
    if last is not None and not config.verbose:  # the files are rewritten; the terminal shows what changed
        pm.unregister(name="grader.report.terminal")
    write_reports(pm, report, config)
    if last is not None:
        if config.verbose:
            print()
        print(painted(f"graded again in {fmt_points(report.seconds)} s; since the last grading:", "dim", config.color))
        width = min(max(shutil.get_terminal_size((100, 24)).columns, 60), 160)
        print(format_changes(compare_reports(last, report), config.color, width), end="")
    sys.stdout.flush()
    return report


def _say(text: str) -> None:
    """A line about the watching itself, on stderr (stdout has the reports)."""
    print(text, file=sys.stderr, flush=True)
