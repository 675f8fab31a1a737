"""Installed packages a submission imports are imported once by the runner, before forking; missing ones are named.

The judge reads the imports (never runs them); the runner's zygote imports the installed ones so that
every child inherits them. A package that is not installed gets a message saying how to install it.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REFERENCE, by_exercise, checks_of, lost, rewrite
from grader.hints import explain_error
from grader.judge.third_party import imported_names, preloads
from grader.protocol import PRELOAD_LIMIT


def problems_of(report) -> dict:
    return {p.path: p.message for p in report.problems}


# --- the judge reads the imports --------------------------------------------------------------------------------

def test_imported_names_reads_every_absolute_import_and_no_relative_one():
    source = textwrap.dedent("""
        import os, yaml.constructor as c
        from jinja2 import Template
        from . import sibling
        from .helpers import thing
        def f():
            import markupsafe
            try:
                from pygments.lexers import PythonLexer
            except ImportError:
                pass
    """)
    assert imported_names(source) == ["os", "yaml.constructor", "jinja2", "jinja2.Template", "markupsafe",
                                      "pygments.lexers", "pygments.lexers.PythonLexer"]
    assert imported_names("def broken(:\n") == []  # the runner reports the syntax error


def test_preloads_keep_installed_third_party_packages_only():
    files = {
        "rnn_scratch.py": "import os, json, collections\nimport torch, numpy\nimport yaml\nimport helpers\n",
        "helpers.py": "import jinja2\nimport not_installed_anywhere_xyz\nfrom grader import hookimpl\n",
        "predict.py": "import rnn_scratch\nfrom helpers import x\nimport yaml\n",
    }
    # standard library, what the runner has loaded, the submission's own files and missing packages are left out
    assert preloads(files) == ("jinja2", "yaml")  # in file order, once each


def test_preloads_name_what_may_be_a_submodule_as_the_books_import_does():
    # `from d2l import torch as d2l`: the slow part is the submodule; the runner finds out which names are modules
    assert preloads({"rnn.py": "from yaml import constructor, safe_load\n"}) == (
        "yaml", "yaml.constructor", "yaml.safe_load")


def test_preloads_never_name_an_own_file_that_shadows_an_installed_package():
    assert preloads({"yaml.py": "x = 1\n", "rnn.py": "import yaml\n"}) == ()


def test_a_request_carries_its_preloads_to_the_runner():
    from grader.protocol import DEFAULT_LIMITS, FRAME, Request

    frame = Request(files={"rnn.py": "import yaml\n"}, timeout=5, limits=DEFAULT_LIMITS,
                    preload=("d2l", "d2l.torch")).encode()
    decoded, _ = Request.decode(frame[FRAME.size:])
    assert decoded.preload == ("d2l", "d2l.torch")


def test_preloads_are_capped(monkeypatch):
    import grader.judge.third_party as third_party

    monkeypatch.setattr(third_party, "installed_origin", lambda name: f"/venv/lib/site-packages/{name}/__init__.py")
    many = "\n".join(f"import package_{i}" for i in range(PRELOAD_LIMIT + 5))
    found = preloads({"rnn.py": many})
    assert found == tuple(f"package_{i}" for i in range(PRELOAD_LIMIT))


# --- the runner preloads them -----------------------------------------------------------------------------------

#: a submission file that refuses to load unless yaml was in sys.modules before its own import (the zygote's doing)
PRELOADED_CHECK = textwrap.dedent("""
    import sys
    if "yaml" not in sys.modules:
        raise RuntimeError("yaml was not preloaded")
    import yaml
""")


def test_an_installed_package_a_submission_imports_is_preloaded(grading, submission):
    assert importlib.util.find_spec("yaml") is not None  # pyyaml: a dependency of the test environment
    clipping = (REFERENCE / "grad_clipping.py").read_text()
    # used in a hook too, at call time, as a real submission would
    clipping = clipping.replace("def grad_clipping(net, theta):\n",
                                "def grad_clipping(net, theta):\n    yaml.safe_dump({'theta': float(theta)})\n", 1)
    assert "yaml.safe_dump" in clipping
    folder = submission({"grad_clipping.py": PRELOADED_CHECK + clipping})
    report = grading(folder)
    assert not problems_of(report), problems_of(report)
    assert report.points == report.max_points == 100


def test_the_books_package_is_preloaded_where_it_is_installed(grading, submission):
    """`from d2l import torch as d2l` in every file, as the book's notebooks begin: d2l.torch is imported once."""
    try:
        from d2l import torch  # noqa: F401 - whether it imports here at all (torchvision must match torch)
    except Exception:  # noqa: BLE001
        pytest.skip("d2l cannot be imported here")
    check = PRELOADED_CHECK.replace('"yaml"', '"d2l.torch"').replace("import yaml", "from d2l import torch as d2l")
    folder = submission({name: check + (REFERENCE / name).read_text() for name in ("grad_clipping.py", "predict.py")})
    report = grading(folder)
    assert not problems_of(report), problems_of(report)
    assert report.points == report.max_points == 100


