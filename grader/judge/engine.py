"""From a submission folder to a :class:`GradingReport`: plan the checks, run their probes, judge.

Planning collects the checks from every plugin; warming up computes the reference's side of
each probe (while the runner starts). Grading loads the submission, sends one request per
distinct :class:`~grader.definitions.Probe` to the runner, longest first, and lets every
check reading a run judge its reply. Whatever went wrong in the runner costs exactly the
checks reading that run.
"""

from __future__ import annotations

import ast
import hashlib
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import grader
from grader.config import RunConfig
from grader.corpus import corpus_facts, corpus_spec
from grader.packs import PACK_PREFIX, probe_source
from grader.definitions import Check, Exercise, Misconception, Probe
from grader.judge.answers import parts_without
from grader.judge.diagnosis import applicable, catalogue, diagnose, tell_each_cause_once
from grader.judge.loading import LoadedFiles, load, read_graded, run_timeout
from grader.judge.progress import LOADING, CheckTally, Progress, ProgressEvent, tell
from grader.judge.runners import Runner
from grader.judge.verdicts import decode, verdict_for
from grader.protocol import DEFAULT_LIMITS, Limits, Request, Status, without_staging
from grader.notebooks import point_at_notebooks
from grader.registry import file_name
from grader.secret import submission_secret
from grader.results import (ERROR, INTEGRITY, NOT_IMPLEMENTED, PASSED, SKIPPED, CheckResult, ExerciseResult, FileProblem,
                            GradingReport, Verdict)

#: requests queued at the runner at once: the next is staged while one runs
WINDOW = 2
#: said when a course's secret seed drew the inputs, so a student knows why they differ from a local run
SECRET_NOTICE = ("inputs drawn from the course's secret seed: sizes and values differ from the published ones "
                 "that `grade` uses on your machine, so the figures differ too; the checks are the same")
#: said once when a check on the meta device did not pass, so its messages need no explaining each time
META_NOTICE = ("'meta' is a PyTorch device that stands in for a GPU here: tensors on it have shapes but no data. "
               "A check on it fails when your code creates a tensor on a fixed device (or the CPU) instead of the "
               "`device` it is given, or moves data with .numpy() or .item(); create every tensor with device=device")
#: verdicts a plan remembers at most (each is small; the digests, not the results, are kept)
MAX_REMEMBERED = 20_000
#: one warm-up at a time: reference computations seed torch's global generator
_WARM_UP = threading.Lock()


@dataclass
class Plan:
    exercises: list[Exercise]
    checks: list[Check]
    #: verdicts by (check, digest of the run's result): a judge is a function of the bytes a run sent
    #: back and the plan's parameters, so identical results (a class of similar submissions) are judged once
    verdicts: dict[tuple[str, bytes], Verdict] = field(default_factory=dict, repr=False)
    verdicts_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: bytes of memory each run may use, named when one runs out
    memory_limit: int = DEFAULT_LIMITS.address_space
    #: checks that cannot run on this machine (a device it lacks): reported as skipped, worth nothing here
    unavailable: list[Check] = field(default_factory=list)
    #: every plugin's misconceptions, tried on checks that do not pass (:mod:`grader.judge.diagnosis`)
    misconceptions: list[Misconception] = field(default_factory=list)

    def judged(self, check: Check, decoded: Any, result: Optional[bytes]) -> Verdict:
        """``verdict_for(check, decoded)``, remembered for results seen before."""
        if result is None or decoded.failure is not None:
            return verdict_for(check, decoded, self.memory_limit)
        key = (check.id, hashlib.sha256(result).digest())
        with self.verdicts_lock:
            known = self.verdicts.get(key)
        if known is None:
            known = diagnose(check, decoded.value.get("value"), verdict_for(check, decoded, self.memory_limit),
                             applicable(check.id, self.misconceptions))
            with self.verdicts_lock:
                if len(self.verdicts) >= MAX_REMEMBERED:
                    self.verdicts.clear()
                self.verdicts[key] = known
        return known

    def probes(self) -> list[Probe]:
        """The distinct runs the checks read, in check order."""
        return list({id(c.probe): c.probe for c in self.checks}.values())


