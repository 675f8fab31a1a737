"""File errors that point the student at the fix: the hook a misspelt name means, a forgotten
``@hookimpl``, and the subfolder a student meant when they graded the folder above it."""

from __future__ import annotations

import pytest

import grader.judge.loading  # noqa: F401 - imported here so pytester's in-process runs import nothing new
from conftest import REFERENCE, checks_of, listed
from grader import cli
from grader.config import RunConfig
from grader.judge.loading import load, read_submission
from grader.report.formatting import MESSAGE_LIMIT
from grader.report.terminal import with_paths
from grader.results import ERROR, NOT_IMPLEMENTED, PASSED
from grader.runner.loader import suggest_hook

pytest_plugins = ["pytester"]


def loaded(runner, folder):
    """The runner's load of ``folder`` (no probe run): which file implements which hook, and its problems."""
    files, problems = read_submission(folder)
    assert not problems
    return load(files, runner, RunConfig())


def problems_of(result, severity: str) -> dict:
    return {p.path: p.message for p in result.problems if p.severity == severity}


# ------------------------------------------------------------------ typo suggestions


@pytest.mark.parametrize("name, meant", [
    ("rnn_forward", "rnn"),                # starts with a hook: not difflib's closest, rnn_model
    ("my_rnn", "rnn"),                     # contains one
    ("rnn_model_forward", "rnn_model"),    # contains rnn and rnn_model: the longer one
    ("train_epoch_ch8", "train_epoch"),    # the book's own name for it
    ("Predict_chars", "predict"),
    ("init_rnn_stat", "init_rnn_state"),   # a misspelt longer hook, though it contains rnn
    ("rnn_modle", "rnn_model"),
    ("get_param", "get_params"),           # contains none: difflib's closest
    ("grad_clip", "grad_clipping"),
    ("xyzzy", None),
])
def test_a_misspelt_hook_suggests_the_hook_it_starts_with_or_contains(name, meant):
    assert suggest_hook(name) == meant


def test_a_marked_function_with_a_longer_name_suggests_the_hook_it_extends(runner, submission):
    source = (REFERENCE / "rnn_scratch.py").read_text().replace("def rnn(", "def rnn_forward(")
    result = loaded(runner, submission({"rnn_scratch.py": source}))
    message = problems_of(result, "error")["rnn_scratch.py"]
    assert "'rnn_forward' is marked @hookimpl but is not a hook" in message
    assert "did you mean 'rnn'?" in message
    assert "rnn" not in result.where


# ------------------------------------------------------------------ a file that failed to import


def test_checks_of_a_file_that_failed_to_import_are_errors_naming_its_problem(grading, submission):
    source = (REFERENCE / "rnn_scratch.py").read_text()
    broken = source.replace("def rnn(inputs, state, params):", "def rnn(inputs, state, params)")
    assert broken != source
    line = broken.split("def rnn(inputs, state, params)\n")[0].count("\n") + 1
    report = grading(submission({"rnn_scratch.py": broken}))
    checks = checks_of(report, "rnn_scratch")
    assert {c.status for c in checks.values()} == {ERROR}, listed(checks)  # not "not implemented": it is there
    first = checks["rnn_scratch.params.shapes"].message
    assert first.startswith("not graded: get_params is in rnn_scratch.py, which could not be imported: SyntaxError")
    assert f"at rnn_scratch.py:{line}" in first
    assert all(c.status == PASSED for c in report.all_checks() if c.exercise != "rnn_scratch")


def test_an_unreadable_exercise_file_makes_its_checks_errors(grading, submission):
    folder = submission({"grad_clipping.py": None})
    (folder / "grad_clipping.py").write_bytes(b"from grader import hookimpl\n# caf\xe9 au lait\n")
    report = grading(folder)
    checks = checks_of(report, "grad_clipping")
    assert {c.status for c in checks.values()} == {ERROR}, listed(checks)
    assert "grad_clipping.py, which is not UTF-8 text; save it as UTF-8" in checks["grad_clipping.above"].message


def test_a_file_without_the_hook_still_leaves_it_not_implemented(grading, submission):
    # the file with a problem does not define predict: predict is simply missing
    report = grading(submission({"predict.py": None, "helpers.py": "import no_such_module_anywhere\n"}))
    checks = checks_of(report, "predict")
    assert {c.status for c in checks.values()} == {NOT_IMPLEMENTED}, listed(checks)


