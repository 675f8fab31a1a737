"""``grade --list-checks`` and ``grade --explain CHECK``: the checks as a course grades them."""

from __future__ import annotations

import difflib
import inspect
import textwrap
from typing import Any, TextIO

from grader.config import RunConfig
from grader.definitions import Check
from grader.judge.diagnosis import applicable
from grader.report.formatting import fmt_points


class UnknownCheck(LookupError):
    """``--explain`` named no check; the message suggests the closest."""


def planned(pm: Any, config: RunConfig) -> Any:
    """Every check the course grades, hidden ones included: an instructor is asking."""
    from dataclasses import replace

    from grader.judge import engine

    return engine.plan(pm, replace(config, hidden=True))


def list_checks(pm: Any, config: RunConfig, out: TextIO) -> int:
    plan = planned(pm, config)
    rows = [(c.id, fmt_points(c.points), c.pack, c.visibility) for c in plan.checks]
    header = ("check", "points", "pack", "visibility")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header), file=out)
    for exercise in plan.exercises:
        mine = [r for r, c in zip(rows, plan.checks) if c.exercise == exercise.name]
        if not mine:
            continue
        total = sum(c.points for c in plan.checks if c.exercise == exercise.name)
        print(f"\n{exercise.name}: {exercise.title} ({fmt_points(total)} points)", file=out)
        for row in mine:
            print(line.format(*row).rstrip(), file=out)
    print(f"\n{len(plan.checks)} checks, {fmt_points(sum(c.points for c in plan.checks))} points; "
          + (f"configuration: {config.course.describe()}" if config.course else "the grader's default configuration")
          + "; `grade --explain CHECK` says more about one", file=out)
    return 0


def explain(pm: Any, config: RunConfig, check_id: str, out: TextIO) -> int:
    plan = planned(pm, config)
    by_id = {c.id: c for c in plan.checks}
    check = by_id.get(check_id)
    if check is None:
        close = difflib.get_close_matches(check_id, list(by_id), n=3, cutoff=0.5)
        starts = [c for c in by_id if c.startswith(check_id + ".")]
        options = starts or close
        raise UnknownCheck(f"no check {check_id!r}" + (f"; did you mean {', '.join(options)}?" if options else "")
                           + " (`grade --list-checks` lists them)")
    print(describe(check, plan), file=out)
    return 0


def describe(check: Check, plan: Any) -> str:
    """What one check checks, how it scores, and what a course may change about it."""
    exercise = next((ex for ex in plan.exercises if ex.name == check.exercise), None)
    sharing = [c.id for c in plan.checks if c.probe is check.probe and c is not check]
    lines = [
        f"{check.id}: {check.title}",
        f"  exercise    {check.exercise}" + (f" ({exercise.title})" if exercise else ""),
        f"  grades      {check.hook}(), the reference supplying every other function",
        f"  points      {fmt_points(check.points)}, all or nothing unless the message says otherwise",
        f"  visibility  {check.visibility}" + ("" if check.visibility == "visible" else
                                               " (runs only with --hidden, in --batch and on Gradescope)"),
        f"  pack        {check.pack}",
        f"  time limit  {check.probe.timeout:g} s per run",
    ]
    if sharing:
        lines.append(f"  same run as {', '.join(sharing)}")
    if check.settings:
        lines.append("  settings    " + ", ".join(f"{k} = {v!r}" for k, v in check.settings.items())
                     + f'  (course configuration: [checks."{check.id}"])')
    about = check.explains or _doc(check.judge)
    if about:
        lines += ["", textwrap.fill(about, width=100)]
    named = applicable(check.id, plan.misconceptions)
    if named:
        lines += ["", "Mistakes it names when it fails:"]
        lines += [f"  {m.key:<32} {m.mistake}" for m in named]
    return "\n".join(lines)


def _doc(function: Any) -> str:
    function = getattr(function, "func", function)  # a functools.partial's own function
    doc = inspect.getdoc(function) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ")
