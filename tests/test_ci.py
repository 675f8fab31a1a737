"""Pull-request grading: the workflow ``grade --init-ci`` writes and ``--base``'s list of changed files.

Fast: nothing here grades. The workflow is read as YAML and its promises are checked one by one; its
"keep only the exercise files" script runs for real on a folder laid out like a pull request.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import grader
from grader import ci
from grader.registry import EXERCISES, file_name

EXERCISE_FILES = [file_name(exercise.name) for exercise in EXERCISES]


def load(text: str) -> dict:
    workflow = yaml.safe_load(text)
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True; GitHub reads it as "on"
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def step_named(workflow: dict, start: str) -> dict:
    (found,) = [s for s in steps(workflow) if s.get("name", "").startswith(start)]
    return found


def course_with(tmp_path: Path, text: str):
    course = pytest.importorskip("grader.course")
    (tmp_path / "grader.toml").write_text(text)
    return course.load_course(tmp_path / "grader.toml")


@pytest.fixture(scope="module")
def plain() -> dict:
    return load(ci.render_workflow(None))


# -- the workflow ----------------------------------------------------------------------------------------


def test_runs_on_pull_requests_only(plain):
    assert list(plain["on"]) == ["pull_request"]


def test_the_token_is_read_only_and_no_secret_is_used(plain):
    assert plain["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in plain["jobs"].values())
    assert "secrets." not in ci.render_workflow(None)


def test_the_grader_is_pinned_and_installed_before_any_checkout(plain):
    assert plain["env"]["GRADER"] == f"rnn-grader=={grader.__version__}"
    import torch

    assert plain["env"]["TORCH"] == f"torch=={torch.__version__.split('+')[0]}"
    assert plain["env"]["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    names = [s.get("uses", s.get("name", "")) for s in steps(plain)]
    install = names.index("Install the pinned grader")
    assert install < min(i for i, s in enumerate(steps(plain)) if s.get("uses", "").startswith("actions/checkout"))
    script = steps(plain)[install]["run"]
    assert 'pip install --index-url "$TORCH_INDEX" "$TORCH"' in script
    assert 'pip install "$GRADER" "$TORCH"' in script
    # nothing anywhere installs from a folder (such as the student's checkout)
    for step in steps(plain):
        for line in step.get("run", "").splitlines():
            if "pip install" in line:
                assert not any(word in line.split() for word in (".", "-e", "--editable", "submission", "course"))


def test_the_submission_and_the_course_come_from_their_own_checkouts(plain):
    checkouts = {s["with"]["path"]: s["with"] for s in steps(plain) if s.get("uses") == "actions/checkout@v4"}
    assert checkouts["submission"]["ref"] == "${{ github.event.pull_request.head.sha }}"
    assert checkouts["submission"]["fetch-depth"] == 0  # --base needs the history
    assert checkouts["course"]["ref"] == "${{ github.base_ref }}"
    assert all(c["persist-credentials"] is False for c in checkouts.values())


def test_only_the_exercise_files_are_graded(plain):
    assert plain["env"]["EXERCISE_FILES"].split() == EXERCISE_FILES
    grade = step_named(plain, "Grade")
    command = grade["run"]
    assert command.startswith('grade "submission/$EXERCISES_DIR" ')
    assert "\n" not in command.strip()  # one command line, folded
    assert '--base "origin/$BASE_REF"' in command and grade["env"]["BASE_REF"] == "${{ github.base_ref }}"
    assert "--out report/" in command and "--junit report/junit.xml" in command
    # without a course configuration the defaults grade: never a configuration from the pull request
    assert "--no-config" in command and "--config" not in command.replace("--no-config", "")
    assert "--fail-under" not in command and "FAIL_UNDER" not in plain["env"]


def test_the_keep_script_leaves_only_the_exercise_files(plain, tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    checkout = tmp_path / "submission"
    folder = checkout / "exercises"
    (folder / "helpers").mkdir(parents=True)
    (checkout / ".git").mkdir()
    (checkout / ".github" / "workflows").mkdir(parents=True)
    (checkout / ".github" / "workflows" / "grade.yml").write_text("edited")
    for name in EXERCISE_FILES[:3] + ["helper.py", "conftest.py", ".hidden.py", "grader.toml"]:
        (folder / name).write_text(f"# {name}\n")
    (folder / "helpers" / "util.py").write_text("")
    (folder / EXERCISE_FILES[3]).symlink_to("/etc/hostname")  # kept as a link: the grader refuses links
    env = dict(os.environ, RUNNER_TEMP=str(tmp_path / "temp"), EXERCISES_DIR="exercises",
               EXERCISE_FILES=plain["env"]["EXERCISE_FILES"])
    script = step_named(plain, "Keep only")
    assert tmp_path / script["working-directory"] == checkout
    subprocess.run(["bash", "-eo", "pipefail", "-c", script["run"]], cwd=checkout, env=env, check=True,
                   capture_output=True, timeout=30)
    assert sorted(p.name for p in folder.iterdir()) == sorted(EXERCISE_FILES[:4])
    assert (folder / EXERCISE_FILES[0]).read_text() == f"# {EXERCISE_FILES[0]}\n"
    assert (folder / EXERCISE_FILES[3]).is_symlink()
    assert (checkout / ".git").is_dir()  # the history --base reads

    # exercise files at the top of the repository: everything but .git and them goes
    (checkout / EXERCISE_FILES[0]).write_text("top")
    subprocess.run(["bash", "-eo", "pipefail", "-c", script["run"]], cwd=checkout,
                   env=dict(env, EXERCISES_DIR=".", RUNNER_TEMP=str(tmp_path / "temp2")),
                   check=True, capture_output=True, timeout=30)
    assert sorted(p.name for p in checkout.iterdir()) == [".git", EXERCISE_FILES[0]]


def test_the_report_is_uploaded_even_when_grading_fails(plain):
    upload = [s for s in steps(plain) if s.get("uses", "").startswith("actions/upload-artifact")]
    assert [s["uses"] for s in upload] == ["actions/upload-artifact@v4"]
    assert upload[0]["if"] == "always()" and upload[0]["with"]["path"] == "report/"


def test_time_limit_concurrency_and_python(plain):
    (job,) = plain["jobs"].values()
    assert 0 < job["timeout-minutes"] <= 60
    assert "github.event.pull_request.number" in plain["concurrency"]["group"]
    assert plain["concurrency"]["cancel-in-progress"] is True
    (setup,) = [s for s in steps(plain) if s.get("uses") == "actions/setup-python@v5"]
    assert setup["with"]["python-version"].count(".") == 1


def test_a_course_configuration_sets_config_and_fail_under(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    workflow = load(ci.render_workflow(course_with(tmp_path, "fail_under = 62.5\n")))
    command = step_named(workflow, "Grade")["run"]
    assert workflow["env"]["COURSE_CONFIG"] == "grader.toml"
    assert '--config "course/$COURSE_CONFIG"' in command and "--no-config" not in command
    assert workflow["env"]["FAIL_UNDER"] == "62.5" and '--fail-under "$FAIL_UNDER"' in command
    assert float(workflow["env"]["FAIL_UNDER"]) == 62.5

    without = load(ci.render_workflow(course_with(tmp_path, 'course = "no threshold"\n')))
    assert "--fail-under" not in step_named(without, "Grade")["run"] and "FAIL_UNDER" not in without["env"]


def test_the_configuration_is_named_by_its_place_in_the_repository(tmp_path, monkeypatch):
    (tmp_path / "course" / "setup").mkdir(parents=True)
    course = course_with(tmp_path / "course" / "setup", "fail_under = 50\n")
    monkeypatch.chdir(tmp_path / "course")
    assert load(ci.render_workflow(course))["env"]["COURSE_CONFIG"] == "setup/grader.toml"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert load(ci.render_workflow(course))["env"]["COURSE_CONFIG"] == "grader.toml"  # from elsewhere: its name


def test_odd_values_stay_quoted_strings(monkeypatch):
    monkeypatch.setattr(ci, "EXERCISES_DIR", 'my "exercises": #1\n- x')
    workflow = load(ci.render_workflow(None))
    assert workflow["env"]["EXERCISES_DIR"] == 'my "exercises": #1\n- x'


# -- writing it ------------------------------------------------------------------------------------------


def test_write_never_overwrites(tmp_path):
    target = tmp_path / ".github" / "workflows" / "grade.yml"
    assert ci.write_workflow(target, None) == target
    assert load(target.read_text())["on"] == {"pull_request": None}
    target.write_text("# the instructor's edits\n")
    with pytest.raises(ci.CIError, match="already exists.*remove it.*another file"):
        ci.write_workflow(target, None)
    assert target.read_text() == "# the instructor's edits\n"


def test_an_unwritable_place_is_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ci.CIError, match="cannot write the workflow"):
        ci.write_workflow(tmp_path / "a-file" / "grade.yml", None)


def test_the_cli_writes_it_once(tmp_path, monkeypatch, capsys):
    pytest.importorskip("grader.course")
    from grader.cli import main

    monkeypatch.chdir(tmp_path)
    target = tmp_path / "ci" / "grade.yml"
    assert main(["--init-ci", str(target)]) == 0
    assert "pull_request" in load(target.read_text())["on"]
    capsys.readouterr()
    assert main(["--init-ci", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err


# -- what a pull request changed -------------------------------------------------------------------------


def git(repo: Path, *args: str) -> None:
    env = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env, timeout=30)


def write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)


def commit(repo: Path, files: dict[str, str], message: str = "change") -> None:
    write(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def course_repo(tmp_path: Path) -> Path:
    """A course repository on main, with a student's branch `pr` checked out."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "course"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"exercises/rnn_scratch.py": "skeleton", "tests/t.py": "", "README.md": "",
                  ".github/workflows/grade.yml": "on: pull_request"}, "start")
    git(repo, "checkout", "-q", "-b", "pr")
    return repo


