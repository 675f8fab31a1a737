"""The Gradescope autograder: the archive, ``run_autograder`` on an ``/autograder``-shaped root, and
what students may see while checks are hidden.

One archive is built per module (with a test course, the example hidden pack and a secret seed) and
unpacked into a fresh root per test; ``setup.sh`` is not run, the test environment already holds
torch and the grader. Only one test grades for real (about 15 s); the others stop before grading
or work on staging and on hand-built reports.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import grader
from conftest import REFERENCE, REPO
from grader import autograder
from grader.autograder import AutograderError, build_archive
from grader.autograder_run import GRADER_FAILED, find_submission
from grader.config import RunConfig
from grader.course import load_course
from grader.judge.loading import read_graded
from grader.report import gradescope
from grader.report.formatting import fmt_points
from grader.report.terminal import format_summary
from grader.results import FAILED, NOT_IMPLEMENTED, PASSED, VISIBLE, CheckResult, ExerciseResult, GradingReport

PACK = REPO / "examples" / "check_pack"
#: grad_clipping only (grading is quicker), its points changed, one built-in check shown after the due date;
#: the example pack adds a hidden check to it
COURSE = """course = "Autograder test"
include = ["grad_clipping"]

[exercises.grad_clipping]
points = 12

[checks."grad_clipping.below"]
visibility = "after_due_date"
"""
SECRET = "only-the-autograder-reads-this"
#: Gradescope's results.json specification
TOP_KEYS = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
            "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
TEST_KEYS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags",
             "visibility", "extra_data"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("course")
    (folder / "grader.toml").write_text(COURSE)
    config = RunConfig(course=load_course(folder / "grader.toml"), plugin_dirs=(PACK,), secret=SECRET)
    return build_archive(folder / "autograder.zip", config)


def unpack(archive: Path, root: Path) -> Path:
    """The archive in ``root/source`` as Gradescope's unzip leaves it (with the members' modes)."""
    source = root / "source"
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = source / info.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(zf.read(info))
            path.chmod(stat.S_IMODE(info.external_attr >> 16))
    (root / "submission").mkdir()
    return root


def run_autograder(root: Path, path: str = "") -> tuple[subprocess.CompletedProcess, dict]:
    """``root/source/run_autograder`` with this environment's python first on PATH; its results.json."""
    env = dict(os.environ, AUTOGRADER_ROOT=str(root),
               PATH=path or f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    data = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    assert set(data) <= TOP_KEYS and {"score", "output", "tests"} <= set(data)
    for test in data["tests"]:
        assert set(test) <= TEST_KEYS and test["status"] in ("passed", "failed")
    return done, data


# ---------------------------------------------------------------------------------------------- the archive


def test_the_archive_holds_what_gradescope_runs(archive):
    with zipfile.ZipFile(archive) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        read = {name: zf.read(name) for name in infos}
    wheel = f"wheels/rnn_grader-{grader.__version__}-py3-none-any.whl"
    assert list(infos) == sorted(infos)
    assert set(infos) == {"setup.sh", "run_autograder", "autograder.json", "course/grader.toml",
                          "packs/check_pack/course_checks.py", "secret-seed", wheel}
    assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in infos.values())
    mode = {name: stat.S_IMODE(info.external_attr >> 16) for name, info in infos.items()}
    assert mode["setup.sh"] == mode["run_autograder"] == 0o755 and mode["secret-seed"] == 0o600
    manifest = json.loads(read["autograder.json"])
    assert manifest["course"] == "course/grader.toml" and manifest["packs"] == ["packs/check_pack"]
    assert manifest["grader"] == wheel and manifest["secret"] == "secret-seed"
    assert read["secret-seed"] == SECRET.encode()
    assert all(SECRET.encode() not in data for name, data in read.items() if name != "secret-seed")
    setup = read["setup.sh"].decode()
    torch_version = autograder.torch_version()
    assert f"--index-url {autograder.TORCH_CPU_INDEX} torch=={torch_version}" in setup
    assert f'"$SOURCE"/{wheel}' in setup and "bubblewrap" in setup
    for script in ("setup.sh", "run_autograder"):
        subprocess.run(["bash", "-n"], input=read[script], check=True)  # valid bash
    with zipfile.ZipFile(io.BytesIO(read[wheel])) as built:
        names = built.namelist()
    assert "grader/autograder_run.py" in names and not any(n.startswith("tests/") for n in names)