def test_a_package_that_is_not_installed_is_named_with_how_to_install_it(grading, submission):
    folder = submission({"predict.py": "import sklearn\n" + (REFERENCE / "predict.py").read_text()})
    if importlib.util.find_spec("sklearn") is not None:
        pytest.skip("scikit-learn is installed here")
    report = grading(folder)
    message = problems_of(report)["predict.py"]
    assert message.startswith("imports sklearn, which is not installed: install it with `pip install scikit-learn`")
    assert "No module named 'sklearn'" in message and "predict.py" in message  # the error and where, after
    assert "d2l" not in message
    assert lost(report) == {"predict": 10}
    assert {c.status for c in by_exercise(report)["predict"].checks} != {"passed"}


def test_the_books_package_not_installed_says_the_grader_hands_its_objects(grading, submission):
    if importlib.util.find_spec("d2l") is not None:
        pytest.skip("d2l is installed here")
    folder = submission({"predict.py": "from d2l import torch as d2l\n" + (REFERENCE / "predict.py").read_text()})
    message = problems_of(grading(folder))["predict.py"]
    assert "pip install d2l==0.17.6 --no-deps" in message
    assert message.startswith("imports d2l, which is not installed: the grader gives your functions the book's objects")
    assert "the import can go" in message[:160]  # what a summary line shows


def test_a_package_missing_when_a_hook_imports_it_is_named_too(grading, submission):
    name = "not_installed_anywhere_xyz"
    source = f"def grad_clipping(net, theta):\n    import {name}\n"
    report = grading(submission(rewrite("grad_clipping", source)))
    messages = [c.message for c in checks_of(report, "grad_clipping").values() if c.status != "passed"]
    told = [m for m in messages if f"`pip install {name}`" in m]  # once: the other checks say "same cause as"
    assert told, messages
    assert told[0].index("pip install") < told[0].index("ModuleNotFoundError")  # the advice first


def test_a_missing_sibling_file_is_not_called_a_package():
    """The runner marks only modules that are neither submission files nor installed; explain_error reads the mark."""
    marked = "ModuleNotFoundError: No module named 'sklearn' (not installed) at rnn.py, line 3, in rnn: import sklearn"
    plain = "ModuleNotFoundError: No module named 'helpers' at rnn.py, line 3, in rnn: import helpers"
    assert "`pip install scikit-learn`" in explain_error("rnn", marked)
    assert "pip install" not in explain_error("rnn", plain)


# --- the zygote's preloading, directly --------------------------------------------------------------------------

@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """``make(name, source)``: an importable package in a folder that looks like site-packages."""
    site = tmp_path / "lib" / "site-packages"
    site.mkdir(parents=True)
    monkeypatch.syspath_prepend(str(site))
    made = []

    def make(name: str, source: str) -> str:
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(textwrap.dedent(source))
        made.append(name)
        importlib.invalidate_caches()
        return name

    yield make
    for name in made:
        sys.modules.pop(name, None)


@pytest.fixture
def preloader():
    from grader.runner.integrity import Snapshot
    from grader.runner.preloading import Preloader

    return Preloader(Snapshot(()), seconds=2.0)


def test_preloading_imports_an_installed_package_once_and_keeps_the_protocol_quiet(fake_packages, preloader, tmp_path,
                                                                                   capfd):
    name = fake_packages("fake_loud_pkg", """
        import os, sys
        print("printed at import")
        os.write(1, b"written to fd 1")
        os.write(2, b"written to fd 2")
        sys.stdin.read()
        IMPORTS = 1
    """)
    preloader.preload([name, "os", "not_installed_anywhere_xyz"], tmp_path / "staged")
    assert name in sys.modules and name in preloader.loaded
    assert "not_installed_anywhere_xyz" in preloader.refused
    out, err = capfd.readouterr()
    assert "printed" not in out + err and "written" not in out + err


