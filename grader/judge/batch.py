"""Grade a class: one student per entry of a folder, on a pool of warm runners, resumable.

Each student is found (:mod:`grader.judge.intake`), staged (:mod:`grader.judge.staging`), graded by :func:`engine.grade` on one of the
pool's runners and written to ``RESULTS/<student>/``: the reports of a single ``grade``, then
``record.json`` (:mod:`grader.judge.records`), last and atomically, which marks the student done.
The class files (``gradebook.csv``, ``gradebook-canvas.csv``, ``summary.html``) are rebuilt from the
records after every student, so they always agree with what is on disk. A re-run skips students
whose submission and grading configuration are unchanged.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import queue
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from grader.config import RunConfig
from grader.judge import engine, intake, records, staging
from grader.judge.runners import Runner, RunnerError
from grader.report.dispatch import warn, write_reports

#: a runner is replaced after this many students, so that nothing a run leaves can build up
RECYCLE_AFTER = 50
#: where students are staged while graded (inside RESULTS, so a killed batch leaves nothing elsewhere)
STAGING = ".staging"
#: seconds between two rewrites of summary.html while the batch runs (it is always written at the end)
SUMMARY_EVERY = 10.0


@dataclass
class BatchOptions:
    submissions: Path
    out: Path
    config: RunConfig
    jobs: int = 1
    force: bool = False
    only: tuple[str, ...] = ()
    #: "auto" (sandbox where it works), "require" or "off"; passed to every runner
    sandbox: str = "auto"
    progress: Optional[bool] = None  # None: a bar when stderr is a terminal, log lines otherwise


@dataclass
class BatchOutcome:
    graded: int = 0
    not_gradable: int = 0  # nothing to grade: empty, unreadable archive, duplicate id ... (their status says)
    skipped: int = 0
    failed_to_grade: int = 0  # the grader's fault (a runner that would not start, a bug): graded again next run
    interrupted: bool = False
    seconds: float = 0.0
    #: seconds from the start until the first student could be graded (runners ready, reference computed)
    startup_seconds: float = 0.0
    #: runner processes started (recycled ones and restarts after a crash included)
    runner_starts: int = 0
    notices: list[str] = field(default_factory=list)


class BatchUsageError(ValueError):
    """The command asks for something the submissions folder does not have (e.g. --only an unknown student)."""


def default_jobs() -> int:
    """One runner per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Batch:
    def __init__(self, options: BatchOptions, pm: Any, found: intake.Intake, say: Callable[[str], None] = print):
        self.options, self.pm, self.found, self.say = options, pm, found, say
        self.out = options.out
        self.config_key = records.config_key(options.config)
        self.records: dict[str, dict] = records.read_all(self.out)
        self.run_status: dict[str, str] = {}  # student -> what this run did ("skipped-unchanged")
        self.lock = threading.Lock()
        self.outcome = BatchOutcome()
        self.summary_written = 0.0
        self.started = time.monotonic()

    # -- what to grade ------------------------------------------------------

    def todo(self) -> list[tuple[intake.Entry, str]]:
        """Entries to grade now, with their fingerprints; the others are recorded as skipped."""
        known = {entry.student for entry in self.found.entries}
        for student in self.options.only:
            if student not in known:
                close = difflib.get_close_matches(student, sorted(known), n=3)
                hint = (f"; did you mean {', '.join(close)}?" if close
                        else "; students are named after their entries (the `student` column of gradebook.csv)")
                raise BatchUsageError(f"--only {student}: no such student in {self.options.submissions}{hint}")
        work = []
        for entry, fingerprint in _one_per_student(self.found.entries):
            if self.options.only and entry.student not in self.options.only:
                continue
            done = self.records.get(entry.student)
            if (not self.options.force and not self.options.only and done is not None
                    and records.unchanged(done, fingerprint, self.config_key, self.out / entry.student)):
                self.run_status[entry.student] = records.SKIPPED
                self.outcome.skipped += 1
                continue
            work.append((entry, fingerprint))
        return work

    # -- one student --------------------------------------------------------

    def grade_one(self, entry: intake.Entry, fingerprint: str, runner: Runner, the_plan: Optional[engine.Plan]) -> dict:
        folder = self.out / STAGING / entry.student
        shutil.rmtree(folder, ignore_errors=True)
        student_dir = self.out / entry.student
        try:
            if entry.problem is not None:
                status, message = entry.problem
                return records.not_graded(entry, fingerprint, self.config_key, status, message, notes=entry.notes)
            staged = staging.stage(entry, folder)
            if staged.folder is None:
                return records.not_graded(entry, fingerprint, self.config_key, staged.status or records.EMPTY,
                                          staged.message, notes=staged.notes)
            report = engine.grade(staged.folder, self.options.config, self.pm, runner, the_plan)
            report = replace(report, submission=str(self.options.submissions / entry.source),
                             notices=report.notices + tuple(staged.notes))
            student_dir.mkdir(parents=True, exist_ok=True)
            written = write_reports(self.pm, report, replace(self.options.config, out_dir=student_dir))
            return records.graded(entry, fingerprint, self.config_key, report, reports_written=written)
        except RunnerError:
            raise  # the runner's fault, not the student's: the worker hands the student back
        except Exception as exc:  # noqa: BLE001 - a grader bug costs this student's grading, not the batch
            return records.not_graded(entry, fingerprint, self.config_key, records.GRADER_ERROR,
                                      f"the grader failed on this submission ({type(exc).__name__}: {exc}); "
                                      "please report it; the student is graded again on the next run")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def finish(self, record: dict, seconds: float) -> None:
        """Write the record (marking the student done) and the class files, under the lock."""
        record["seconds"] = round(seconds, 3)
        with self.lock:
            records.write(self.out / record["student"], record)
            self.records[record["student"]] = record
            self.run_status.pop(record["student"], None)
            if record["status"] in records.GRADER_FAULTS:
                self.outcome.failed_to_grade += 1
            elif record["score"] is None:
                self.outcome.not_gradable += 1
            else:
                self.outcome.graded += 1
            self.write_class_files(final=False)

    def write_class_files(self, final: bool) -> None:
        rows = records.rows_for_gradebook(self.records, self.run_status)
        exercises = records.exercise_names(self.pm)
        try:
            records.write_gradebooks(self.out, rows, exercises)
            now = time.monotonic()
            if final or now - self.summary_written >= SUMMARY_EVERY:
                records.write_class_summary(self.out, list(self.records.values()), exercises)
                self.summary_written = now
        except OSError as exc:
            warn(f"grade: the class files in {self.out} could not be written: {exc}")


