"""Naming the mistake: misconceptions recognised on a failing run, and each cause told once.

:func:`catalogue` joins what every plugin's ``grader_misconceptions`` contributes (packs first,
so a course's own wording wins, then the built-in ones). :func:`diagnose` runs in the judge,
after a check's own verdict: only a check that did not pass is ever diagnosed, and only a
misconception that recognises the run's data says anything. :func:`tell_each_cause_once` then
keeps one copy of each cause per function: the most specific check carries it, the others say
"same cause as ...".
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import replace
from typing import Any, Iterable, Sequence

from grader.definitions import Check, Evidence, Misconception
from grader.results import ERROR, FAILED, CheckResult, Verdict

log = logging.getLogger(__name__)

#: verdicts a misconception may explain (not a timeout's, which has no data, nor a passing one)
DIAGNOSED = (FAILED, ERROR)
#: how much of the cause a "same cause as" line repeats
CAUSE_LIMIT = 140


def catalogue(pm: Any, config: Any) -> list[Misconception]:
    """Every plugin's misconceptions: a pack's before the built-in ones, each plugin's in its own order."""
    packs: list[Misconception] = []
    builtin: list[Misconception] = []
    for impl in pm.hook.grader_misconceptions.get_hookimpls():
        given = [config if name == "config" else None for name in impl.argnames]
        found = [m for m in impl.function(*given) or () if isinstance(m, Misconception)]
        (builtin if impl.plugin_name.startswith("grader.") else packs).extend(found)
    return packs + builtin


def applicable(check_id: str, entries: Iterable[Misconception]) -> tuple[Misconception, ...]:
    """The misconceptions that may explain ``check_id``, in the order they are tried."""
    return tuple(m for m in entries if any(fnmatch.fnmatchcase(check_id, pattern) for pattern in m.checks))


def diagnose(check: Check, observed: Any, verdict: Verdict, entries: Sequence[Misconception]) -> Verdict:
    """``verdict``, worded by the first of ``entries`` that recognises the run; unchanged when none does."""
    if verdict.status not in DIAGNOSED or not entries:
        return verdict
    evidence = Evidence(check.id, observed, dict(check.probe.params), verdict.status, verdict.message)
    for entry in entries:
        try:
            matched = bool(entry.recognise(evidence))
        except Exception:  # noqa: BLE001 - a recogniser that cannot read this data makes no claim
            log.debug("misconception %s raised on %s", entry.key, check.id, exc_info=True)
            matched = False
        if matched:
            saw = f"What the check saw: {verdict.message}" if verdict.message else ""
            details = "\n\n".join(part for part in (saw, verdict.details) if part)
            return replace(verdict, message=entry.wording(), details=details, misconception=entry.key)
    return verdict


def tell_each_cause_once(results: Sequence[CheckResult], entries: Sequence[Misconception]) -> list[CheckResult]:
    """``results`` (in plan order) with repeated causes replaced by "same cause as <check>".

    Two failing checks of one function share a cause when the same misconception explains both,
    or when they say exactly the same thing. The check that carries the cause is the one the
    misconception lists first (its most specific), else the first in plan order.
    """
    groups: dict[tuple[tuple[str, ...], str], list[CheckResult]] = {}
    for result in results:
        if result.status in DIAGNOSED and result.message:
            cause = f"misconception:{result.misconception}" if result.misconception else f"message:{result.message}"
            groups.setdefault((result.hooks, cause), []).append(result)
    by_key = {m.key: m for m in entries}
    replaced: dict[str, CheckResult] = {}
    for (_, cause), group in groups.items():
        if len(group) < 2:
            continue
        entry = by_key.get(group[0].misconception)
        carrier = _most_specific(group, entry)
        told = _gist(entry.mistake if entry is not None else carrier.message)
        pointer = f"same cause as {carrier.check_id}" + (f" ({told})" if told else "")
        for result in group:
            if result is carrier:
                continue
            # its own observation stays in the details (a diagnosed result already keeps it there), unless it is
            # word for word the carrier's
            replaced[result.check_id] = replace(
                result, message=pointer, details="" if result.details == carrier.details else result.details,
                same_cause_as=carrier.check_id)
    return [replaced.get(r.check_id, r) for r in results]


def _gist(text: str) -> str:
    """The cause in a few words: ``text`` up to its first clause's end when that is short enough, else nothing
    (a pointer is better bare than cut off)."""
    for end in (". ", "; ", ": "):
        text = text.split(end, 1)[0]
    text = text.rstrip(".")
    return text if len(text) <= CAUSE_LIMIT else ""


def _most_specific(group: list[CheckResult], entry: Misconception | None) -> CheckResult:
    # a check students may see carries the cause whenever one failed: "same cause as" a hidden check says nothing
    group = [r for r in group if r.visible] or group
    for pattern in entry.checks if entry is not None else ():
        for result in group:
            if fnmatch.fnmatchcase(result.check_id, pattern):
                return result
    return group[0]
