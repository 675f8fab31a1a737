"""A student who has read this source, with the reference at home, tries to score without solving.

Each trick starts from the untouched skeletons (honest score 0) or from a buggy submission (honest
score known), adds code that goes looking for the answer or fakes what the grader sees, and must
not score above the honest score. Honest code that changes harmless global settings keeps 100.
"""

from __future__ import annotations

import base64
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from conftest import EXERCISE_OF_FILE, REFERENCE, REPO, assert_reports_written
from grader import registry
from grader.config import RunConfig
from grader.plugins import get_plugin_manager

SKELETONS = REPO / "exercises"
SECRET = RunConfig(secret="course secret 2026")


def hook_arguments() -> dict[str, list[str]]:
    pm = get_plugin_manager(with_builtins=False)
    return {hook: list(getattr(pm.hook, hook).spec.argnames) for hook in registry.EXERCISE_HOOKS}


def forwarding_files(helper: str, tell_others: bool = False) -> dict[str, str]:
    """Skeleton files whose every hook asks ``helper.find(hook)`` for an implementation to forward to.

    ``tell_others``: each hook also prints which OTHER hooks' implementations the trick finds, which
    shows that the trick works where the answer is present.
    """
    arguments = hook_arguments()
    files = {}
    for exercise in registry.EXERCISES:
        lines = ["from grader import hookimpl", "", ""]
        for hook in exercise.hooks:
            args = ", ".join(arguments[hook])
            lines += ["@hookimpl", f"def {hook}({args}):", f"    import {helper}"]
            if tell_others:
                lines += [f"    for other in {[h for h in registry.EXERCISE_HOOKS if h != hook]!r}:",
                          "        try:", f"            {helper}.find(other)", "            print('FOUND', other)",
                          "        except BaseException:", "            pass"]
            lines += [f"    return {helper}.find({hook!r})({args})", "", ""]
        files[registry.file_name(exercise.name)] = "\n".join(lines)
    return files