def test_the_archive_is_deterministic_and_can_pin_the_index(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "rnn_grader-0-py3-none-any.whl"
    fake.write_bytes(b"a wheel")
    monkeypatch.setattr(autograder, "grader_wheel", lambda scratch: fake)
    config = RunConfig(plugin_dirs=(PACK,))
    first = build_archive(tmp_path / "a.zip", config).read_bytes()
    assert build_archive(tmp_path / "b.zip", config).read_bytes() == first

    monkeypatch.undo()
    monkeypatch.setattr(autograder, "project_root", lambda: None)  # installed from the index, not a checkout
    with zipfile.ZipFile(build_archive(tmp_path / "c.zip", RunConfig())) as zf:
        manifest = json.loads(zf.read("autograder.json"))
        setup = zf.read("setup.sh").decode()
        assert not [n for n in zf.namelist() if n.startswith("wheels/")]
    assert manifest["grader"] == f"rnn-grader=={grader.__version__}" and "course" not in manifest
    assert f"pip install --no-cache-dir rnn-grader=={grader.__version__}" in setup
    assert "from the package index" in capsys.readouterr().err


def test_archive_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(autograder, "grader_wheel", lambda scratch: None)
    empty, twin = tmp_path / "empty", tmp_path / "other" / "check_pack"
    empty.mkdir()
    twin.mkdir(parents=True)
    (twin / "more.py").write_text("")
    cases = [
        (tmp_path / "autograder.tar", RunConfig(), "must end in .zip"),
        (tmp_path / "missing" / "a.zip", RunConfig(), "does not exist"),
        (tmp_path, RunConfig(), "must end in .zip"),
        (tmp_path / "a.zip", RunConfig(plugin_dirs=(empty,)), "holds no .py check modules"),
        (tmp_path / "a.zip", RunConfig(plugin_dirs=(tmp_path / "nowhere",)), "not a folder"),
        (tmp_path / "a.zip", RunConfig(plugin_dirs=(PACK, twin)), "two check packs are named check_pack"),
    ]
    for out, config, message in cases:
        with pytest.raises(AutograderError, match=message):
            build_archive(out, config)
    assert not (tmp_path / "a.zip").exists()


# ---------------------------------------------------------------------------------------------- run_autograder


def test_run_autograder_grades_files_in_a_subfolder_and_a_zip(archive, tmp_path):
    """The reference in some/sub/folder/, grad_clipping.py in a zip beside it, an older copy deeper down:
    full marks, each check's status in extra_data, and the hidden checks nowhere students look."""
    root = unpack(archive, tmp_path / "autograder")
    folder = root / "submission" / "some" / "sub" / "folder"
    folder.mkdir(parents=True)
    for path in REFERENCE.glob("*.py"):
        if path.name not in ("__init__.py", "grad_clipping.py"):
            (folder / path.name).write_bytes(path.read_bytes())
    with zipfile.ZipFile(folder / "work.zip", "w") as zf:
        zf.write(REFERENCE / "grad_clipping.py", "grad_clipping.py")
    (folder / "old" / "deeper").mkdir(parents=True)
    (folder / "old" / "deeper" / "grad_clipping.py").write_text("raise SystemExit('an old draft')\n")

    done, data = run_autograder(root)
    tests = data["tests"]
    assert data["score"] == pytest.approx(sum(t["max_score"] for t in tests)) == pytest.approx(12)
    assert all(t["extra_data"] == {"status": PASSED} for t in tests), [t["output"] for t in tests]
    by_visibility = {t["visibility"]: t for t in tests}
    assert "deeper network" in by_visibility["hidden"]["name"]  # the pack's check ran
    assert "below θ" in by_visibility["after_due_date"]["name"]  # the course changed its visibility
    assert [t["number"] for t in tests if t["visibility"] == VISIBLE] == ["1.1", "1.2", "1.3"]
    assert data["stdout_visibility"] == "hidden"

    shown = [t for t in tests if t["visibility"] == VISIBLE]
    score = f"{fmt_points(sum(t['score'] for t in shown))}/{fmt_points(sum(t['max_score'] for t in shown))}"
    for seen in (data["output"], done.stdout):
        assert score in seen and "hidden until your instructor releases them" in seen
        assert "/12" not in seen  # no total that counts the hidden checks
        for hidden in (t for t in tests if t["visibility"] != VISIBLE):
            assert hidden["name"].split(": ", 1)[1] not in seen
            assert hidden["output"].split("] ", 1)[1].splitlines()[0] not in seen
    assert "some/sub/folder/work.zip/" in data["output"] and "Autograder test" in data["output"]
    assert "old/deeper/grad_clipping.py" in data["output"]  # the copy not graded is named
    assert SECRET not in done.stdout + done.stderr + json.dumps(data)


def test_run_autograder_on_an_empty_submission_says_what_it_expected(archive, tmp_path):
    root = unpack(archive, tmp_path / "empty")
    done, data = run_autograder(root)
    assert data["tests"] == [] and data["score"] == 0
    assert "Nothing to grade" in data["output"] and "rnn_scratch.py" in data["output"]
    assert "is empty" in data["output"] and "Nothing to grade" in done.stdout

    root = unpack(archive, tmp_path / "other")
    (root / "submission" / "docs").mkdir()
    (root / "submission" / "docs" / "answers.txt").write_text("see attached")
    assert "It holds: docs/answers.txt" in run_autograder(root)[1]["output"]


def test_run_autograder_when_the_grader_fails(archive, tmp_path):
    """A broken archive is the grader's failure, not the student's: said so, the traceback in stderr only."""
    root = unpack(archive, tmp_path / "broken")
    (root / "source" / "autograder.json").unlink()
    (root / "submission" / "rnn_scratch.py").write_bytes((REFERENCE / "rnn_scratch.py").read_bytes())
    done, data = run_autograder(root)
    assert data["output"] == GRADER_FAILED and data["stdout_visibility"] == "hidden"
    assert "Traceback" in done.stderr and "autograder.json" in done.stderr and "Traceback" not in done.stdout

    # no python that can run the grader at all: the script's own results.json
    root = unpack(archive, tmp_path / "no-python")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\nexit 3\n")
    (fake / "python3").chmod(0o755)
    done, data = run_autograder(root, path=f"{fake}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert "the grader failed, not your submission" in data["output"] and data["tests"] == []
    assert "status 3" in done.stderr


# ---------------------------------------------------------------------------------------------- finding the files


def put(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_shallowest_exercise_files_win_and_their_helpers_come_along(tmp_path):
    submission = put(tmp_path / "submission", {
        "hw/rnn_scratch.py": "A = 1\n", "hw/helpers.py": "H = 1\n", "hw/old/rnn_scratch.py": "A = 2\n",
        "work/predict.py": "P = 1\n", "tests/test_mine.py": "T = 1\n", "hw/.ipynb_checkpoints/x.py": "",
    })
    found = find_submission(submission, tmp_path / "staged")
    assert sorted(p.name for p in found.folder.iterdir()) == ["helpers.py", "predict.py", "rnn_scratch.py"]
    assert (found.folder / "rnn_scratch.py").read_text() == "A = 1\n"
    notes = "\n".join(found.notes)
    assert "graded the files in hw/ and work/" in notes
    assert "rnn_scratch.py is in 2 places: graded hw/rnn_scratch.py, not hw/old/rnn_scratch.py" in notes
    assert "not graded: tests/test_mine.py" in notes


def test_files_in_a_zip_a_tar_and_an_unsafe_archive(tmp_path):
    submission = tmp_path / "submission"
    (submission / "upload").mkdir(parents=True)
    with zipfile.ZipFile(submission / "upload" / "solution.zip", "w") as zf:
        zf.writestr("solution/rnn_scratch.py", "A = 1\n")
        zf.writestr("solution/helpers.py", "H = 1\n")
        zf.writestr("__MACOSX/solution/._rnn_scratch.py", "junk")
    with zipfile.ZipFile(submission / "evil.zip", "w") as zf:
        zf.writestr("../predict.py", "P = 1\n")
    found = find_submission(submission, tmp_path / "staged")
    assert sorted(p.name for p in found.folder.iterdir()) == ["helpers.py", "rnn_scratch.py"]
    assert any("not opened: submission/evil.zip holds '../predict.py'" in note for note in found.notes)


def test_a_notebook_is_graded_as_python(tmp_path):
    source = (REFERENCE / "grad_clipping.py").read_text()
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Homework"]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 1,
         "source": ["%matplotlib inline\n", "!pip install d2l\n", "if True:\n", "    !nvidia-smi\n"]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 2, "source": source},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 3, "source": "%%bash\nls -la\n"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 4,
         "source": "%%time\nget_ipython().run_line_magic('who', '')\ny = 2\n"},
    ]}
    submission = put(tmp_path / "submission", {"My Homework.ipynb": json.dumps(notebook)})
    found = find_submission(submission, tmp_path / "staged")
    # the notebook is staged as itself; grading converts it with grader.notebooks, as `grade` does
    assert [p.name for p in found.folder.iterdir()] == ["My Homework.ipynb"]
    files, problems, notebooks = read_graded(found.folder)
    converted = files["My_Homework.py"]
    compile(converted, "My_Homework.py", "exec")
    assert "def grad_clipping(" in converted and "y = 2" in converted
    assert "ls -la" not in converted and "pip install" not in converted and "get_ipython" not in converted
    assert notebooks["My_Homework.py"].name == "My Homework.ipynb" and not problems

    # beside an exercise's .py file, a notebook named otherwise is left alone
    put(submission, {"predict.py": "P = 1\n"})
    found = find_submission(submission, tmp_path / "staged-again")
    assert [p.name for p in found.folder.iterdir()] == ["predict.py"]
    # one that cannot be read is named, not graded
    (submission / "predict.py").unlink()
    put(submission, {"rnn_scratch.ipynb": "{not json"})
    found = find_submission(submission, tmp_path / "staged-broken")
    assert any("rnn_scratch.ipynb is not a notebook Jupyter can open" in note for note in found.notes)