def plan(pm: Any, config: RunConfig) -> Plan:
    """The checks every plugin contributes, as the course configures them, in exercise order.

    Raises :class:`~grader.course.CourseError` when the configuration names what does not exist.
    """
    all_exercises = [ex for group in pm.hook.grader_exercises() for ex in group]
    checks = contributed_checks(pm, config)
    # the checks of devices this machine lacks (CUDA): named in a configuration, reported as skipped
    elsewhere: list[Check] = []
    if config.missing_devices:
        here = {c.id for c in checks}
        everywhere = replace(config, extra_devices=config.extra_devices + config.missing_devices)
        elsewhere = [c for c in contributed_checks(pm, everywhere) if c.id not in here]
    unknown = sorted({c.exercise for c in checks + elsewhere} - {ex.name for ex in all_exercises})
    if unknown:
        raise ValueError(f"checks name unknown exercises: {', '.join(unknown)}")
    exercises = all_exercises
    if config.course is not None:
        checks, exercises = config.course.apply(checks, all_exercises, elsewhere)
        elsewhere, _ = config.course.apply(elsewhere, all_exercises, checks)
    if config.only_exercises:  # check("rnn") in a notebook: that exercise's checks alone
        exercises = [ex for ex in exercises if ex.name in config.only_exercises]
        checks = [c for c in checks if c.exercise in config.only_exercises]
    order = {ex.name: i for i, ex in enumerate(exercises)}
    checks = [c for c in checks if config.hidden or not c.hidden]
    checks.sort(key=lambda c: order[c.exercise])  # stable: keeps each plugin's own order
    elsewhere = sorted((c for c in elsewhere if (config.hidden or not c.hidden) and c.exercise in order),
                       key=lambda c: order[c.exercise])
    return Plan(exercises, checks, memory_limit=config.run_memory_limit or DEFAULT_LIMITS.address_space,
                unavailable=elsewhere, misconceptions=catalogue(pm, config))


def contributed_checks(pm: Any, config: RunConfig) -> list[Check]:
    """Every plugin's checks, each marked with the pack it came from ("built-in" for the grader's own)."""
    checks: list[Check] = []
    # registration order: the built-in checks first, then installed packs, then --plugins folders
    for impl in pm.hook.grader_checks.get_hookimpls():
        given = [config if name == "config" else None for name in impl.argnames]
        pack = pack_name(impl.plugin_name)
        checks += [c if c.pack == pack else replace(c, pack=pack) for c in impl.function(*given) or ()]
    return checks


def pack_name(plugin_name: str) -> str:
    """How reports name the plugin a check came from."""
    if plugin_name.startswith("grader."):
        return "built-in"
    return plugin_name.removeprefix(PACK_PREFIX).split("/", 1)[0]


def warm_up(the_plan: Plan) -> None:
    """Compute the reference's side of every probe now (each is cached), e.g. while the runner starts.

    Gradings running side by side in threads wait for the first one's warm-up and then share it.
    """
    with _WARM_UP:
        for probe in the_plan.probes():
            if probe.reference is not None:
                probe.reference()


