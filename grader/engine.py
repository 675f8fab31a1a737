"""From a submission folder to a :class:`GradingReport`: collect checks, run probes, judge.

The engine is the only place that turns runner replies into verdicts. It
trusts nothing in a reply beyond its shape: values are judged against the
reference here, and whatever went wrong in the runner (an exception, a
timeout, a crash) costs exactly the check that was running.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import grader
from grader import wire
from grader.checks.base import Check, Exercise
from grader.config import RunConfig
from grader.pool import Reply, Runner
from grader.results import (
    ERROR,
    FAILED,
    INTEGRITY,
    NOT_IMPLEMENTED,
    CheckResult,
    ExerciseResult,
    FileProblem,
    GradingReport,
    Verdict,
)

#: limits applied to every check's process; each is named in the verdict when hit
DEFAULT_LIMITS = {"address_space": 4 << 30, "file_size": 16 << 20, "processes": 64}
RESULT_LIMIT = 64 << 20
#: seconds a submission's files may take to import
IMPORT_TIMEOUT = 10.0
#: largest submission file, and all files together, that the grader accepts
FILE_LIMIT, SUBMISSION_LIMIT = 1 << 20, 4 << 20
#: well-known error messages and what they usually mean
HINTS = (
    (r"backward through the graph a second time", "detach the state between minibatches (s.detach_())"),
    (r"modified by an inplace operation", "a tensor needed for backward was changed in place: build new tensors, "
                                           "and detach the carried state instead of keeping its graph"),
    (r"mat1 and mat2 shapes cannot be multiplied", "check the matrix orientation: X (B, V) @ W_xh (V, H), H (B, H) @ W_hh (H, H)"),
    (r"Expected all tensors to be on the same device", "create every tensor on the device you were given"),
    (r"Torch not compiled with CUDA|no NVIDIA driver|CUDA", "do not hard-code 'cuda'; use the device argument"),
    (r"meta tensors?|on the meta device|device='meta'|Cannot copy out of meta",
     "this check passes device='meta'; create tensors with device=device and avoid .cpu(), .numpy() and .item()"),
    (r"object is not callable", "the updater may be a torch.optim optimizer: call updater.step() for those"),
    (r"has no attribute 'step'|has no attribute 'zero_grad'", "the updater may be a plain function: call updater(batch_size=1)"),
)
SIGNALS = {9: "was killed (SIGKILL)", 11: "crashed with a segmentation fault", 6: "aborted",
           7: "crashed with a bus error", 8: "crashed with a floating-point exception",
           24: "exceeded its CPU time limit", 25: "exceeded the file size limit of 16 MiB"}


def read_submission(folder: Path) -> tuple[dict[str, str], list[FileProblem]]:
    """The submission's top-level .py files as text; files the grader cannot take are problems."""
    files: dict[str, str] = {}
    problems: list[FileProblem] = []
    total = 0
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py" or not path.is_file():
            continue
        size = path.stat().st_size
        if size > FILE_LIMIT or total + size > SUBMISSION_LIMIT:
            problems.append(FileProblem(path.name, f"is {size} bytes; files over {FILE_LIMIT >> 20} MiB "
                                                   f"(or {SUBMISSION_LIMIT >> 20} MiB together) are not graded"))
            continue
        try:
            files[path.name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            problems.append(FileProblem(path.name, "is not UTF-8 text; save it as UTF-8"))
            continue
        except OSError as exc:
            problems.append(FileProblem(path.name, f"cannot be read: {exc.strerror}"))
            continue
        total += size
    return files, problems


def probe_load(ctx) -> Any:
    """Report which hooks the submission implements and what went wrong per file."""
    return {"where": ctx.loaded.where, "problems": [list(p) for p in ctx.loaded.problems]}


@dataclass
class Plan:
    exercises: list[Exercise]
    checks: list[Check]


def plan(pm: Any, config: RunConfig) -> Plan:
    exercises = [ex for group in pm.hook.grader_exercises() for ex in group]
    order = {ex.name: i for i, ex in enumerate(exercises)}
    checks = [c for group in pm.hook.grader_checks(config=config) for c in group]
    checks = [c for c in checks if config.hidden or not c.hidden]
    unknown = sorted({c.exercise for c in checks} - set(order))
    if unknown:
        raise ValueError(f"checks name unknown exercises: {', '.join(unknown)}")
    checks.sort(key=lambda c: order[c.exercise])  # stable: keeps each plugin's own order
    return Plan(exercises, checks)


def grade(folder: Path, config: RunConfig, pm: Any, runner: Runner, the_plan: Optional[Plan] = None) -> GradingReport:
    started = time.monotonic()
    folder = folder.resolve()
    the_plan = the_plan or plan(pm, config)
    files, problems = read_submission(folder)
    submission = _load(files, runner, config)
    problems += submission.problems
    where = submission.where
    # Checks that would send the same request share one run: same function, same inputs.
    groups: dict[str, list[Check]] = {}
    for check in the_plan.checks:
        if check.hook in where:
            groups.setdefault(_request_key(check), []).append(check)
    out_of_time: dict[str, str] = {}  # hook -> title of the check where it ran out of time

    def requests() -> Iterator[dict]:
        # Longest first: the runner finishes warming up while a long check runs.
        for key, checks in sorted(groups.items(), key=lambda kv: -max(c.timeout for c in kv[1])):
            first = checks[0]
            if first.hook not in out_of_time:
                timeout = _timeout(max(c.timeout for c in checks), config)
                request = first.request(submission.files, _limits(timeout))
                yield dict(request, timeout=timeout, group=key, stand_ins=submission.stand_ins)

    results: dict[str, CheckResult] = {}
    events: list[tuple[Check, dict]] = []
    for request, reply in runner.run(requests(), window=2):
        checks = groups[request["group"]]
        decoded = _decode(reply)  # once per reply, however many checks share it
        for check in checks:
            results[check.id] = _record(check, verdict_for(check, decoded), output=reply.output, seconds=reply.seconds)
        for event in _integrity_events(decoded):
            if not event.get("file"):  # changed at import: the load request knows which file did it
                event = dict(event, file=submission.changed_by.get(str(event.get("what"))))
            events.append((checks[0], event))
        if reply.status in ("timeout", "runner_died"):
            out_of_time.setdefault(checks[0].hook, checks[0].title)
    flagged = _integrity_by_exercise(events, where, the_plan)
    for check in the_plan.checks:
        result = results.get(check.id)
        if result is None and check.hook in out_of_time:
            verdict = Verdict(ERROR, f"not run: {check.hook} already ran out of time in '{out_of_time[check.hook]}'")
            result = _record(check, verdict)
        elif result is None:
            verdict = Verdict(NOT_IMPLEMENTED, f"{check.hook} is not implemented (no @hookimpl def {check.hook}(...) found)")
            result = _record(check, verdict)
        if check.exercise in flagged:
            result = replace(result, points=0.0, status=INTEGRITY,
                             message="no points: " + "; ".join(flagged[check.exercise][:3]))
        results[check.id] = result
    exercises = []
    for ex in the_plan.exercises:
        checks = tuple(results[c.id] for c in the_plan.checks if c.exercise == ex.name)
        if checks:
            exercises.append(ExerciseResult(ex.name, ex.title, sum(c.points for c in checks),
                                            sum(c.max_points for c in checks), checks, figures=_exercise_figures(checks)))
    from grader.checks.train_epoch import corpus_facts, corpus_spec

    notices = list(runner.notices)
    notices += [f"integrity: {exercise} scored 0 because " + "; ".join(found[:5]) for exercise, found in flagged.items()]
    return GradingReport(
        submission=str(folder), points=round(sum(e.points for e in exercises), 6),
        max_points=round(sum(e.max_points for e in exercises), 6), exercises=tuple(exercises),
        problems=tuple(problems), implemented=dict(where), notices=tuple(notices),
        seconds=round(time.monotonic() - started, 3), corpus=corpus_facts(corpus_spec(config)),
        grader_version=grader.__version__,
    )


def _request_key(check: Check) -> str:
    return json.dumps([check.probe_path, check.hook, check.params], sort_keys=True, default=str)


def _timeout(own: float, config: RunConfig) -> float:
    return float(config.check_timeout) if config.check_timeout is not None else own


def _limits(timeout: float) -> dict:
    return dict(DEFAULT_LIMITS, cpu_seconds=int(timeout) + 1)


@dataclass
class LoadedFiles:
    files: dict[str, str]
    where: dict[str, str]
    problems: list[FileProblem]
    #: module names the reference serves in place of files that hang or end the process at import
    stand_ins: list[str]
    #: what a file replaced while being imported -> that file
    changed_by: dict[str, str]


def _load_request(files: dict, timeout: float, only: Optional[list[str]] = None, stand_ins: Iterable[str] = ()) -> dict:
    return {"files": files, "probe": "grader.engine:probe_load", "hook": None, "params": {}, "timeout": timeout,
            "limits": _limits(timeout), "only": only, "stand_ins": sorted(stand_ins), "track_files": True}


def _load(files: dict[str, str], runner: Runner, config: RunConfig) -> LoadedFiles:
    """Load the submission; find and set aside files whose import hangs or ends the process."""
    timeout = _timeout(IMPORT_TIMEOUT, config)
    reply = runner.run_one(_load_request(files, timeout))
    broken: dict[str, str] = {}
    if reply.status != "ok" or reply.result is None:
        suspects = {}
        for name in files:
            single = runner.run_one(_load_request(files, timeout, only=[name]))
            if single.status != "ok" or single.result is None:
                suspects[name] = single
        for name, single in suspects.items():  # a file may only have imported a suspect sibling
            others = [Path(n).stem for n in suspects if n != name]
            if others and runner.run_one(_load_request(files, timeout, [name], others)).status == "ok":
                continue
            _, failure = _decode(single)
            broken[name] = f"importing it {_import_failure(single, failure)}; it was not graded"
        stand_ins = [Path(n).stem for n in broken]
        kept = {n: src for n, src in files.items() if n not in broken}
        reply = runner.run_one(_load_request(kept, timeout, stand_ins=stand_ins))
        files = kept
    where, problems = _load_outcome(reply)
    problems = [FileProblem(n, why) for n, why in broken.items()] + problems
    changed_by = {str(e.get("what")): str(e["file"]) for e in _integrity_events(_decode(reply)) if e.get("file")}
    return LoadedFiles(files, where, problems, [Path(n).stem for n in broken], changed_by)


def _import_failure(reply: Reply, failure: Optional[Verdict]) -> str:
    if reply.status == "timeout":
        return (f"took longer than {reply.seconds:.0f} s (an endless loop, or slow work at the top level? "
                "put it under `if __name__ == \"__main__\":`)")
    if failure is not None and reply.signal:
        return failure.message.replace("the process running your code", "crashed the process:")
    return f"ended the process (exit status {reply.exit_code}, e.g. os._exit())"


def _integrity_by_exercise(events: list[tuple[Check, dict]], where: dict[str, str], the_plan: Plan) -> dict[str, list[str]]:
    """Which exercises lose their points, and why: the exercises of the file that did it."""
    hooks_of_file: dict[str, list[str]] = {}
    for hook, file in where.items():
        hooks_of_file.setdefault(file, []).append(hook)
    exercise_of = {h: ex.name for ex in the_plan.exercises for h in ex.hooks}
    flagged: dict[str, list[str]] = {}
    for check, event in events:
        file = event.get("file")
        hooks = hooks_of_file.get(file or "", [check.hook])
        text = f"{file or 'your code'} {event.get('what')}"
        for exercise in sorted({exercise_of.get(h, check.exercise) for h in hooks}):
            found = flagged.setdefault(exercise, [])
            if text not in found:
                found.append(text)
    return flagged


def _load_outcome(reply: Reply) -> tuple[dict[str, str], list[FileProblem]]:
    value, failure = _decode(reply)
    if failure is not None:
        return {}, [FileProblem(".", f"the submission could not be loaded: {failure.message}")]
    if "value" not in value:
        return {}, [FileProblem(".", f"the submission could not be loaded: {value.get('error', 'unknown error')}")]
    data = value["value"]
    where = {str(k): str(v) for k, v in dict(data["where"]).items()}
    problems = [FileProblem(str(p[0]), str(p[1]), str(p[2])) for p in data["problems"]]
    return where, problems


def _decode(reply: Reply) -> tuple[Any, Optional[Verdict]]:
    """The reply's decoded result, or the verdict for a probe that did not finish."""
    if reply.status == "timeout":
        return None, Verdict(ERROR, f"stopped after {reply.seconds:.0f} s wall time: an endless loop, or far too slow")
    if reply.status == "result_too_large":
        return None, Verdict(ERROR, f"sent back more than the {RESULT_LIMIT >> 20} MiB result limit")
    if reply.status == "output_flood":
        return None, Verdict(ERROR, "wrote more than 1 MiB to stdout/stderr and was stopped")
    if reply.status == "runner_died":
        return None, Verdict(ERROR, "the grading process stopped responding while this check ran")
    if reply.status != "ok" or reply.result is None:
        if reply.signal:
            why = SIGNALS.get(reply.signal, f"was killed by signal {reply.signal}")
            cpu = reply.raw.get("cpu_seconds") or 0
            if reply.signal == 9 and cpu >= (reply.raw.get("cpu_limit") or float("inf")):
                why = "exceeded its CPU time limit"
            return None, Verdict(ERROR, f"the process running your code {why}")
        return None, Verdict(ERROR, f"the process running your code exited (status {reply.exit_code}) before the check finished")
    try:
        value = wire.loads(reply.result, RESULT_LIMIT)
    except wire.WireError as exc:
        return None, Verdict(ERROR, f"the check's result was malformed: {exc}")
    if not isinstance(value, dict):
        return None, Verdict(ERROR, "the check's result was malformed")
    return value, None


def _integrity_events(decoded: tuple[Any, Optional[Verdict]]) -> list[dict]:
    value, failure = decoded
    if failure is not None or not isinstance(value.get("integrity"), list):
        return []
    return [e for e in value["integrity"] if isinstance(e, dict)][:20]


def _hint(message: str) -> str:
    for pattern, hint in HINTS:
        if re.search(pattern, message):
            return f" (hint: {hint})"
    return ""


def verdict_for(check: Check, decoded: tuple[Any, Optional[Verdict]]) -> Verdict:
    """The check's verdict from a decoded reply (see :func:`_decode`)."""
    value, failure = decoded
    if failure is not None:
        return failure
    if "not_implemented" in value:
        return Verdict(NOT_IMPLEMENTED, f"{check.hook} is not implemented yet (it raises NotImplementedError)")
    if "error" in value:
        message = str(value["error"])
        if value.get("limit") == "memory":
            limit = DEFAULT_LIMITS["address_space"] >> 30
            return Verdict(ERROR, f"{check.hook} exceeded the {limit} GiB memory limit ({message[:300]})")
        return Verdict(ERROR, f"{check.hook} raised {message}{_hint(message)}")
    try:
        verdict = check.judge(value.get("value"), **check.params)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        return Verdict(ERROR, f"{check.hook} returned data of an unexpected form ({type(exc).__name__}: {exc})")
    if not isinstance(verdict, Verdict):  # a plugin's judge returned something else
        return Verdict(FAILED, "the check did not reach a verdict")
    return verdict


def _record(check: Check, verdict: Verdict, output: str = "", seconds: float = 0.0) -> CheckResult:
    fraction = min(max(float(verdict.fraction), 0.0), 1.0)
    return CheckResult(
        check_id=check.id, exercise=check.exercise, title=check.title, hooks=(check.hook,),
        max_points=float(check.points), points=round(check.points * fraction, 6), status=verdict.status,
        message=verdict.message, details=verdict.details, figures=dict(verdict.figures), output=output,
        seconds=seconds, hidden=check.hidden,
    )


def _exercise_figures(checks: Iterable[CheckResult]) -> dict:
    figures: dict = {}
    for check in checks:
        for key, value in check.figures.items():
            if isinstance(value, dict) and "series" in value:
                figures[key] = value
    return figures