def _one_per_student(entries: Iterable[intake.Entry]) -> list[tuple[intake.Entry, str]]:
    """Each student once, with the fingerprint of what they submitted.

    Entries sharing an id (``alice/`` and ``alice.zip``) all carry the same duplicate-id problem:
    one record stands for them, and a change to any of them counts as a change.
    """
    by_student: dict[str, list[intake.Entry]] = {}
    for entry in entries:
        by_student.setdefault(entry.student, []).append(entry)
    chosen = []
    for student in sorted(by_student):
        group = sorted(by_student[student], key=lambda e: e.source)
        prints = [staging.fingerprint(entry) for entry in group]
        fingerprint = prints[0] if len(prints) == 1 else hashlib.sha256("\0".join(prints).encode()).hexdigest()
        chosen.append((group[0], fingerprint))
    return chosen


def run_batch(options: BatchOptions, pm: Any, say: Callable[[str], None] = print) -> BatchOutcome:
    """Grade every student of ``options.submissions`` into ``options.out``.

    Raises :class:`RunnerError` only when no runner can start at all.
    """
    started = time.monotonic()
    found = intake.discover(options.submissions)
    if found.problem:
        raise BatchUsageError(found.problem)
    say(f"{options.submissions}: {found.description}")
    if found.ignored:
        shown = ", ".join(found.ignored[:5]) + (f" and {len(found.ignored) - 5} more" if len(found.ignored) > 5 else "")
        say(f"  not submissions, ignored: {shown}")
    options.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(options.out / STAGING, ignore_errors=True)  # what a killed run was staging
    batch = Batch(options, pm, found, say)
    batch.started = started
    work = batch.todo()
    if batch.outcome.skipped:
        say(f"  {batch.outcome.skipped} unchanged since their last grading, skipped (--force grades them again)")
    strays = sorted(set(batch.records) - {e.student for e in found.entries})
    if strays:
        say(f"  {len(strays)} student(s) in {options.out} are not in {options.submissions}; their rows are kept: "
            + ", ".join(strays[:5]) + (" ..." if len(strays) > 5 else ""))
    if work:
        _grade_all(batch, work, options)
    batch.write_class_files(final=True)
    batch.outcome.seconds = time.monotonic() - batch.started
    return batch.outcome


