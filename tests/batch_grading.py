"""Grade many submissions side by side on a few runners (the bug zoo, the alternative styles).

Each submission is still graded whole and on its own; only the waiting overlaps.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from pathlib import Path
from typing import Any, Optional

from conftest import REFERENCE

#: runners working at once, the session's own included
MAX_WORKERS = 4


def selected_ids(request: Any) -> list[str]:
    """The parameter ids of this module's tests that this session will run (so ``-k`` grades only those)."""
    return [item.callspec.id for item in request.session.items
            if item.module is request.module and hasattr(item, "callspec")]


def build(folder: Path, files: dict) -> Path:
    """A submission folder: the reference files, overridden (or removed, for None) by ``files``."""
    folder.mkdir(parents=True)
    for path in REFERENCE.glob("*.py"):
        if path.name != "__init__.py":
            shutil.copyfile(path, folder / path.name)
    for name, source in files.items():
        if source is None:
            (folder / name).unlink(missing_ok=True)
        else:
            (folder / name).write_text(source)
    return folder


def grade_many(runner: Any, root: Path, cases: dict[str, dict], workers: Optional[int] = None) -> dict[str, Any]:
    """``{name: GradingReport, or the exception grading raised}`` for each ``{name: files}``."""
    from grader.judge import engine
    from grader.config import RunConfig
    from grader.plugins import get_plugin_manager
    from grader.judge.runners import Runner

    pm = get_plugin_manager()
    config = RunConfig()  # as the ``grading`` fixture grades
    plan = engine.plan(pm, config)
    workers = max(1, min(len(cases), workers or min(MAX_WORKERS, os.cpu_count() or 1)))
    extra = [Runner() for _ in range(workers - 1)]
    todo: "queue.Queue[tuple[int, str]]" = queue.Queue()
    for item in enumerate(cases):
        todo.put(item)
    results: dict[str, Any] = {}

    def work(r: Any) -> None:
        while True:
            try:
                k, name = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[name] = engine.grade(build(root / f"case{k}", cases[name]), config, pm, r, plan)
            except Exception as exc:  # noqa: BLE001 - raised again by the test that asks for it
                results[name] = exc

    try:
        for r in extra:
            r.launch()
        engine.warm_up(plan)  # while the extra runners start
        for r in extra:
            r.wait_ready()
        threads = [threading.Thread(target=work, args=(r,)) for r in [runner, *extra]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for r in extra:
            r.stop()
    return results


def report_of(reports: dict[str, Any], name: str) -> Any:
    report = reports[name]
    if isinstance(report, BaseException):
        raise report
    return report
