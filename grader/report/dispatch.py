"""Calling the reporters: each on its own, so that one failing costs only its own output."""

from __future__ import annotations

import sys

from grader.config import RunConfig

#: what each built-in reporter makes, named when it fails
_REPORTER_OUTPUT = {
    "grader.report.terminal": "the terminal summary",
    "grader.report.html": "the html report",
    "grader.report.gradescope": "results.json (Gradescope)",
    "grader.report.junit": "the JUnit XML report (--junit)",
    "grader.report.github": "the GitHub Actions summary and annotations",
}


def write_reports(pm, report, config: RunConfig) -> bool:
    """Call each reporter on its own, so one that fails is named on stderr and the others still run.

    True when every reporter succeeded.
    """
    caller = pm.hook.grader_report
    impls = caller.get_hookimpls()
    if any(impl.hookwrapper or impl.wrapper for impl in impls):  # a wrapper needs pluggy's own call
        return _guarded("the reports", caller, report=report, config=config)
    given = dict(report=report, config=config)
    ok = True
    for impl in reversed(impls):  # pluggy's order: the last registered first, trylast ones at the end
        args = [given[name] for name in impl.argnames]
        kwargs = {name: given[name] for name in impl.kwargnames if name in given}
        what = _REPORTER_OUTPUT.get(impl.plugin_name, f"the report of plugin {impl.plugin_name}")
        ok = _guarded(what, impl.function, *args, **kwargs) and ok
    return ok


def _guarded(what: str, function, *args, **kwargs) -> bool:
    """Call one reporter; a failure becomes a line on stderr naming ``what`` was not written."""
    try:
        function(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a failing reporter must not cost the other reports
        from grader.report.formatting import one_line

        advice = ("check that the output folder is writable and has free space" if isinstance(exc, OSError)
                  else "this is a bug in the grader or a plugin; please report it")
        warn(f"grade: {what} could not be written: {one_line(f'{type(exc).__name__}: {exc}', 300)}; {advice}")
        return False
    return True


def warn(text: str) -> None:
    """One line on stderr, with what its encoding cannot show escaped."""
    stream = sys.stderr
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream, flush=True)
    except (OSError, ValueError, LookupError):  # no usable stderr: nothing more to do
        pass
