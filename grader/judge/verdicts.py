"""From a runner's reply to verdicts: decode strictly, then let the check's judge decide.

A reply is trusted for nothing but its shape. Whatever went wrong in the runner
(an exception, a timeout, a crash, a limit) becomes an ``ERROR`` verdict for the
checks reading that run, in words that name the cause and the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from grader import wire
from grader.prose import shorten
from grader.definitions import Check
from grader.compare import UnexpectedForm
from grader.hints import explain_error
from grader.protocol import DEFAULT_LIMITS, OUTPUT_LIMIT, RESULT_LIMIT, MiB, Reply, Status
from grader.results import ERROR, FAILED, NOT_IMPLEMENTED, Verdict

#: how a child that was killed by a signal ended, in words
SIGNALS = {9: "was killed (SIGKILL)", 11: "crashed with a segmentation fault", 6: "aborted",
           7: "crashed with a bus error", 8: "crashed with a floating-point exception",
           24: "exceeded its CPU time limit",
           25: f"exceeded the file size limit of {DEFAULT_LIMITS.file_size // MiB} MiB"}
#: integrity events read from one reply at most
MAX_EVENTS = 20


@dataclass(frozen=True)
class Decoded:
    """A reply's decoded probe result, or the verdict for a run that did not finish."""

    value: Any = None
    failure: Optional[Verdict] = None

    def integrity_events(self) -> list[dict]:
        """What the run changed in the grader's world or reached of the reference (see grader.runner.integrity).

        Each event is ``{"what": str, "file": str or None}``, whatever the reply held.
        """
        if self.failure is not None or not isinstance(self.value.get("integrity"), list):
            return []
        events = [e for e in self.value["integrity"] if isinstance(e, dict)][:MAX_EVENTS]
        return [{"what": _event_text(e.get("what")) or "changed something", "file": _event_text(e.get("file")) or None}
                for e in events]


def decode(reply: Reply) -> Decoded:
    if reply.status == Status.TIMEOUT:
        return Decoded(failure=Verdict(ERROR, f"stopped after {reply.seconds:.0f} s wall time: an endless loop, or far too slow"))
    if reply.status == Status.RESULT_TOO_LARGE:
        return Decoded(failure=Verdict(ERROR, f"sent back more than the {RESULT_LIMIT // MiB} MiB result limit"))
    if reply.status == Status.OUTPUT_FLOOD:
        return Decoded(failure=Verdict(ERROR, f"wrote more than {OUTPUT_LIMIT // MiB} MiB to stdout/stderr and was stopped"))
    if reply.status == Status.RUNNER_DIED:
        return Decoded(failure=Verdict(ERROR, "the grading process stopped responding while this check ran"))
    if reply.status != Status.OK or reply.result is None:
        return Decoded(failure=Verdict(ERROR, f"the process running your code {ended(reply)}"))
    try:
        value = wire.loads(reply.result, RESULT_LIMIT)
    except wire.WireError as exc:
        return Decoded(failure=Verdict(ERROR, f"the check's result was malformed: {exc}"))
    if not isinstance(value, dict):
        return Decoded(failure=Verdict(ERROR, "the check's result was malformed"))
    return Decoded(value)


def ended(reply: Reply) -> str:
    """How a child that sent no result ended: "crashed with a segmentation fault", "exited (status 3) ..."."""
    if reply.signal:
        if reply.signal == 9 and reply.cpu_limit is not None and reply.cpu_seconds >= reply.cpu_limit:
            return "exceeded its CPU time limit"
        return SIGNALS.get(reply.signal, f"was killed by signal {reply.signal}")
    return f"exited (status {reply.exit_code}) before the check finished"


def verdict_for(check: Check, decoded: Decoded, memory_limit: int = DEFAULT_LIMITS.address_space) -> Verdict:
    """The check's verdict on a decoded run (``memory_limit``: the run's, to name it)."""
    if decoded.failure is not None:
        return decoded.failure
    value = decoded.value
    if "not_implemented" in value:
        return Verdict(NOT_IMPLEMENTED, f"{check.hook} is not implemented yet (it raises NotImplementedError)")
    if "error" in value:
        message = _short(value["error"], 2400)  # the runner's own descriptions are at most this long
        if value.get("limit") == "memory":
            limit = f"{memory_limit / (1 << 30):g} GiB" if memory_limit >= 1 << 30 else f"{memory_limit >> 20} MiB"
            return Verdict(ERROR, f"{check.hook} exceeded the {limit} memory limit ({shorten(message, 300)})")
        return Verdict(ERROR, explain_error(check.hook, message, check.probe.hints, sizes=check.probe.params))
    try:
        verdict = check.judge(value.get("value"), **check.probe.params)
    except UnexpectedForm as exc:  # the judge knows what it expected
        return Verdict(ERROR, f"{check.hook} returned data of an unexpected form: {_exception_text(exc)}")
    except Exception as exc:  # noqa: BLE001 - whatever the returned data made the judge raise costs this check only
        # the judge's own comparison stopped (e.g. a broadcast error): not an error of the student's code
        return Verdict(ERROR, f"{check.hook} returned data of an unexpected form, so the check could not compare it "
                              f"(the check's own code stopped with {type(exc).__name__}: {_exception_text(exc, 200)}); "
                              f"what it tests: {shorten(check.title, 150)}")
    if not isinstance(verdict, Verdict):  # a plugin's judge returned something else
        return Verdict(FAILED, "the check did not reach a verdict")
    return verdict


def _short(value: Any, limit: int) -> str:
    """A decoded value as text of at most ``limit`` characters: strings and numbers as they are, others by type."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, (bool, int, float)):
        text = str(value)
    else:  # a list or dict could be huge; its text means nothing to a student
        text = f"<{type(value).__name__}>"
    return wire.valid_text(shorten(text, limit))


def _event_text(value: Any) -> str:
    return "" if value is None else _short(value, 200)


def _exception_text(exc: Exception, limit: int = 300) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails still gets a verdict
        return "no message"
    return wire.valid_text(shorten(text, limit))
