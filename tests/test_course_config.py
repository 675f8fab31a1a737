"""Course configuration and check packs: what an instructor changes is what the grading does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from grader import cli
from grader.config import RunConfig
from grader.course import CourseError, find_course, load_course
from grader.judge import engine
from grader.packs import PackError
from grader.plugins import get_plugin_manager

from conftest import REFERENCE, REPO

PACK = REPO / "examples" / "check_pack"
PACK_CHECK = "grad_clipping.deep_network"


def course(tmp_path: Path, text: str, name: str = "grader.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def planned(config: RunConfig, plugin_dirs=()) -> engine.Plan:
    return engine.plan(get_plugin_manager(plugin_dirs=plugin_dirs), config)


def by_id(plan: engine.Plan) -> dict:
    return {c.id: c for c in plan.checks}


# ---------------------------------------------------------------- reading and validating


@pytest.mark.parametrize("text, named", [
    ("fail_undr = 50\n", ["fail_undr", "fail_under"]),
    ("timeout = \"long\"\n", ["timeout", "number"]),
    ("include = [\"rnn_scrach\"]\n", ["rnn_scrach", "rnn_scratch"]),
    ("[exercises.predikt]\npoints = 3\n", ["predikt", "predict"]),
    ("[exercises.predict]\npoints = -1\n", ["exercises.predict.points"]),
    ("[exercises.predict]\npionts = 3\n", ["pionts", "points"]),
    ("[checks.\"train_epoch.perplexty\"]\npoints = 3\n", ["train_epoch.perplexty", "train_epoch.perplexity"]),
    ("[checks.\"train_epoch.perplexity\"]\nbnad = 0.1\n", ["bnad", "band"]),
    ("[checks.\"train_epoch.perplexity\"]\nepochs = 2.5\n", ["epochs", "whole number"]),
    ("[checks.\"grad_clipping.joint\"]\nvisibility = \"after_due\"\n", ["visibility", "after_due_date"]),
    ("exercises = [\"predict\"]\n", ["exercises", "include"]),
    ("fail_under = 120\n", ["fail_under", "0 to 100"]),
    ("[checks\n", ["not valid TOML"]),
])
def test_an_invalid_configuration_names_the_key_and_exits_2(tmp_path, capsys, text, named):
    path = course(tmp_path, text)
    assert cli.main(["--config", str(path), "--list-checks"]) == cli.USAGE_ERROR
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    for word in named:
        assert word in err, err


def test_a_pyproject_needs_its_tool_grader_table_and_is_found_only_with_one(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert find_course([plain]) is None
    with pytest.raises(CourseError, match=r"\[tool.grader\]"):
        load_course(plain / "pyproject.toml")
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "pyproject.toml").write_text("[project]\nname = 'x'\n[tool.grader]\ncourse = 'RNNs'\nfail_under = 40\n")
    found = find_course([plain, ours])
    assert found == ours / "pyproject.toml"
    loaded = load_course(found)
    assert loaded.name == "RNNs" and loaded.fail_under == 40 and "[tool.grader]" in loaded.describe()
    (ours / "grader.toml").write_text("course = 'own file'\n")
    assert find_course([ours]) == ours / "grader.toml"  # a grader.toml wins over the pyproject


def test_points_visibility_inclusion_and_settings_reach_the_plan(tmp_path):
    path = course(tmp_path, """
include = ["rnn_scratch", "grad_clipping", "train_epoch"]
visibility = "visible"
timeout = 25
[exercises.rnn_scratch]
points = 60
timeout = 12
[checks."grad_clipping.joint"]
points = 10
visibility = "after_due_date"
[checks."train_epoch.perplexity"]
band = 0.2
epochs = 3
timeout = 90
""")
    default = by_id(planned(RunConfig(hidden=True)))
    plan = planned(RunConfig(course=load_course(path), hidden=True))
    checks = by_id(plan)
    assert [ex.name for ex in plan.exercises] == ["rnn_scratch", "grad_clipping", "train_epoch"]
    assert {c.exercise for c in plan.checks} == {"rnn_scratch", "grad_clipping", "train_epoch"}
    scratch = [c for c in plan.checks if c.exercise == "rnn_scratch"]
    assert sum(c.points for c in scratch) == pytest.approx(60)
    # the ratios between an exercise's checks are kept
    assert checks["rnn_scratch.rnn.forward"].points / checks["rnn_scratch.rnn.shapes"].points == pytest.approx(
        default["rnn_scratch.rnn.forward"].points / default["rnn_scratch.rnn.shapes"].points)
    joint = checks["grad_clipping.joint"]
    assert joint.points == 10 and joint.visibility == "after_due_date" and joint.hidden
    perplexity = checks["train_epoch.perplexity"]
    assert perplexity.settings == {"band": 0.2, "epochs": 3}
    assert perplexity.probe.params["epochs"] == 3 and perplexity.probe.timeout == 90
    assert "20%" in perplexity.title and "3 seeded epochs" in perplexity.title
    assert perplexity.judge.keywords == {"band": 0.2}
    # the most specific time limit wins; the other checks of that exercise keep their own runs
    assert checks["train_epoch.reported"].probe.timeout == 25 and checks["grad_clipping.above"].probe.timeout == 25
    assert checks["rnn_scratch.rnn.forward"].probe.timeout == 12
    assert checks["train_epoch.reported"].probe is not perplexity.probe
    # a student's run leaves the hidden check out
    assert "grad_clipping.joint" not in by_id(planned(RunConfig(course=load_course(path))))


def test_the_cli_finds_the_configuration_next_to_the_submission_but_not_for_an_authoritative_grade(tmp_path, monkeypatch):
    folder = tmp_path / "exercises"
    folder.mkdir()
    (folder / "rnn_scratch.py").write_text("x = 1\n")
    course(tmp_path, "course = 'found'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    parser = cli.build_parser()
    args = parser.parse_args([str(folder)])
    config = cli._config(parser, args, places=(folder, folder.parent, Path.cwd()))
    assert config.course is not None and config.course.name == "found"
    assert cli._config(parser, parser.parse_args([str(folder), "--no-config"]), places=(folder,)).course is None


# ---------------------------------------------------------------- results follow the configuration


def test_a_graded_submission_follows_the_configuration(tmp_path, runner, submission):
    folder = submission()
    path = course(tmp_path, """
