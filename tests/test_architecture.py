"""The layout keeps its promises: the trust boundary holds, and every exercise is complete.

- The runner (``grader.runner``) never imports the judge's side (``grader.judge``,
  ``grader.report``, ``grader.cli``); nothing outside the runner imports the runner; the
  modules both processes load import neither side. Checked by reading the imports, and by
  starting the runner's code in a fresh interpreter and listing what it loaded.
- No grader module imports another's private (``_x``) names.
- Every exercise of the registry has its hook specs, reference, skeleton, demo file and checks,
  and the README's points table is the checks' own.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from grader import registry

GRADER = REPO / "grader"
RUNNER_SIDE = ("grader.runner",)
JUDGE_SIDE = ("grader.judge", "grader.report", "grader.cli", "grader.__main__", "grader.pytest_plugin",
              "grader.autograder", "grader.autograder_run", "grader.jupyter",
              "grader.watch")
#: (shared module, judge-side module) it may import inside a function: ``grader.check`` is the notebook
#: front-end's entry point, imported only when a notebook calls it (the runner never does: see
#: test_the_runner_process_loads_no_judge_module)
LAZY_FRONT_ENDS = {("grader", "grader.jupyter")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def imports(source: str, name: str, is_package: bool = False) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` for every import statement of module ``name``, relative ones made absolute."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from grader import judge` imports the module grader.judge
                found.append((node.lineno, f"{base}.{alias.name}" if base == "grader" else base, [alias.name]))
    return found


def grader_modules() -> dict[str, list[tuple[int, str, list[str]]]]:
    """Every module of the grader package with its imports."""
    return {module_name(path): imports(path.read_text(), module_name(path), path.name == "__init__.py")
            for path in sorted(GRADER.rglob("*.py"))}


def violations(rule, modules: dict) -> list[str]:
    return [f"{name}:{line} imports {target}" for name, found in modules.items() for line, target, _ in found
            if target.startswith("grader") and rule(name, target)]


def runner_imports_judge(name: str, target: str) -> bool:
    return within(name, RUNNER_SIDE) and within(target, JUDGE_SIDE)


def outsider_imports_runner(name: str, target: str) -> bool:
    return not within(name, RUNNER_SIDE) and within(target, RUNNER_SIDE)


def shared_imports_a_side(name: str, target: str) -> bool:
    return (not within(name, RUNNER_SIDE + JUDGE_SIDE) and within(target, RUNNER_SIDE + JUDGE_SIDE)
            and (name, target) not in LAZY_FRONT_ENDS)


@pytest.mark.parametrize("rule", [runner_imports_judge, outsider_imports_runner, shared_imports_a_side])
def test_imports_respect_the_trust_boundary(rule):
    assert not violations(rule, grader_modules())


def test_each_rule_sees_a_crossing():
    """Each form of import the rules are about is seen: plain, from, relative, ``from grader import x``."""
    crossings = {
        runner_imports_judge: ("grader.runner.child", "from ..judge.engine import grade\n"),
        outsider_imports_runner: ("grader.judge.engine", "from grader import runner\n"),
        shared_imports_a_side: ("grader.training", "import grader.report.html\n"),
    }
    for rule, (name, source) in crossings.items():
        assert violations(rule, {name: imports(source, name)}), rule.__name__
    assert not violations(runner_imports_judge, {"grader.runner.child": imports("from ..wire import dumps\n",
                                                                                "grader.runner.child")})


def test_the_runner_process_loads_no_judge_module():
    """What the runner's zygote and child import, listed in a fresh interpreter started as the sandbox starts it."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from grader.runner import zygote; zygote.preload(); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('grader', 'reference')))))")
    done = subprocess.run([sys.executable, "-I", "-B", "-c", code, str(REPO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "grader.runner.child" in loaded and "grader.checks.rnn_scratch" in loaded  # it did load the runner's code
    assert not [m for m in loaded if within(m, JUDGE_SIDE)]
    # every child is a copy of the zygote: it must hold no answer at all
    assert not [m for m in loaded if within(m, (*registry.ANSWER_PACKAGES, "reference"))]


@pytest.mark.parametrize("graded", registry.EXERCISE_HOOKS)
def test_a_run_holds_every_reference_hook_but_the_graded_one(graded):
    """Each run gets the reference of the other hooks, minus what would compute the graded one."""
    from grader.judge.answers import hooks_without, parts_without

    held = hooks_without(graded)
    assert graded not in held
    assert set(held) >= {"get_params", "init_rnn_state", "rnn"} - {graded}  # the model around every other hook
    source = parts_without(graded).decode()
    assert f"def {graded}(" not in source
    only_for = {"rnn_model": "RNNModel", "sine_model": "SineRNN"}  # classes that are the answer's substance
    if graded in only_for:
        assert only_for[graded] not in source
    if graded == "grad_clipping":  # the reference train_epoch calls the reference grad_clipping
        assert "train_epoch" not in held


def private_uses(source: str, name: str) -> list[str]:
    """``from grader.x import _y``, and ``x._y`` where ``x`` names a grader module or one of its objects."""
    tree = ast.parse(source)
    found = [f"{name}:{line} imports {names[0]} from {target}" for line, target, names in imports(source, name)
             if target.startswith("grader") and names and names[0].startswith("_") and not names[0].startswith("__")]
    bound = set()  # local names bound by importing from grader
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {alias.asname or alias.name.split(".")[0] for alias in node.names if alias.name.startswith("grader")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("grader"):
            bound |= {alias.asname or alias.name for alias in node.names}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in bound):
            found.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another():
    found = []
    for path in sorted(GRADER.rglob("*.py")):
        found += private_uses(path.read_text(), module_name(path))
    assert not found
    assert private_uses("from grader.fixtures import _raised_by_student\n", "grader.nets")
    assert private_uses("from grader import fixtures\nfixtures._raised_by_student(1)\n", "grader.nets")


# ------------------------------------------------------------------ every exercise is complete


def marked_functions(path: Path) -> set[str]:
    """Names of the functions a file marks with ``@hookimpl``."""
    tree = ast.parse(path.read_text(), str(path))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(ast.unparse(d).endswith("hookimpl") for d in node.decorator_list)}


@pytest.fixture(scope="module")
def the_plan():
    from grader.config import RunConfig
    from grader.judge import engine
    from grader.plugins import get_plugin_manager

    return engine.plan(get_plugin_manager(), RunConfig())


def missing_parts(root: Path, the_plan) -> list[str]:
    """What the exercises of the registry lack in the checkout at ``root``, as sentences."""
    from grader import hookspecs, registry
    from grader.plugins import get_plugin_manager, reference_hooks

    pm = get_plugin_manager(with_builtins=False)
    specs = {name for name in vars(hookspecs) if pm.parse_hookspec_opts(hookspecs, name) is not None}
    missing = [f"{hook} has a spec but no exercise" for hook in sorted(specs - set(registry.EXERCISE_HOOKS))
               if not hook.startswith("grader_")]
    missing += [f"{hook} belongs to no spec" for hook in registry.EXERCISE_HOOKS if hook not in specs]
    reference = reference_hooks()
    for exercise in registry.EXERCISES:
        file = registry.file_name(exercise.name)
        parts = {"reference": root / "reference" / file, "skeleton": root / "exercises" / file,
                 "demo": root / "grader" / "demo" / file, "checks": root / "grader" / "checks" / file}
        for part, path in parts.items():
            if not path.is_file():
                missing.append(f"{exercise.name}: no {part} ({path.relative_to(root)})")
            elif part != "checks" and marked_functions(path) != set(exercise.hooks):
                missing.append(f"{exercise.name}: the {part} marks {sorted(marked_functions(path))}, "
                               f"not {sorted(exercise.hooks)}")
        for hook in exercise.hooks:
            if hook in specs and not pm.parse_hookspec_opts(hookspecs, hook).get("firstresult"):
                missing.append(f"{exercise.name}: the spec of {hook} is not firstresult")
            if hook not in reference or reference[hook].__module__ != registry.reference_module(exercise.name):
                missing.append(f"{exercise.name}: the reference's {hook} is not in {registry.reference_module(exercise.name)}")
            if not [c for c in the_plan.checks if c.exercise == exercise.name and c.hook == hook]:
                missing.append(f"{exercise.name}: no check grades {hook}")
    return missing


def test_every_exercise_has_all_its_parts(the_plan):
    assert missing_parts(REPO, the_plan) == []


def test_a_missing_skeleton_is_found(the_plan, tmp_path):
    for folder in ("reference", "exercises", "grader/demo", "grader/checks"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    (tmp_path / "exercises" / "predict.py").unlink()
    assert missing_parts(tmp_path, the_plan) == ["predict: no skeleton (exercises/predict.py)"]


def test_nothing_lies_outside_an_exercise():
    from grader import registry

    expected = {registry.file_name(e.name) for e in registry.EXERCISES}
    for folder in (REPO / "reference", REPO / "exercises", GRADER / "demo", GRADER / "checks"):
        files = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
        extra = {"reference_runs.py"} if folder.name == "checks" else set()
        assert files == expected | extra, folder


def test_readme_points_table_is_the_checks_own(the_plan):
    from grader import registry

    points: dict[str, float] = {}
    for check in the_plan.checks:
        points[check.exercise] = points.get(check.exercise, 0) + check.points
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)\.py` \| (.+?) \| (\d+(?:\.\d+)?) \|$", readme, re.M)
    assert rows, "no points table in the README"
    assert {name: (hooks, float(value)) for name, hooks, value in rows} == {
        e.name: (", ".join(f"`{h}`" for h in e.hooks), round(points[e.name], 6)) for e in registry.EXERCISES}


def test_every_package_ships():
    """A package left out of pyproject's list is missing from the wheel (the Gradescope archive installs one)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in GRADER.rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