def grade(folder: Path, config: RunConfig, pm: Any, runner: Runner, the_plan: Optional[Plan] = None,
          progress: Optional[Progress] = None) -> GradingReport:
    """Grade ``folder``; ``progress``, when given, hears each phase and each run that came back."""
    started = time.monotonic()
    folder = folder.resolve()
    files, problems, notebooks = read_graded(folder)
    notices: list[str] = []
    if config.secret:  # this submission's own inputs: what one submission printed is not the next one's
        config = replace(config, secret=submission_secret(config.secret, files))
        the_plan = plan(pm, config)
        notices.append(SECRET_NOTICE)
    the_plan = the_plan or plan(pm, config)
    warm_up(the_plan)
    tell(progress, ProgressEvent(LOADING))
    submission = load(files, runner, config)
    problems += submission.problems
    where = submission.where
    readers: dict[int, list[Check]] = {}  # id(probe) -> the checks reading its run
    for check in the_plan.checks:
        if check.hook in where:
            readers.setdefault(id(check.probe), []).append(check)
    out_of_time: dict[str, str] = {}  # hook -> title of the check where it ran out of time

    def requests() -> Iterator[tuple[list[Check], Request]]:
        # Longest first: the runner finishes warming up while a long check runs.
        for checks in sorted(readers.values(), key=lambda cs: -cs[0].probe.timeout):
            probe = checks[0].probe
            if probe.hook not in out_of_time:
                yield checks, _request(probe, submission, config)

    results: dict[str, CheckResult] = {}
    events: list[tuple[Check, dict]] = []
    cpu = 0.0
    tally = CheckTally(readers.values(), progress)
    for checks, reply in runner.run(requests(), window=WINDOW):
        cpu += reply.cpu_seconds or 0.0
        decoded = decode(reply)  # once per run, however many checks read it
        for check in checks:
            results[check.id] = _record(check, the_plan.judged(check, decoded, reply.result), output=reply.output,
                                        seconds=reply.seconds)
        for event in decoded.integrity_events():
            if not event.get("file"):  # changed at import: the load request knows which file did it
                event = dict(event, file=submission.changed_by.get(str(event.get("what"))))
            events.append((checks[0], event))
        if reply.status in (Status.TIMEOUT, Status.RUNNER_DIED):
            out_of_time.setdefault(checks[0].hook, checks[0].title)
        tally.judged(checks)
    flagged = _integrity_by_exercise(events, where, the_plan)
    for check in the_plan.checks:
        result = results.get(check.id)
        if result is None and check.hook in out_of_time:
            verdict = Verdict(ERROR, f"not run: {check.hook} already ran out of time in '{out_of_time[check.hook]}'")
            result = _record(check, verdict)
        elif result is None:
            broken = file_problem_of(check, files, problems)
            verdict = (Verdict(ERROR, _not_graded(check.hook, broken)) if broken is not None else
                       Verdict(NOT_IMPLEMENTED, f"{check.hook} is not implemented (no @hookimpl def {check.hook}(...) found)"))
            result = _record(check, verdict)
        if check.exercise in flagged:
            result = replace(result, points=0.0, status=INTEGRITY,
                             message="no points: " + "; ".join(flagged[check.exercise][:3]))
        results[check.id] = result
    told_once = tell_each_cause_once([results[c.id] for c in the_plan.checks], the_plan.misconceptions)
    results = {r.check_id: r for r in told_once}
    exercises = []
    for ex in the_plan.exercises:
        checks = tuple(results[c.id] for c in the_plan.checks if c.exercise == ex.name)
        if checks:
            exercises.append(ExerciseResult(ex.name, ex.title, sum(c.points for c in checks),
                                            sum(c.max_points for c in checks), checks, figures=_exercise_figures(checks)))
    notices = list(runner.notices) + notices
    if any(c.id.endswith(".device.meta") and results[c.id].status != PASSED and not results[c.id].same_cause_as
           and not results[c.id].misconception for c in the_plan.checks):  # a device problem, not a shared cause
        notices.append(META_NOTICE)
    notices += [f"integrity: {exercise} scored 0 because " + "; ".join(found[:5]) for exercise, found in flagged.items()]
    report = GradingReport(
        submission=str(folder), points=round(sum(e.points for e in exercises), 6),
        max_points=round(sum(e.max_points for e in exercises), 6), exercises=tuple(exercises),
        problems=tuple(problems), implemented=dict(where), notices=tuple(notices),
        seconds=round(time.monotonic() - started, 3), corpus=corpus_facts(corpus_spec(config)),
        grader_version=grader.__version__, timed_out=tuple(sorted(out_of_time)), cpu_seconds=round(cpu, 3),
        configuration=config.course.describe() if config.course is not None else "",
        skipped_here=tuple(_not_run_here(c, config) for c in the_plan.unavailable),
        locations=hook_locations(files, where),
    )
    return point_at_notebooks(report, notebooks)  # errors in a notebook's module name its cell and line


def _request(probe: Probe, submission: LoadedFiles, config: RunConfig) -> Request:
    timeout = run_timeout(probe.timeout, config)
    return Request(files=submission.files, timeout=timeout, limits=limits_for(config, timeout),
                   probe=probe.path, hook=probe.hook, params=probe.params, stand_ins=submission.stand_ins,
                   reference=parts_without(probe.hook), probe_source=probe_source(probe.run),
                   preload=submission.preload)


def limits_for(config: RunConfig, timeout: float) -> Limits:
    """The limits of a run: the default ones, or the course's memory, with CPU time after the timeout."""
    memory = config.run_memory_limit
    limits = DEFAULT_LIMITS if memory is None else replace(DEFAULT_LIMITS, address_space=memory)
    return limits.for_timeout(timeout)


