"""`grade --batch`: a class of correct, buggy, hostile, archived, broken and linked submissions;
re-runs that skip what is unchanged; a batch killed mid-way and completed by the next run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REFERENCE, REPO

SECRET_TEXT = "instructor-only-7731"


def grade(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def reference_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in REFERENCE.glob("*.py") if p.name != "__init__.py"}


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def gradebook(out: Path) -> dict[str, dict]:
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def records_on_disk(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/record.json")}


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("class")
    subs = root / "submissions"
    subs.mkdir()
    ref = reference_files()
    write_folder(subs / "alice", ref)
    write_folder(subs / "bob", dict(ref, **{"rnn_scratch.py": ref["rnn_scratch.py"].replace("torch.tanh(", "torch.relu(")}))
    # an archive whose files sit one folder down, as a zip of a project usually has them
    with zipfile.ZipFile(subs / "carol.zip", "w") as archive:
        for name, text in ref.items():
            archive.writestr(f"carol/exercises/{name}", text)
    (subs / "dave.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream at all" * 20)
    # a link inside a folder: never followed, so the instructor's file never reaches the run or the report
    secret = root / "instructor" / "solution_notes.py"
    secret.parent.mkdir()
    secret.write_text(f"SECRET = {SECRET_TEXT!r}\n")
    erin = write_folder(subs / "erin", dict(ref, **{"extra.py": "import helper\nprint(helper.SECRET)\n"}))
    (erin / "helper.py").symlink_to(secret)
    (subs / "frank").symlink_to(subs / "alice")  # an entry that is a link: not followed
    # hostile: ends the process whenever sine_wave.py is imported
    write_folder(subs / "grace", dict(ref, **{"sine_wave.py": "import os\nos._exit(3)\n"}))
    (subs / "heidi").mkdir()  # empty
    (subs / "ivan.py").write_text(ref["rnn_scratch.py"])  # a single file: one exercise
    write_folder(subs / "judy", ref)
    shutil.make_archive(str(subs / "judy"), "zip", subs / "judy")  # judy/ and judy.zip: the same id twice
    return subs


@pytest.fixture(scope="module")
def graded_class(class_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "results"
    done = grade("--batch", str(class_folder), "--out", str(out), "--jobs", "2")
    return out, done


def test_every_student_gets_a_row_and_the_right_status(graded_class):
    out, done = graded_class
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    rows = gradebook(out)
    status = {student: row["status"] for student, row in rows.items()}
    assert status["alice"] == status["bob"] == status["carol"] == "graded"
    assert status["dave"] == "bad-archive"
    assert status["frank"] == "link"
    assert status["heidi"] == "empty"
    assert status["judy"] == "duplicate-id"
    assert status["grace"] == "load-error"
    assert status["erin"] in ("graded", "load-error")
    assert float(rows["alice"]["score"]) == float(rows["carol"]["score"]) == 100.0
    assert float(rows["bob"]["rnn_scratch"]) < 30 and float(rows["bob"]["grad_clipping"]) == 10
    # one student's crash costs that student's exercise only
    assert float(rows["grace"]["sine_wave"]) == 0 and float(rows["grace"]["rnn_scratch"]) == 30
    assert float(rows["ivan"]["rnn_scratch"]) == 30 and float(rows["ivan"]["score"]) == 30.0
    assert float(rows["erin"]["score"]) == 100.0
    for student in ("dave", "frank", "heidi", "judy"):
        assert rows[student]["score"] == ""  # not graded is not zero


def test_each_graded_student_has_the_single_grade_reports(graded_class):
    out, _ = graded_class
    for student in ("alice", "bob", "carol", "erin", "grace", "ivan"):
        results = json.loads((out / student / "results.json").read_text())
        assert results["tests"], student
        assert (out / student / "report.html").is_file()
    assert (out / "summary.html").is_file() and (out / "gradebook-canvas.csv").is_file()
    assert set(gradebook(out)) == set(records_on_disk(out))


def test_links_are_never_followed(graded_class):
    out, _ = graded_class
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET_TEXT not in path.read_text(errors="replace"), path


def test_not_graded_students_say_what_to_do(graded_class):
    out, _ = graded_class
    rows = gradebook(out)
    assert "alice" in rows["frank"]["message"] or "link" in rows["frank"]["message"]
    assert "judy.zip" in rows["judy"]["message"] and "judy/" in rows["judy"]["message"]
    assert rows["dave"]["message"]


def test_rerun_skips_the_unchanged_and_regrades_what_changed(graded_class, class_folder, tmp_path):
    out, _ = graded_class
    before = records_on_disk(out)
    again = grade("--batch", str(class_folder), "--out", str(out), "--jobs", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert records_on_disk(out) == before  # nothing graded again
    rows = gradebook(out)
    assert rows["alice"]["status"] == "skipped-unchanged" and float(rows["alice"]["score"]) == 100.0
    # one student changes a file: only that student is graded again
    bob = class_folder / "bob" / "rnn_scratch.py"
    original = bob.read_text()
    try:
        bob.write_text(reference_files()["rnn_scratch.py"])
        third = grade("--batch", str(class_folder), "--out", str(out), "--jobs", "1")
        assert third.returncode == 0, third.stdout + third.stderr
        after = records_on_disk(out)
        assert after["bob"]["graded_at"] >= before["bob"]["graded_at"] and after["bob"]["score"] == 100.0
        assert {s for s in after if after[s] != before[s]} == {"bob"}
        only = grade("--batch", str(class_folder), "--out", str(out), "--only", "alice")
        assert only.returncode == 0, only.stdout + only.stderr
        assert records_on_disk(out)["alice"]["fingerprint"] == before["alice"]["fingerprint"]
        assert "1 graded" in only.stdout
    finally:
        bob.write_text(original)


@pytest.mark.parametrize("args, message", [
    (["--batch", "{subs}"], "--out"),
    (["--batch", "{subs}", "--out", "{subs}/results"], "inside"),
    (["--batch", "{subs}", "--out", "{out}", "--only", "alise"], "alice"),
    (["--batch", "{subs}", "--out", "{out}", "--jobs", "0"], "--jobs"),
    (["--batch", "{subs}/alice/rnn_scratch.py", "--out", "{out}"], "not a folder"),
    (["reference/", "--force"], "--batch"),
])
def test_batch_usage_errors(args, message, class_folder, tmp_path):
    done = grade(*[a.format(subs=class_folder, out=tmp_path / "out") for a in args])
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_killed_batch_is_completed_by_the_next_run(tmp_path):
    subs = tmp_path / "submissions"
    ref = reference_files()
    for i in range(5):
        write_folder(subs / f"s{i}", dict(ref, **{"predict.py": ref["predict.py"] + f"\n# student {i}\n"}))
    out = tmp_path / "results"
    command = [sys.executable, "-m", "grader", "--batch", str(subs), "--out", str(out), "--jobs", "1"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("*/record.json"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a killed machine would
        proc.wait()
    finished = records_on_disk(out)
    assert 2 <= len(finished) < 5
    assert set(gradebook(out)) == set(finished)  # the class file agrees with the records on disk
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    after = records_on_disk(out)
    assert set(after) == {f"s{i}" for i in range(5)}
    assert all(after[s] == finished[s] for s in finished)  # finished students were not graded again
    assert f"{len(finished)} unchanged" in done.stdout
    assert all(r["score"] == 100.0 for r in after.values())
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())