def skeleton_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "submission"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(SKELETONS, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    for name, source in files.items():
        (folder / name).write_text(textwrap.dedent(source) if not source.startswith("from grader") else source)
    return folder


FINDERS = {
    "grader's loaded modules": """
        import sys, types
        def find(name):
            for module_name, module in list(sys.modules.items()):
                try:
                    func = vars(module).get(name)
                except TypeError:
                    continue
                if isinstance(func, types.FunctionType) and "submission" not in func.__code__.co_filename \
                        and module_name != "grader.hookspecs":  # the specs' stubs do nothing
                    return func
            raise NotImplementedError(name)
        """,
    "every object in memory": """
        import gc, types
        def find(name):
            for obj in gc.get_objects():
                if isinstance(obj, types.FunctionType) and obj.__name__ == name \\
                        and "submission" not in obj.__code__.co_filename and obj.__module__ != "grader.hookspecs":
                    return obj
            raise NotImplementedError(name)
        """,
    "reference and demo files on disk": """
        import importlib.util, pathlib, grader
        EXERCISE = {"get_params": "rnn_scratch", "init_rnn_state": "rnn_scratch", "rnn": "rnn_scratch",
                    "grad_clipping": "grad_clipping", "predict": "predict", "train_epoch": "train_epoch",
                    "rnn_model": "rnn_concise", "sine_model": "sine_wave", "state_jacobian": "gradient_flow"}
        def candidates(exercise):
            package = pathlib.Path(grader.__file__).parent
            yield package / ".." / "reference" / f"{exercise}.py"
            yield package.parent / "reference" / f"{exercise}.py"
            yield package / "reference" / f"{exercise}.py"
            yield package / "demo" / f"{exercise}.py"
            for name in (f"grader.reference.{exercise}", f"reference.{exercise}"):
                try:
                    spec = importlib.util.find_spec(name)
                except Exception:
                    spec = None
                if spec is not None and spec.origin:
                    yield pathlib.Path(spec.origin)
        def find(name):
            for path in candidates(EXERCISE[name]):
                try:
                    source = path.read_text()
                except OSError:
                    continue
                namespace = {"__name__": "stolen", "__package__": None}
                try:
                    exec(compile(source.replace("from .", "from grader.reference."), "stolen", "exec"), namespace)
                except Exception:
                    continue
                if name in namespace:
                    return namespace[name]
            raise NotImplementedError(name)
        """,
    "a helper file the reference stands in for": """
        import broken
        def find(name):
            found = getattr(broken, name, None)
            if found is None:
                raise NotImplementedError(name)
            return found
        """,
}

#: leaves every reference function it holds where a later run might find it, then looks for the one it needs
LEAVE_AND_FIND = """
    import ctypes, marshal, os, re, sys, types
    MARK = b"LEAKED-ANSWER"
    LIBC = ctypes.CDLL(None, use_errno=True)
    PLACES = ["/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~"), os.getcwd()]

    def held():
        for module_name, module in list(sys.modules.items()):
            if module is None or "submission" in (getattr(module, "__file__", "") or ""):
                continue
            for key, value in list(vars(module).items()):
                code = getattr(value, "__code__", None)
                if isinstance(value, types.FunctionType) and "submission" not in code.co_filename:
                    yield key, value

    def leave():
        for key, func in held():
            blob = MARK + b" " + key.encode() + b" " + marshal.dumps(func.__code__).hex().encode() + b"\\n"
            sys.stdout.write(blob.decode())  # the zygote relays output: does it keep a copy?
            for place in PLACES:
                try:
                    with open(os.path.join(place, f"leak-{key}"), "wb") as f:
                        f.write(blob)
                except OSError:
                    pass
            if sys.platform == "linux":  # SysV shared memory and the user's keyring outlive a process
                shm = LIBC.shmget(0x5EC0 + len(key), 1 << 20, 0o1666)
                if shm >= 0:
                    LIBC.shmat.restype = ctypes.c_void_p
                    address = LIBC.shmat(shm, None, 0)
                    if address not in (None, ctypes.c_void_p(-1).value):
                        ctypes.memmove(address, blob, min(len(blob), 1 << 20))
                LIBC.syscall(248, b"user", f"leak-{key}".encode(), blob, len(blob), -4)  # add_key to the user keyring

    def memory():
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                fields = line.split()
                if "r" not in fields[1] or (len(fields) > 5 and fields[5].startswith("[v")):
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                try:
                    mem.seek(start)
                    yield mem.read(end - start)
                except (OSError, ValueError, OverflowError):
                    continue

    def found_in(data, name):
        match = re.search(MARK + b" " + name.encode() + rb" ([0-9a-f]+)", data)
        return bytes.fromhex(match.group(1).decode()) if match else None

    def look(name):
        for place in PLACES:
            try:
                with open(os.path.join(place, f"leak-{name}"), "rb") as f:
                    code = found_in(f.read(), name)
            except OSError:
                continue
            if code:
                return code
        shm = LIBC.shmget(0x5EC0 + len(name), 1 << 20, 0)
        if shm >= 0:
            LIBC.shmat.restype = ctypes.c_void_p
            address = LIBC.shmat(shm, None, 0)
            if address not in (None, ctypes.c_void_p(-1).value):
                code = found_in(ctypes.string_at(address, 1 << 20), name)
                if code:
                    return code
        for region in memory():
            code = found_in(region, name)
            if code:
                return code
        return None

    def find(name):
        leave()
        code = look(name)
        if code is None:
            raise NotImplementedError(name)
        return types.FunctionType(marshal.loads(code), {**globals(), **vars(__import__("torch"))})
    """

#: rewrites what the grader observes, instead of finding the answer
FAKERS = {
    "patches the grader's recording objects": """
        import grader.training as training
        for cls in vars(training).values():
            if isinstance(cls, type) and cls.__module__ == training.__name__:
                for key, value in list(vars(cls).items()):
                    if callable(value) and not key.startswith("__"):
                        setattr(cls, key, value)  # same function, rebound: a real attack would wrap it
        """,
    "adds conversion methods to torch.Tensor": """
        import torch
        torch.Tensor.item = lambda self: 0.0
        torch.Tensor.tolist = lambda self: []
        """,
}


@pytest.fixture
def graded(grading):
    """Grade a folder, and check that every report can be written for it."""
    def run(folder: Path, config: RunConfig = SECRET):
        report = grading(folder, config)
        assert_reports_written(report)
        return report
    return run


@pytest.fixture
def grade_skeleton_trick(graded, tmp_path):
    def run(files: dict[str, str], config: RunConfig = SECRET):
        return graded(skeleton_folder(tmp_path, files), config)
    return run


@pytest.mark.parametrize("trick", list(FINDERS), ids=list(FINDERS))
def test_finding_the_answer_scores_nothing(grade_skeleton_trick, runner, trick):
    files = dict(forwarding_files("trick", tell_others=True), **{"trick.py": FINDERS[trick]})
    if trick == "a helper file the reference stands in for":
        files["broken.py"] = "import os\nos._exit(0)\n"
    report = grade_skeleton_trick(files)
    assert report.points == 0, [(c.check_id, c.message) for c in report.all_checks() if c.points]
    found = "".join(c.output for c in report.all_checks())
    if trick == "reference and demo files on disk":
        # in the sandbox there is nothing to find; without it the reads are seen, and cost the exercises
        assert ("FOUND" not in found) if runner.sandboxed else any("integrity" in n for n in report.notices)
    else:  # the trick works: it finds the reference of every hook but the one being graded
        assert "FOUND rnn" in found and "FOUND grad_clipping" in found


def test_leaving_the_answer_for_a_later_run_scores_nothing(grade_skeleton_trick):
    report = grade_skeleton_trick(dict(forwarding_files("trick"), **{"trick.py": LEAVE_AND_FIND}))
    assert report.points == 0, [(c.check_id, c.message) for c in report.all_checks() if c.points]


# ------------------------------------------------------------------ a buggy submission that fakes what it cannot do

#: two realistic mistakes: the state is not detached between minibatches, clipping per parameter
BUGGY = {
    "train_epoch.py": (REFERENCE / "train_epoch.py").read_text().replace(
        "        else:\n            for s in state:\n                s.detach_()\n", "        else:\n            pass\n"),
    "grad_clipping.py": (REFERENCE / "grad_clipping.py").read_text().replace(
        "    norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))\n    if norm > theta:\n"
        "        for param in params:\n            param.grad[:] *= theta / norm\n    return norm",
        "    for param in params:\n        norm = torch.sqrt(torch.sum(param.grad ** 2))\n"
        "        if norm > theta:\n            param.grad[:] *= theta / norm\n    return norm"),
}


@pytest.fixture(scope="module")
def honest_buggy_score(grading, tmp_path_factory):
    folder = tmp_path_factory.mktemp("buggy") / "submission"
    shutil.copytree(REFERENCE, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    for name, source in BUGGY.items():
        assert source != (REFERENCE / name).read_text()
        (folder / name).write_text(source)
    report = grading(folder, SECRET)
    assert 0 < report.points < 100
    return report.points


@pytest.mark.parametrize("faker", list(FAKERS), ids=list(FAKERS))
def test_faking_observations_gains_nothing(graded, submission, honest_buggy_score, faker):
    prelude = textwrap.dedent(FAKERS[faker])
    files = dict(BUGGY, **{"train_epoch.py": prelude + "\n" + BUGGY["train_epoch.py"]})
    report = graded(submission(files), SECRET)
    assert report.points <= honest_buggy_score


# ------------------------------------------------------------------ results precomputed at home and sent back

#: sends back, for the run in progress, the result the reference produced at home for the same probe
REPLAY = """
    import base64, json, os, stat, struct, sys
    from home_data import HOME

    def request():
        frame = sys._getframe()
        while frame is not None:
            if frame.f_code.co_name == "run_probe" and "request" in frame.f_locals:
                return frame.f_locals["request"]
            frame = frame.f_back

    def find(name):
        asked = request()
        key = asked.probe + " " + json.dumps(asked.params, sort_keys=True)
        payload = HOME.get(key) or next((v for k, v in HOME.items() if k.startswith(asked.probe + " ")), None)
        if payload is None:
            raise NotImplementedError(name)
        data = base64.b64decode(payload)
        for fd in map(int, os.listdir("/proc/self/fd")):
            try:
                if fd > 2 and stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.write(fd, struct.pack("<Q", len(data)) + data)
            except OSError:
                pass
        os._exit(0)
    """

#: probes whose results are small enough to carry in a submission
REPLAYED = ("grader.checks.rnn_scratch", "grader.checks.grad_clipping", "grader.checks.gradient_flow",
            "grader.checks.sine_wave")


def test_results_computed_at_home_score_nothing_with_a_secret_seed(grading, graded, runner, submission, tmp_path,
                                                                   monkeypatch):
    home: dict[str, str] = {}
    original = runner.run

    def recording(requests, window=3):
        pending = {}

        def remember():
            for key, request in requests:
                pending[id(key)] = request
                yield key, request

        for key, reply in original(remember(), window):
            request = pending.pop(id(key))
            if request.probe and request.probe.startswith(REPLAYED) and reply.result is not None:
                home[request.probe + " " + json.dumps(dict(request.params), sort_keys=True)] = base64.b64encode(reply.result).decode()
            yield key, reply

    monkeypatch.setattr(runner, "run", recording)
    grading(submission(), RunConfig())  # at home: the published inputs, the reference as the submission
    monkeypatch.setattr(runner, "run", original)
    assert len(home) >= 8
    files = dict(forwarding_files("trick"), **{"trick.py": REPLAY, "home_data.py": f"HOME = {home!r}\n"})
    replayed = [registry.file_name(module.rpartition(".")[2]) for module in REPLAYED]
    assert len(files["home_data.py"]) < 1 << 20  # within the grader's file size limit
    folder = skeleton_folder(tmp_path, {name: source for name, source in files.items()
                                        if name in replayed or name in ("trick.py", "home_data.py")})
    published = graded(folder, RunConfig())
    assert published.points > 0  # the trick works on the published inputs: that is why courses set a secret
    secret = graded(folder, SECRET)
    assert secret.points == 0, [(c.check_id, c.message) for c in secret.all_checks() if c.points]


# ------------------------------------------------------------------ honest code may change harmless global settings

HARMLESS = """
import random
import numpy as np
import torch
torch.autograd.set_detect_anomaly(True)
torch.set_num_threads(2)
torch.set_printoptions(precision=2, sci_mode=True)
torch.manual_seed(1234)
np.random.seed(1234)
np.set_printoptions(precision=3)
random.seed(1234)
"""


def test_honest_code_that_changes_harmless_settings_keeps_full_marks(graded, submission):
    files = {name: HARMLESS + "\n" + (REFERENCE / name).read_text()
             for name in ("rnn_scratch.py", "train_epoch.py", "predict.py")}
    # anomaly detection makes autograd record a traceback per operation, reading source files to do so;
    # at import it is reset for the checks, so it is also turned on where a check sees it: in a hook
    files["rnn_scratch.py"] = files["rnn_scratch.py"].replace(
        "    W_xh, W_hh, b_h, W_hq, b_q = params\n",
        "    W_xh, W_hh, b_h, W_hq, b_q = params\n    torch.autograd.set_detect_anomaly(True)\n")
    assert "set_detect_anomaly" in files["rnn_scratch.py"]
    report = graded(submission(files), SECRET)
    assert report.points == 100, [(c.check_id, c.message) for c in report.all_checks() if c.points < c.max_points]


#: prints the run's inputs into the report, for the student to take home
PRINT_INPUTS = """
    import json, sys
    def find(name):
        frame = sys._getframe()
        while frame is not None and not (frame.f_code.co_name == "run_probe" and "request" in frame.f_locals):
            frame = frame.f_back
        request = frame.f_locals["request"]
        print("INPUTS", json.dumps([request.probe, request.hook, dict(request.params)]))
        raise NotImplementedError(name)
    """


def test_inputs_printed_by_one_submission_are_not_the_next_ones(graded, runner, tmp_path):
    from grader.judge import engine
    from grader.judge.answers import parts_without
    from grader.judge.verdicts import decode, verdict_for
    from grader.protocol import DEFAULT_LIMITS, Request
    from grader.results import PASSED
    from grader.secret import submission_secret

    first_files = dict(forwarding_files("trick"), **{"trick.py": PRINT_INPUTS})
    first = graded(skeleton_folder(tmp_path, first_files), SECRET)
    printed = {line for c in first.all_checks() for line in c.output.splitlines()
               if line.startswith(tuple(f'INPUTS ["{module}' for module in REPLAYED))}  # predict's are too long
    asked = [json.loads(line[len("INPUTS "):]) for line in sorted(printed)]
    assert len(asked) >= 8
    # at home: the reference run on exactly those inputs
    reference_files = {p.name: p.read_text() for p in REFERENCE.glob("*.py") if p.name != "__init__.py"}
    home = {}
    for probe, hook, params in asked:
        reply = runner.run_one(Request(files=reference_files, timeout=20, limits=DEFAULT_LIMITS.for_timeout(20),
                                       probe=probe, hook=hook, params=params, reference=parts_without(hook)))
        home[probe + " " + json.dumps(params, sort_keys=True)] = base64.b64encode(reply.result).decode()
        if probe.endswith("probe_clip"):  # the home results would pass on the first submission's inputs
            config = RunConfig(secret=submission_secret(SECRET.secret, {n: (tmp_path / "submission" / n).read_text()
                                                                        for n in first_files if n.endswith(".py")}))
            plan = engine.plan(get_plugin_manager(), config)
            check = next(c for c in plan.checks if c.probe.path == probe and dict(c.probe.params) == params)
            assert verdict_for(check, decode(reply)).status == PASSED
    second_files = dict(forwarding_files("trick"), **{"trick.py": REPLAY, "home_data.py": f"HOME = {home!r}\n"})
    second = graded(skeleton_folder(tmp_path, second_files), SECRET)
    assert second.points == 0, [(c.check_id, c.message) for c in second.all_checks() if c.points]


def test_a_submission_always_gets_the_same_secret_inputs_and_another_gets_others():
    from grader.secret import secret_params, submission_secret

    files = {"rnn_scratch.py": "x = 1\n"}
    same = submission_secret("course", dict(files))
    assert same == submission_secret("course", files)
    others = [submission_secret("course", {"rnn_scratch.py": "x = 1  # edited\n"}),
              submission_secret("another course", files), submission_secret("course", {"rnn_scratch.py": "x = 1\n",
                                                                                          "helper.py": ""})]
    assert len({same, *others}) == 4
    params = {"seed": 7, "num_hiddens": 48, "nested": [{"value_seed": 99, "batch_size": 1}], "lr": 2.0}
    assert secret_params(params, None) == params  # no secret: the published inputs
    drawn = secret_params(params, same)
    assert drawn == secret_params(params, same) and drawn != secret_params(params, others[0])
    assert drawn["nested"][0]["batch_size"] == 1 and drawn["lr"] == 2.0 and drawn["num_hiddens"] > 48


#: the usual routes to the reference, each in the exercise file it would serve
ROUTES = {
    "grad_clipping.py": "from grader import hookimpl\nfrom grader.plugins import reference_hooks\n\n"
                        "@hookimpl\ndef grad_clipping(net, theta):\n    return reference_hooks()['grad_clipping'](net, theta)\n",
    "predict.py": "import importlib\nfrom grader import hookimpl\n\n@hookimpl\ndef predict(prefix, num_preds, net, vocab, device):\n"
                  "    return importlib.import_module('grader.reference.predict').predict(prefix, num_preds, net, vocab, device)\n",
    "gradient_flow.py": "import importlib.util, pathlib\nfrom grader import hookimpl\n\n@hookimpl\ndef state_jacobian(h_next, W_hh):\n"
                        "    origin = importlib.util.find_spec('grader.reference.gradient_flow').origin\n"
                        "    namespace = {}\n    exec(pathlib.Path(origin).read_text().replace('@hookimpl', ''), namespace)\n"
                        "    return namespace['state_jacobian'](h_next, W_hh)\n",
}


def test_without_the_sandbox_the_usual_routes_to_the_reference_are_seen(grading, submission):
    from grader.judge import engine
    from grader.judge.runners import Runner

    pm = get_plugin_manager()
    with Runner(sandbox="off") as open_runner:  # a student's machine without bubblewrap
        report = engine.grade(submission(ROUTES), RunConfig(), pm, open_runner, engine.plan(pm, RunConfig()))
    assert_reports_written(report)
    exercises = {e.name: e for e in report.exercises}
    for name in ROUTES:
        exercise = EXERCISE_OF_FILE[name]
        assert exercises[exercise].points == 0, (name, [c.message for c in exercises[exercise].checks])
        assert any(f"{exercise} scored 0" in n for n in report.notices), report.notices
    assert exercises["rnn_scratch"].points == exercises["rnn_scratch"].max_points  # the others keep theirs