def test_locations_become_paths_from_the_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "exercises"
    folder.mkdir()
    (folder / "rnn_scratch.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    text = "rnn raised ValueError: no at rnn_scratch.py:12 in rnn: x; see helper.py:3 and exercises/rnn_scratch.py:4"
    # a submission file gets its folder; a name that is not one of its files, or already a path, is left alone
    assert with_paths(text, str(folder)) == ("rnn raised ValueError: no at exercises/rnn_scratch.py:12 in rnn: x; "
                                             "see helper.py:3 and exercises/rnn_scratch.py:4")
    monkeypatch.chdir(folder)
    assert with_paths(text, str(folder)) == text


# ------------------------------------------------------------------ a forgotten @hookimpl


def test_a_hook_kept_under_the_books_name_too_is_one_hook(runner, submission):
    # the book calls it predict_ch8; a student keeps both names: not a second, misspelt hook
    source = (REFERENCE / "predict.py").read_text() + "\n\npredict_ch8 = predict\n"
    result = loaded(runner, submission({"predict.py": source}))
    assert result.where.get("predict") == "predict.py"
    assert not [p for p in result.problems if p.path == "predict.py"], result.problems


def test_specname_names_the_hook_as_pluggy_does(runner, submission):
    source = (REFERENCE / "predict.py").read_text().replace("@hookimpl\ndef predict(", '@hookimpl(specname="predict")\ndef predict_ch8(')
    assert "def predict_ch8(" in source
    result = loaded(runner, submission({"predict.py": source}))
    assert result.where.get("predict") == "predict.py"
    assert not [p for p in result.problems if p.path == "predict.py"], result.problems


def test_a_warning_printed_by_student_code_names_their_file_not_the_staged_copy(grading, submission):
    source = (REFERENCE / "grad_clipping.py").read_text().replace(
        "def grad_clipping(net, theta):", "def grad_clipping(net, theta):\n    import warnings; warnings.warn('careful')")
    assert "warnings.warn" in source
    report = grading(submission({"grad_clipping.py": source}))
    output = checks_of(report, "grad_clipping")["grad_clipping.above"].output
    assert "grad_clipping.py:" in output and "UserWarning: careful" in output, output
    assert "submission-" not in output and "/tmp/" not in output, output


def test_a_hook_without_its_marker_is_a_warning_saying_to_add_it(runner, submission):
    source = (REFERENCE / "rnn_scratch.py").read_text()
    assert "@hookimpl\ndef rnn(" in source
    line = source.split("@hookimpl\ndef rnn(")[0].count("\n") + 1  # the def's line, once the marker is gone
    result = loaded(runner, submission({"rnn_scratch.py": source.replace("@hookimpl\ndef rnn(", "def rnn(")}))
    assert "rnn" not in result.where
    message = problems_of(result, "warning")["rnn_scratch.py"]
    assert "'rnn' is not marked @hookimpl, so it was not graded" in message
    assert [p.where for p in result.problems if p.severity == "warning"] == [f"rnn_scratch.py:{line}"]
    assert "put `@hookimpl` on the line above it (and `from grader import hookimpl` at the top)" in message
    assert len(message) <= MESSAGE_LIMIT  # the fix is not cut off in the summary
    assert not problems_of(result, "error")
    # the other hooks of the file are still found
    assert result.where["get_params"] == result.where["init_rnn_state"] == "rnn_scratch.py"


def test_an_unmarked_function_is_just_a_helper_when_another_file_marks_that_hook(runner, submission):
    helper = ("import torch\n\n\n"
              "def rnn(inputs, state, params):\n"
              "    \"\"\"my first try, kept for comparison\"\"\"\n"
              "    return torch.cat(inputs), state\n")
    result = loaded(runner, submission({"my_helpers.py": helper}))
    assert result.where["rnn"] == "rnn_scratch.py"
    assert not result.problems


# ------------------------------------------------------------------ the folder one level up


@pytest.fixture
def parent_of_exercises(tmp_path, monkeypatch):
    """A folder whose .py files are in exercises/, and a hidden folder with one that is never suggested."""
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / "rnn_scratch.py").write_text((REFERENCE / "rnn_scratch.py").read_text())
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "old.py").write_text("")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_grade_one_level_up_names_the_subfolder(parent_of_exercises, capsys):
    assert cli.main(["."]) == cli.USAGE_ERROR
    err = capsys.readouterr().err
    assert ". has no .py files, but exercises/ does: did you mean `grade exercises/`?" in err
    assert "ipynb_checkpoints" not in err and "notes" not in err and "Traceback" not in err


def test_every_subfolder_with_py_files_is_named(parent_of_exercises, capsys):
    (parent_of_exercises / "attempt2").mkdir()
    (parent_of_exercises / "attempt2" / "rnn_scratch.py").write_text("")
    assert cli.main([str(parent_of_exercises)]) == cli.USAGE_ERROR
    err = capsys.readouterr().err
    assert f"did you mean `grade {parent_of_exercises}/attempt2/` or `grade {parent_of_exercises}/exercises/`?" in err


def test_a_folder_with_no_py_files_anywhere_still_says_init(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    assert cli.main([str(tmp_path)]) == cli.USAGE_ERROR
    assert f"has no .py files; run `grade --init {tmp_path}`" in capsys.readouterr().err


def test_pytest_grade_one_level_up_names_the_subfolder(pytester):
    (pytester.path / "exercises").mkdir()
    (pytester.path / "exercises" / "rnn_scratch.py").write_text("")
    result = pytester.runpytest("--grade", ".")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "did you mean `pytest --grade exercises/`?" in result.stderr.str()


def test_a_system_without_fork_is_told_in_one_line(monkeypatch, capsys, tmp_path):
    import os

    from grader import cli

    monkeypatch.delattr(os, "fork")
    assert cli.main([str(tmp_path)]) == cli.GRADER_FAILURE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fork()" in err and "WSL" in err and "Traceback" not in err


def test_loading_files_one_by_one_waits_out_a_fork_that_fails_for_a_while(tmp_path, monkeypatch):
    """A busy machine can refuse a fork for a moment (a per-user process limit): that is no file's fault."""
    import os

    from grader.runner import child

    (tmp_path / "fine.py").write_text("X = 1\n")
    (tmp_path / "ends.py").write_text("import os\nos._exit(3)\n")
    real_fork, refusals = os.fork, iter(range(3))

    def busy_fork():
        if next(refusals, None) is not None:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real_fork()

    monkeypatch.setattr(child.os, "fork", busy_fork)
    outcomes = child.load_separately(tmp_path, per_file=10.0, budget=20.0)["files"]
    assert outcomes["fine.py"]["outcome"] == "ok"
    assert outcomes["ends.py"]["outcome"] == "died" and outcomes["ends.py"]["exit_code"] == 3