def test_a_preload_that_raises_or_hangs_is_skipped_and_not_tried_again(fake_packages, preloader, tmp_path):
    failing = fake_packages("fake_failing_pkg", "raise RuntimeError('broken at import')\n")
    exiting = fake_packages("fake_exiting_pkg", "raise SystemExit(3)\n")
    hanging = fake_packages("fake_hanging_pkg", "while True:\n    pass\n")
    fine = fake_packages("fake_fine_pkg", "VALUE = 42\n")
    later = fake_packages("fake_later_pkg", "VALUE = 43\n")
    started = time.monotonic()
    preloader.preload([failing, exiting, fine, hanging, later], tmp_path / "staged")
    assert time.monotonic() - started < 5  # the hang was cut at the request's preload time, 2 s here
    assert {failing, exiting, hanging} <= preloader.refused and fine in preloader.loaded
    assert later not in preloader.refused | preloader.loaded  # no time was left: the next request may try it
    assert not {failing, exiting, hanging} & set(sys.modules)  # the child imports them itself and reports why
    # a second request does not try them again (it would hang again)
    started = time.monotonic()
    preloader.preload([hanging], tmp_path / "staged")
    assert time.monotonic() - started < 0.5


def test_a_preload_inside_the_staged_submission_is_refused(tmp_path, monkeypatch, preloader):
    staged = tmp_path / "site-packages" / "submission-1"  # even where its path looks like installed packages'
    staged.mkdir(parents=True)
    (staged / "student_pkg.py").write_text("IMPORTED = True\n")
    monkeypatch.syspath_prepend(str(staged))
    importlib.invalidate_caches()
    preloader.preload(["student_pkg"], staged)
    assert "student_pkg" not in sys.modules and "student_pkg" in preloader.refused


def test_a_submodule_is_preloaded_and_a_name_that_is_not_one_is_skipped(fake_packages, preloader, tmp_path):
    name = fake_packages("fake_parent_pkg", "VALUE = 1\n")
    (tmp_path / "lib" / "site-packages" / name / "sub.py").write_text("SUB = 2\n")
    preloader.preload([name, f"{name}.sub", f"{name}.VALUE"], tmp_path / "staged")
    assert {name, f"{name}.sub"} <= preloader.loaded and f"{name}.sub" in sys.modules
    assert f"{name}.VALUE" in preloader.refused and name not in preloader.refused
    sys.modules.pop(f"{name}.sub", None)


def test_the_grader_and_its_answers_are_never_preloaded(preloader, tmp_path, monkeypatch):
    import grader.runner.preloading as preloading

    # as where the grader is installed from a wheel (the Gradescope image): everything in site-packages
    monkeypatch.setattr(preloading, "installed_origin", lambda name: f"/venv/lib/site-packages/{name}/__init__.py")
    monkeypatch.setattr(preloading, "installed_location", lambda spec: "/venv/lib/site-packages/x/__init__.py")
    answers = ("grader.reference", "grader.demo", "reference")
    for module in [m for m in sys.modules if m.startswith(answers)]:  # this judge process computed the reference
        monkeypatch.delitem(sys.modules, module)
    preloader.preload(["grader.reference", "grader.reference.rnn_scratch", "reference", "grader.demo"], tmp_path)
    assert not [m for m in sys.modules if m.startswith(answers)]
    assert not preloader.loaded and {"grader.reference", "grader.demo"} <= preloader.refused


def test_a_preload_that_rebinds_what_the_runner_relies_on_is_undone(fake_packages, preloader, tmp_path):
    import torch

    original = torch.tanh
    name = fake_packages("fake_patching_pkg", "import torch\ntorch.tanh = lambda x: x\n")
    preloader.preload([name], tmp_path / "staged")
    assert torch.tanh is original and not preloader.snapshot.changes()
    assert name in preloader.refused and name not in sys.modules  # each child imports it, and is seen doing so


# --- a package whose import ends the runner -------------------------------------------------------------------------

def test_a_preload_that_ends_the_runner_is_not_asked_of_the_next_one(tmp_path, submission):
    """os._exit at import cannot be caught: the runner dies once, the fresh one preloads nothing, the file is set aside."""
    import sysconfig

    from grader.config import RunConfig
    from grader.judge import engine
    from grader.judge.runners import Runner
    from grader.plugins import get_plugin_manager

    site = Path(sysconfig.get_paths()["purelib"])  # where the runner, sandboxed or not, imports from
    package = site / "grader_test_exiting_import"
    package.mkdir()
    try:
        (package / "__init__.py").write_text("import os\nos._exit(3)\n")
        folder = submission({"predict.py": "import grader_test_exiting_import\n" + (REFERENCE / "predict.py").read_text()})
        pm, config = get_plugin_manager(), RunConfig()
        with Runner() as runner:
            runner.start()
            report = engine.grade(folder, config, pm, runner, engine.plan(pm, config))
            assert not runner.preloading
    finally:
        shutil.rmtree(package, ignore_errors=True)
    assert "ended the process (exit status 3" in problems_of(report)["predict.py"]
    assert lost(report) == {"predict": 10}