# ---------------------------------------------------------------------------------------------- hidden checks


def result(exercise: str, name: str, status: str, points: float, max_points: float, **kw) -> CheckResult:
    return CheckResult(check_id=f"{exercise}.{name}", exercise=exercise, title=kw.pop("title", name), hooks=(exercise,),
                       max_points=max_points, points=points, status=status, message=kw.pop("message", ""), **kw)


def test_hidden_checks_stay_out_of_everything_students_see():
    clipping = (
        result("grad_clipping", "shown", PASSED, 2, 2, message="fine"),
        result("grad_clipping", "secret", FAILED, 0, 5, title="SECRET TITLE", message="SECRET MESSAGE",
               visibility="hidden", hidden=True),
        result("grad_clipping", "marked", FAILED, 0, 1, title="MARKED HIDDEN", message="SECRET TOO", hidden=True),
        result("grad_clipping", "later", PASSED, 1, 1, visibility="after_due_date", hidden=True),
    )
    only_hidden = (result("predict", "all", NOT_IMPLEMENTED, 0, 3, title="SECRET EXERCISE",
                          visibility="after_published", hidden=True),)
    report = GradingReport("submission/", 3, 12, (
        ExerciseResult("predict", "Greedy prediction", 0, 3, only_hidden, figures={"secret": 1}),
        ExerciseResult("grad_clipping", "Gradient clipping", 3, 9, clipping, figures={"SECRET FIGURE": 1}),
    ), notices=("a note",))
    data = gradescope.to_gradescope(report)
    assert set(data) <= TOP_KEYS and all(set(t) <= TEST_KEYS for t in data["tests"])
    assert data["stdout_visibility"] == "hidden" and data["score"] == 3
    numbers = {t["name"].split(": ", 1)[1]: (t["number"], t["visibility"], t["extra_data"]["status"])
               for t in data["tests"]}
    assert numbers == {  # the visible checks numbered first, without gaps
        "shown": ("1.1", "visible", PASSED), "SECRET TITLE": ("1.2", "hidden", FAILED),
        "MARKED HIDDEN": ("1.3", "after_published", FAILED), "later": ("1.4", "after_due_date", PASSED),
        "SECRET EXERCISE": ("2.1", "after_published", NOT_IMPLEMENTED)}
    assert "Score on the checks shown: 2/2 (100%)" in data["output"] and "a note" in data["output"]
    assert "Checks: 1 passed" in data["output"] and "predict" not in data["output"]
    shown = gradescope.student_view(report)
    assert (shown.points, shown.max_points, [e.name for e in shown.exercises]) == (2, 2, ["grad_clipping"])
    assert shown.exercises[0].figures == {}
    stdout = format_summary(shown, RunConfig(verbose=True))
    for seen in (data["output"], stdout):
        assert "SECRET" not in seen and "/12" not in seen and "/9" not in seen

    visible = GradingReport("s", 2, 2, (ExerciseResult("grad_clipping", "Clipping", 2, 2, clipping[:1]),))
    data = gradescope.to_gradescope(visible)
    assert data["stdout_visibility"] == "visible" and data["output"].startswith("Score: 2/2 (100%)")
    assert "hidden" not in data["output"]


def test_results_without_grading_are_valid():
    data = gradescope.without_grading("Nothing to grade \x1b[31m", stdout_visible=False)
    assert set(data) <= TOP_KEYS and data["tests"] == [] and data["stdout_visibility"] == "hidden"
    assert "\\x1b" in data["output"]