def _grade_all(batch: Batch, work: list[tuple[intake.Entry, str]], options: BatchOptions) -> None:
    jobs = max(1, min(options.jobs, len(work)))
    runners = [Runner(sandbox=options.sandbox) for _ in range(jobs)]
    for runner in runners:
        runner.launch()  # all import torch at once, while the judge computes the reference's side
    the_plan = None
    if not options.config.secret:  # with a secret, each submission has inputs of its own
        the_plan = engine.plan(batch.pm, options.config)
        engine.warm_up(the_plan)
    runners[0].wait_ready()  # a runner that cannot start at all stops the batch here, before anything is written
    batch.outcome.startup_seconds = time.monotonic() - batch.started
    batch.outcome.notices += runners[0].notices
    todo: "queue.Queue[tuple[intake.Entry, str]]" = queue.Queue()
    for item in sorted(work, key=lambda item: item[0].student):
        todo.put(item)
    progress = _Progress(len(work), options.progress, batch.say)
    stop = threading.Event()

    def worker(runner: Runner) -> None:
        served = 0
        try:
            while not stop.is_set():
                try:
                    entry, fingerprint = todo.get_nowait()
                except queue.Empty:
                    return
                if served >= RECYCLE_AFTER:  # a fresh runner now and then: nothing a run left can build up
                    runner.stop()
                    with batch.lock:
                        batch.outcome.runner_starts += runner.starts
                    runner = Runner(sandbox=options.sandbox)
                    served = 0
                progress.start(entry.student)
                t0 = time.monotonic()
                try:
                    record = batch.grade_one(entry, fingerprint, runner, the_plan)
                except RunnerError as exc:  # this runner cannot start again: hand the student to the others
                    todo.put((entry, fingerprint))
                    progress.drop(entry.student)
                    with batch.lock:
                        batch.outcome.notices.append(f"a grading runner stopped for good: {exc}")
                    return
                if stop.is_set():
                    return  # interrupted mid-grading: this student is graded again next run
                batch.finish(record, time.monotonic() - t0)
                progress.done(entry.student, record)
                served += 1
        finally:
            runner.stop()
            with batch.lock:
                batch.outcome.runner_starts += runner.starts

    threads = [threading.Thread(target=worker, args=(r,), daemon=True, name=f"batch-{i}") for i, r in enumerate(runners)]
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # a polite kill ends like Ctrl-C
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
    except KeyboardInterrupt:
        stop.set()
        batch.outcome.interrupted = True
    else:
        if not todo.empty():  # every runner stopped for good
            batch.outcome.failed_to_grade += todo.qsize()
            batch.outcome.notices.append(f"{todo.qsize()} student(s) were not graded: no grading runner could run")
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
        for runner in runners:
            runner.stop()
        progress.close()


class _Progress:
    """A tqdm bar on a terminal (count, students being graded, ETA); one log line per student otherwise."""

    def __init__(self, total: int, bar: Optional[bool], say: Callable[[str], None]):
        self.total, self.count, self.say = total, 0, say
        self.current: list[str] = []
        self.lock = threading.Lock()
        self.bar = None
        if bar is None:
            bar = sys.stderr.isatty()
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="student", dynamic_ncols=True, file=sys.stderr,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")

    def start(self, student: str) -> None:
        with self.lock:
            self.current.append(student)
            self._show()

    def done(self, student: str, record: dict) -> None:
        with self.lock:
            self.count += 1
            if student in self.current:
                self.current.remove(student)
            if self.bar is not None:
                self.bar.update(1)
                self._show()
            else:
                self.say(f"[{self.count}/{self.total}] {records.one_line(record)}")

    def drop(self, student: str) -> None:
        with self.lock:
            if student in self.current:
                self.current.remove(student)

    def _show(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str("grading " + ", ".join(self.current[:4]), refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