def test_exercise_files_only_change_nothing_outside(course_repo):
    commit(course_repo, {"exercises/rnn_scratch.py": "mine", "exercises/predict.py": "mine too"})
    git(course_repo, "checkout", "-q", "main")  # the base branch moves on meanwhile
    commit(course_repo, {"README.md": "updated", "tests/t.py": "more"})
    git(course_repo, "checkout", "-q", "pr")
    write(course_repo, {"tests/t.py": "uncommitted"})  # a pull request is its commits
    assert ci.changed_outside(course_repo / "exercises", "main") == []


def test_other_changes_are_listed(course_repo):
    odd = "exercises/odd name\twith tab.py"
    commit(course_repo, {"exercises/rnn_scratch.py": "mine", ".github/workflows/x.yml": "on: push",
                         "tests/t.py": "assert True", "grader.toml": "fail_under = 0", "exercises/helper.py": "",
                         "other/predict.py": "an exercise file, but not in the graded folder", odd: ""})
    git(course_repo, "mv", "README.md", "exercises/README.md")
    git(course_repo, "commit", "-q", "-m", "move")
    assert ci.changed_outside(course_repo / "exercises", "main") == sorted([
        ".github/workflows/x.yml", "README.md", "exercises/README.md", "exercises/helper.py", odd,
        "grader.toml", "other/predict.py", "tests/t.py"])
    # graded from the top of the repository, the top's exercise files are the exempt ones
    assert "exercises/rnn_scratch.py" in ci.changed_outside(course_repo, "main")


def test_an_unknown_ref_says_to_fetch(course_repo):
    with pytest.raises(ci.CIError, match="fetch-depth: 0"):
        ci.changed_outside(course_repo / "exercises", "origin/nope")
    with pytest.raises(ci.CIError, match="not a git ref"):
        ci.changed_outside(course_repo / "exercises", "--output=/tmp/x")


def test_outside_a_repository_is_a_clear_error(tmp_path):
    with pytest.raises(ci.CIError, match="leave out --base"):
        ci.changed_outside(tmp_path, "main")


def test_a_missing_git_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ci.CIError, match="git is not installed"):
        ci.changed_outside(tmp_path, "main")
