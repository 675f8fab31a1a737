"""A student's batch record (``RESULTS/<student>/record.json``) and the class files built from them.

A record is plain JSON: who, which submission (its fingerprint), under which grading configuration,
the status, the score and every check's outcome. It is written last and atomically, so a student
with a record is done; the gradebooks and the class summary are rebuilt from the records alone.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import grader
from grader.config import RunConfig
from grader.report import write_text_atomic
from grader.results import GradingReport

FORMAT = 1
RECORD_NAME = "record.json"
#: statuses (the gradebook's ``status`` column); intake's statuses say why a submission could not be read
GRADED, LOAD_ERROR, TIMED_OUT = "graded", "load-error", "timed-out"
SKIPPED = "skipped-unchanged"  # this run: graded before, submission and configuration unchanged
EMPTY = "empty"
RUNNER_FAILED, GRADER_ERROR = "runner-failed", "grader-error"
#: the grader's fault, not the submission's: never skipped as unchanged
GRADER_FAULTS = frozenset({RUNNER_FAILED, GRADER_ERROR})
#: longest check message kept in a record (the full text is in the student's report)
MESSAGE_CHARS = 400


def config_key(config: RunConfig) -> str:
    """What, besides the submission, decides a grade: the grader's code, torch and the run's settings.

    The secret seed enters only hashed; the corpus by its content.
    """
    import torch

    from grader.refcache import code_key

    corpus = None
    if config.corpus_path is not None:
        try:
            corpus = hashlib.sha256(Path(config.corpus_path).read_bytes()).hexdigest()
        except OSError:
            corpus = str(config.corpus_path)
    secret = hashlib.sha256(b"rnn-grader secret\0" + config.secret.encode()).hexdigest() if config.secret else None
    packs = {}
    for folder in config.plugin_dirs:  # a pack's checks decide grades as much as the grader's own
        for path in sorted(Path(folder).glob("*.py")):
            try:
                packs[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                packs[str(path)] = None
    settings = {"grader": grader.__version__, "code": code_key(), "torch": torch.__version__, "corpus": corpus,
                "hidden": config.hidden, "timeout": config.check_timeout, "devices": list(config.devices),
                "secret": secret, "isolation": config.isolation, "packs": packs,
                "course": config.course.digest if config.course is not None else None,
                "memory": config.memory_limit}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def graded(entry: Any, fingerprint: str, key: str, report: GradingReport, reports_written: bool = True) -> dict:
    if report.timed_out:
        status = TIMED_OUT
        message = "ran out of time in " + ", ".join(report.timed_out)
    elif any(p.severity == "error" for p in report.problems):
        status = LOAD_ERROR
        message = "; ".join(f"{p.where}: {p.message}" for p in report.problems if p.severity == "error")
    else:
        status, message = GRADED, ""
    checks = [{"id": c.check_id, "exercise": c.exercise, "title": c.title, "status": c.status,
               "points": c.points, "max_points": c.max_points, "message": _first_line(c.message), "hidden": c.hidden,
               "seconds": c.seconds}
              for c in report.all_checks()]
    exercises = {e.name: {"title": e.title, "points": e.points, "max_points": e.max_points} for e in report.exercises}
    record = _base(entry, fingerprint, key, status, message[:1000])
    record.update(score=round(report.percent, 4), points=report.points, max_points=report.max_points,
                  exercises=exercises, checks=checks, report="report.html" if reports_written else None,
                  notices=list(report.notices), cpu_seconds=report.cpu_seconds)
    return record


def not_graded(entry: Any, fingerprint: str, key: str, status: str, message: str, notes: Iterable[str] = ()) -> dict:
    record = _base(entry, fingerprint, key, status, message)
    record["notices"] = list(notes)
    return record


def _base(entry: Any, fingerprint: str, key: str, status: str, message: str) -> dict:
    return {"format": FORMAT, "student": entry.student, "name": entry.name, "email": entry.email,
            "lms_id": entry.lms_id, "source": entry.source, "status": status, "message": message,
            "score": None, "points": None, "max_points": None, "exercises": {}, "checks": [], "seconds": 0.0,
            "fingerprint": fingerprint, "config_key": key, "grader_version": grader.__version__,
            "graded_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "report": None}


def _first_line(message: str) -> str:
    line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    return line[:MESSAGE_CHARS] + ("…" if len(line) > MESSAGE_CHARS else "")


def write(folder: Path, record: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(folder / RECORD_NAME, json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def read(folder: Path) -> Optional[dict]:
    """The record in ``folder``, or None when there is none or it is not one of ours."""
    try:
        with open(folder / RECORD_NAME, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("student") != folder.name:
        return None
    return record


def read_all(out: Path) -> dict[str, dict]:
    """Every student's record under ``out``, by student id."""
    found: dict[str, dict] = {}
    try:
        children = sorted(os.scandir(out), key=lambda e: e.name)
    except OSError:
        return found
    for child in children:
        if child.name.startswith(".") or not child.is_dir(follow_symlinks=False):
            continue
        record = read(Path(child.path))
        if record is not None:
            found[child.name] = record
    return found


def unchanged(record: Mapping, fingerprint: str, key: str, folder: Path) -> bool:
    """Whether ``record`` still stands: same submission, same configuration, and its reports are there."""
    if record.get("fingerprint") != fingerprint or record.get("config_key") != key:
        return False
    if record.get("status") in GRADER_FAULTS:
        return False
    return record.get("report") is None or (folder / str(record["report"])).is_file()


def rows_for_gradebook(by_student: Mapping[str, dict], run_status: Mapping[str, str]) -> list[dict]:
    """The records as gradebook rows: a student this run skipped shows ``skipped-unchanged``."""
    rows = []
    for student in sorted(by_student):
        record = dict(by_student[student])
        if student in run_status:
            record["graded_status"] = record["status"]
            record["status"] = run_status[student]
        rows.append(record)
    return rows


def exercise_names(pm: Any) -> list[str]:
    return [ex.name for group in pm.hook.grader_exercises() for ex in group]


def write_gradebooks(out: Path, rows: list[dict], exercises: list[str]) -> None:
    from grader.report.gradebook import write_canvas_csv, write_gradebook

    write_gradebook(out, rows, exercises)
    write_canvas_csv(out, rows)


def write_class_summary(out: Path, all_records: list[dict], exercises: list[str]) -> None:
    from grader.report.summary import build_summary
    from grader.report.summary_html import write_summary

    write_summary(out, build_summary(all_records, exercises))


def one_line(record: Mapping) -> str:
    """A log line for one student: ``alice: 87.5/100 graded`` or ``bob: empty (no .py files ...)``."""
    student = record.get("student")
    if record.get("score") is not None:
        text = f"{student}: {record['points']:g}/{record['max_points']:g} {record['status']}"
    else:
        text = f"{student}: {record['status']}"
    if record.get("message"):
        text += f" ({_first_line(str(record['message']))[:120]})"
    return text + f" [{record.get('seconds', 0):.1f} s]"