def _integrity_by_exercise(events: list[tuple[Check, dict]], where: dict[str, str], the_plan: Plan) -> dict[str, list[str]]:
    """Which exercises lose their points, and why: the exercises of the file that did it."""
    hooks_of_file: dict[str, list[str]] = {}
    for hook, file in where.items():
        hooks_of_file.setdefault(file, []).append(hook)
    exercise_of = {h: ex.name for ex in the_plan.exercises for h in ex.hooks}
    # a file that implements nothing (it failed to import) answers for the exercise it is named after
    hooks_of_file.update({file_name(ex.name): list(ex.hooks) for ex in the_plan.exercises
                          if file_name(ex.name) not in hooks_of_file})
    flagged: dict[str, list[str]] = {}
    for check, event in events:
        file = event.get("file")
        # a helper file's act could serve any hook that imports it: every exercise the run touched
        hooks = hooks_of_file.get(file or "", [check.hook])
        text = f"{file or 'your code'} {event.get('what')}"
        for exercise in sorted({exercise_of.get(h, check.exercise) for h in hooks}):
            found = flagged.setdefault(exercise, [])
            if text not in found:
                found.append(text)
    return flagged


def _record(check: Check, verdict: Verdict, output: str = "", seconds: float = 0.0) -> CheckResult:
    fraction = min(max(float(verdict.fraction), 0.0), 1.0)
    return CheckResult(
        check_id=check.id, exercise=check.exercise, title=check.title, hooks=(check.hook,),
        max_points=float(check.points), points=round(check.points * fraction, 6), status=verdict.status,
        message=verdict.message, details=verdict.details, figures=dict(verdict.figures), output=without_staging(output),
        seconds=seconds, hidden=check.hidden, visibility=check.visibility, misconception=verdict.misconception,
    )


def _not_run_here(check: Check, config: RunConfig) -> CheckResult:
    """A check of a device this machine lacks, as a skipped record worth nothing here."""
    missing = " or ".join(d.upper() if d == "cuda" else d for d in config.missing_devices)
    message = f"not run: this machine has no {missing} device; it runs where the grading machine has one"
    return replace(_record(check, Verdict(SKIPPED, message)), points=0.0, max_points=0.0)


def file_problem_of(check: Check, files: dict[str, str], problems: Iterable[FileProblem]) -> Optional[FileProblem]:
    """The error that kept the file defining ``check``'s hook from being used, if that is why the hook is missing.

    The file is one whose text defines the hook (read, never run), or the exercise's own file when the grader
    could not read it at all (too large, not UTF-8): its checks are then an error, not "not implemented".
    """
    errors: dict[str, list[FileProblem]] = {}
    for problem in problems:
        if problem.severity == "error":
            errors.setdefault(problem.path, []).append(problem)
    defines = re.compile(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(check.hook)}[ \t]*\(", re.M)
    for name in sorted(errors):
        source = files.get(name)
        if source is None or not defines.search(source):
            continue
        # about this function ('rnn' must accept 3 arguments), else about the whole file (its import failed),
        # never about another function of the file
        own = [p for p in errors[name] if f"'{check.hook}'" in p.message]
        whole = [p for p in errors[name] if not p.message.startswith("'")]
        if own or whole:
            return (own or whole)[0]
    own_file = file_name(check.exercise)
    return errors[own_file][0] if own_file in errors and own_file not in files else None


def _not_graded(hook: str, broken: FileProblem) -> str:
    if broken.message.startswith("'"):  # about the function itself: "'rnn' must accept 3 arguments ..."
        return f"not graded: {broken.where}: {broken.message}"
    return f"not graded: {hook} is in {broken.path}, which {broken.message}"


def hook_locations(files: dict[str, str], where: dict[str, str]) -> dict[str, tuple[str, int]]:
    """hook -> (file, line of its ``def``), read from the source without running it (for annotations)."""
    found: dict[str, tuple[str, int]] = {}
    for hook, name in where.items():
        source = files.get(name)
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == hook:
                found[hook] = (name, node.lineno)
        if hook not in found:  # defined under another name, or nested: the file at least
            found[hook] = (name, 1)
    return found


def _exercise_figures(checks: Iterable[CheckResult]) -> dict:
    figures: dict = {}
    for check in checks:
        for key, value in check.figures.items():
            if isinstance(value, dict) and "series" in value:
                figures[key] = value
    return figures