course = "Test course"
include = ["grad_clipping", "sine_wave"]
[exercises.grad_clipping]
points = 20
[checks."sine_wave.training"]
mse_factor = 0.5
[checks."grad_clipping.joint"]
visibility = "hidden"
""")
    config = RunConfig(course=load_course(path), hidden=True)
    pm = get_plugin_manager()
    report = engine.grade(folder, config, pm, runner)
    assert [ex.name for ex in report.exercises] == ["grad_clipping", "sine_wave"]
    clipping = report.exercises[0]
    assert clipping.max_points == pytest.approx(20) and clipping.points == pytest.approx(20)
    results = {c.check_id: c for c in report.all_checks()}
    assert results["grad_clipping.joint"].visibility == "hidden"
    # even the reference cannot train to half its own error: the threshold is the course's
    training = results["sine_wave.training"]
    assert training.status == "failed" and "0.5x the reference's" in training.message
    assert report.configuration.startswith("Test course: ") and str(path) in report.configuration
    assert "sha256" in report.configuration


# ---------------------------------------------------------------- check packs


def test_a_pack_folder_adds_its_hidden_check_only_where_it_is_loaded(tmp_path, runner, submission, capsys):
    without = by_id(planned(RunConfig(hidden=True)))
    assert PACK_CHECK not in without
    students = by_id(planned(RunConfig(), plugin_dirs=[PACK]))
    assert PACK_CHECK not in students  # hidden: not in a student's run, even with the pack
    config = RunConfig(hidden=True, plugin_dirs=(PACK,))
    pm = get_plugin_manager(plugin_dirs=[PACK])
    plan = engine.plan(pm, config)
    check = by_id(plan)[PACK_CHECK]
    assert check.pack == "check_pack" and check.visibility == "hidden" and check.settings == {"theta": 0.25}
    report = engine.grade(submission(), config, pm, runner, plan)
    result = {c.check_id: c for c in report.all_checks()}[PACK_CHECK]
    assert result.status == "passed" and result.hidden
    # a mistake the built-in checks cannot see with their shapes: clipping each parameter on its own
    wrong = (REFERENCE / "grad_clipping.py").read_text().replace(
        "def grad_clipping(net, theta):", "def grad_clipping(net, theta):\n    return _each(net, theta)\n\n\ndef _unused(net, theta):")
    wrong += ("\n\ndef _each(net, theta):\n    params = [p for p in net.parameters()] if isinstance(net, torch.nn.Module) else net.params\n"
              "    for p in params:\n        norm = torch.sqrt(torch.sum(p.grad ** 2))\n"
              "        if norm > theta:\n            p.grad[:] *= theta / norm\n")
    if "import torch" not in wrong:
        wrong = "import torch\n" + wrong
    report = engine.grade(submission({"grad_clipping.py": wrong}), config, pm, runner, plan)
    result = {c.check_id: c for c in report.all_checks()}[PACK_CHECK]
    assert result.status == "failed" and "joint gradient norm" in result.message


def test_a_pack_setting_is_configurable_and_listed(tmp_path, capsys):
    path = course(tmp_path, f'[checks."{PACK_CHECK}"]\ntheta = 0.5\nvisibility = "after_published"\n')
    assert cli.main(["--config", str(path), "--plugins", str(PACK), "--explain", PACK_CHECK]) == cli.OK
    out = capsys.readouterr().out
    assert "theta = 0.5" in out and "after_published" in out and "check_pack" in out
    assert cli.main(["--no-config", "--plugins", str(PACK), "--list-checks"]) == cli.OK
    listing = capsys.readouterr().out
    assert PACK_CHECK in listing and "hidden" in listing and "rnn_scratch.rnn.forward" in listing
    # without the pack, the course's table names a check that does not exist
    assert cli.main(["--config", str(path), "--list-checks"]) == cli.USAGE_ERROR
    assert PACK_CHECK in capsys.readouterr().err


def test_a_broken_pack_is_a_clear_error(tmp_path, capsys):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "bad.py").write_text("from grader import hookimpl\n\n\n@hookimpl\ndef grader_chekcs(config):\n    return []\n")
    with pytest.raises(PackError, match="grader_chekcs"):
        get_plugin_manager(plugin_dirs=[pack])
    (pack / "bad.py").write_text("x = 1\nraise RuntimeError('needs a setting')\n")
    assert cli.main(["--plugins", str(pack), "--list-checks", "--no-config"]) == cli.USAGE_ERROR
    err = capsys.readouterr().err
    assert f"{pack / 'bad.py'}:2" in err and "needs a setting" in err and "Traceback" not in err


def test_an_installed_pack_registers_through_the_entry_point_and_its_hidden_check_stays_hidden(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(PACK, source)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(target))

    def grade(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "grader", *args, "--no-config", "--color", "never"], env=env,
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)

    listed = grade("--list-checks")
    assert listed.returncode == 0, listed.stderr
    line = next(l for l in listed.stdout.splitlines() if l.startswith(PACK_CHECK))
    assert "example_pack" in line and "hidden" in line
    plain = subprocess.run([sys.executable, "-m", "grader", "--list-checks", "--no-config"], capture_output=True,
                           text=True, timeout=300, cwd=tmp_path)
    assert PACK_CHECK not in plain.stdout  # only where the pack is installed
    folder = tmp_path / "student"
    folder.mkdir()
    for path in REFERENCE.glob("*.py"):
        if path.name != "__init__.py":
            shutil.copy(path, folder / path.name)
    # the instructor's grading: the hidden check runs, and results.json keeps it for the hidden test alone
    graded = grade(str(folder), "--hidden", "--out", str(tmp_path / "out"))
    assert graded.returncode == 0, graded.stdout + graded.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    hidden = [t for t in results["tests"] if "deeper network" in t["name"]]
    assert len(hidden) == 1 and hidden[0]["visibility"] == "hidden" and hidden[0]["extra_data"]["status"] == "passed"
    assert results["stdout_visibility"] == "hidden"
    visible_text = json.dumps({k: v for k, v in results.items() if k != "tests"})
    visible_text += json.dumps([t for t in results["tests"] if t["visibility"] == "visible"])
    for secret in ("deeper network", "deep_network", "eight gradients"):
        assert secret not in visible_text
    # a student's run with the pack installed: nothing of it anywhere
    student = grade(str(folder), "--out", str(tmp_path / "student-out"))
    assert student.returncode == 0, student.stdout + student.stderr
    for secret in ("deeper network", "deep_network"):
        assert secret not in student.stdout and secret not in (tmp_path / "student-out" / "results.json").read_text()


def test_the_memory_limit_is_the_courses(tmp_path, runner, submission):
    path = course(tmp_path, 'include = ["grad_clipping"]\nmemory_mb = 3072\n')
    config = RunConfig(course=load_course(path))  # the course alone sets it
    hog = "from grader import hookimpl\n\n\n@hookimpl\ndef grad_clipping(net, theta):\n    bytearray(7 << 29)\n"
    report = engine.grade(submission({"grad_clipping.py": hog}), config, get_plugin_manager(), runner)
    messages = [c.message for c in report.all_checks()]
    assert all(c.status == "error" for c in report.all_checks())
    assert all("3 GiB memory limit" in m for m in messages), messages


def test_checks_of_a_device_this_machine_lacks_are_known_and_reported_as_skipped(tmp_path, runner, submission):
    from grader.report.junit import to_junit

    plan = planned(RunConfig())
    assert plan.unavailable and all(c.id.endswith(".device.cuda") for c in plan.unavailable)
    assert not planned(RunConfig(extra_devices=("cuda",))).unavailable
    # a course may configure them on a machine without a GPU
    path = course(tmp_path, 'include = ["grad_clipping", "gradient_flow"]\n[checks."gradient_flow.device.cuda"]\npoints = 3\n')
    config = RunConfig(course=load_course(path))
    report = engine.grade(submission(), config, get_plugin_manager(), runner)
    assert [c.check_id for c in report.skipped_here] == ["gradient_flow.device.cuda"]
    assert report.skipped_here[0].max_points == 0 and "CUDA" in report.skipped_here[0].message
    assert report.percent == 100
    cases = {case.get("name"): case for case in to_junit(report).iter("testcase")}
    assert cases["gradient_flow.device.cuda"].find("skipped") is not None
    assert cases["gradient_flow.device.meta"].find("skipped") is None
