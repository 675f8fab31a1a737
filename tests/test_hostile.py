"""Hostile submissions: each must finish within a bound, score no more than its honest part,
leave the other exercises graded, and leave nothing behind (processes, files, connections).

Every case is the reference submission with ONE file replaced by a hostile one, so the
honest part is known exactly: full marks on the exercises the hostile file does not touch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import EXERCISE_OF_FILE, REFERENCE, assert_reports_written, by_exercise
from grader.config import RunConfig
#: per-check time limit here (correct code needs under 1 s per check)
HOSTILE_TIMEOUT = 5.0
#: wall-clock bound for grading one hostile submission
BOUND = 90


@pytest.fixture(scope="module")
def sandboxed(runner):
    return runner.sandboxed


def reference_source(name: str) -> str:
    return (REFERENCE / name).read_text()


def with_prelude(name: str, prelude: str) -> dict:
    """The reference file with hostile code at import time."""
    return {name: prelude + "\n" + reference_source(name)}


def with_hook_body(name: str, hook: str, body: str) -> dict:
    """The reference file with hostile code at the start of one hook."""
    source = reference_source(name)
    head, sep, rest = source.partition(f"def {hook}(")
    signature, colon, tail = rest.partition(":\n")
    indented = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return {name: head + sep + signature + colon + indented + tail}


def no_processes_with(marker: str) -> bool:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return marker not in ps


def grade_hostile(grading, submission, files: dict):
    start = time.monotonic()
    report = grading(submission(files), RunConfig(check_timeout=HOSTILE_TIMEOUT))
    elapsed = time.monotonic() - start
    assert elapsed < BOUND, f"took {elapsed:.0f} s"
    assert_reports_written(report)
    return report


def assert_honest(report, hostile_files: list[str], may_lose: tuple[str, ...] = ()):
    """Exercises untouched by the hostile files keep full marks; the touched ones gain nothing."""
    touched = {EXERCISE_OF_FILE[f] for f in hostile_files} | set(may_lose)
    exercises = by_exercise(report)
    for name, exercise in exercises.items():
        if name not in touched:
            assert exercise.points == exercise.max_points, (name, [c.message for c in exercise.checks if c.status != "passed"])
    assert any(exercises[t].points < exercises[t].max_points for t in touched if t in exercises)


# ------------------------------------------------------------------ hanging, crashing, exiting

HANGS_AND_CRASHES = {
    "infinite loop at import": ("grad_clipping.py", "while True:\n    pass\n", None),
    "sleep forever at import": ("predict.py", "import time\ntime.sleep(10**6)\n", None),
    "os._exit(0) at import": ("predict.py", "import os\nos._exit(0)\n", None),
    "sys.exit(0) at import": ("grad_clipping.py", "import sys\nsys.exit(0)\n", None),
    "segfault at import": ("grad_clipping.py", "import ctypes\nctypes.string_at(0)\n", None),
    "infinite loop in a hook": ("grad_clipping.py", None, ("grad_clipping", "while True:\n    pass")),
    "sleep forever in a hook": ("predict.py", None, ("predict", "import time\ntime.sleep(10**6)")),
    "ignores SIGTERM and hangs": ("predict.py", None, ("predict", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    time.sleep(1)")),
    "os._exit(0) in a hook": ("grad_clipping.py", None, ("grad_clipping", "import os\nos._exit(0)")),
    "sys.exit(0) in a hook": ("grad_clipping.py", None, ("grad_clipping", "import sys\nsys.exit(0)")),
    "segfault in a hook": ("predict.py", None, ("predict", "import ctypes\nctypes.string_at(0)")),
    "recursion bomb": ("grad_clipping.py", None, ("grad_clipping", "def f(n):\n    return f(n + 1)\nf(0)")),
    "memory bomb": ("grad_clipping.py", None, ("grad_clipping", "import torch\nhog = torch.ones(2 ** 34)")),
    "python memory bomb": ("predict.py", None, ("predict", "hog = [0] * (2 ** 33)")),
}


@pytest.mark.parametrize("case", list(HANGS_AND_CRASHES), ids=list(HANGS_AND_CRASHES))
def test_hangs_crashes_and_exits_cost_only_their_exercise(grading, submission, case):
    name, prelude, hook = HANGS_AND_CRASHES[case]
    files = with_prelude(name, prelude) if prelude else with_hook_body(name, *hook)
    report = grade_hostile(grading, submission, files)
    assert_honest(report, [name])
    exercise = by_exercise(report)[EXERCISE_OF_FILE[name]]
    assert exercise.points == 0
    reasons = " ".join([c.message for c in exercise.checks] + [p.message for p in report.problems])
    if "memory" in case:
        assert "memory limit" in reasons
    if "segfault" in case:
        assert "segmentation fault" in reasons
    if "loop" in case or "sleep" in case or "SIGTERM" in case:
        assert "s wall time" in reasons or "took longer than" in reasons


def test_train_epoch_still_graded_when_the_clipping_file_hangs_at_import(grading, submission):
    report = grade_hostile(grading, submission, with_prelude("grad_clipping.py", "while True:\n    pass\n"))
    assert by_exercise(report)["train_epoch"].points == 20
    assert any("took longer than" in p.message for p in report.problems if p.path == "grad_clipping.py")


def test_four_files_that_hang_at_import_are_graded_quickly_with_default_limits(grading, submission):
    hanging = ("grad_clipping.py", "predict.py", "sine_wave.py", "gradient_flow.py")
    files = {name: "while True:\n    pass\n" + reference_source(name) for name in hanging}
    start = time.monotonic()
    report = grading(submission(files), RunConfig())
    elapsed = time.monotonic() - start
    assert elapsed < 45, f"took {elapsed:.0f} s"
    assert_honest(report, list(hanging))
    for name in hanging:
        assert by_exercise(report)[EXERCISE_OF_FILE[name]].points == 0
        assert any("took longer than" in p.message for p in report.problems if p.path == name)
    assert_reports_written(report)


def test_fork_bomb_is_contained(grading, submission, sandboxed):
    if not sandboxed:
        pytest.skip("without the sandbox a fork bomb is only stopped by the time limit")
    marker = f"forkbomb-{uuid.uuid4().hex[:8]}"
    body = f"import os, time\nos.environ['M'] = '{marker}'\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)"
    report = grade_hostile(grading, submission, with_hook_body("grad_clipping.py", "grad_clipping", body))
    assert_honest(report, ["grad_clipping.py"])
    assert by_exercise(report)["grad_clipping"].points == 0


# ------------------------------------------------------------------ lying about results

LIARS = {
    "patch torch.allclose and torch.equal": ("grad_clipping.py",
        "import torch\ntorch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
        "from grader import hookimpl\n\n@hookimpl\ndef grad_clipping(net, theta):\n    pass\n"),
    "patch numpy comparisons": ("grad_clipping.py",
        "import numpy\nnumpy.allclose = lambda *a, **k: True\nnumpy.array_equal = lambda *a, **k: True\n"
        "from grader import hookimpl\n\n@hookimpl\ndef grad_clipping(net, theta):\n    pass\n"),
    "patch the grader's modules": ("train_epoch.py",
        "import grader.training, grader.compare, grader.wire\n"
        "grader.training._labels_paired = lambda *a: True\n"
        "grader.training._update_facts = lambda *a: {'known': True, 'fresh_norm': 0.5, 'norm': 0.5, 'match': True}\n"
        "grader.compare.check_allclose = lambda *a, **k: None\n"
        + reference_source("train_epoch.py").replace("y = Y.T.reshape(-1)", "y = Y.reshape(-1)").replace("grad_clipping(net, 1)", "pass")),
    "tensor subclass that lies in __torch_function__": ("rnn_scratch.py",
        reference_source("rnn_scratch.py") + "\n\nclass Liar(torch.Tensor):\n"
        "    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        if func.__name__ in ('__eq__', 'allclose', 'equal', 'isclose'):\n            return True\n"
        "        return super().__torch_function__(func, types, args, kwargs or {})\n\n"
        "_honest_rnn = rnn\n\n\n@hookimpl\ndef rnn(inputs, state, params):\n"
        "    outputs, (H,) = _honest_rnn(inputs, state, params)\n"
        "    return (outputs * 0 + 1).as_subclass(Liar), (H.as_subclass(Liar),)\n"),
    "object whose __eq__ is always true": ("predict.py",
        "from grader import hookimpl\n\nclass Anything(str):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = str.__hash__\n    def startswith(self, *a):\n        return True\n    def __len__(self):\n        return 10**6\n\n"
        "@hookimpl\ndef predict(prefix, num_preds, net, vocab, device):\n    return Anything('nonsense')\n"),
    "prints a fake score": ("grad_clipping.py",
        "from grader import hookimpl\n\n@hookimpl\ndef grad_clipping(net, theta):\n"
        "    print('Score: 100/100 (100%)  all passed')\n    print('{\"score\": 100, \"max_score\": 100}')\n"),
    "floods stdout": ("predict.py",
        "from grader import hookimpl\n\n@hookimpl\ndef predict(prefix, num_preds, net, vocab, device):\n"
        "    while True:\n        print('x' * 10000)\n"),
    "imports the reference": ("grad_clipping.py",
        "from grader import hookimpl\nfrom reference.grad_clipping import grad_clipping as _ref\n\n"
        "@hookimpl\ndef grad_clipping(net, theta):\n    return _ref(net, theta)\n"),
    "imports grader.reference": ("grad_clipping.py",
        "from grader import hookimpl\nfrom grader.reference.grad_clipping import grad_clipping as _ref\n\n"
        "@hookimpl\ndef grad_clipping(net, theta):\n    return _ref(net, theta)\n"),
    "reads the reference's files": ("predict.py",
        "import grader, pathlib\nfrom grader import hookimpl\n"
        "_root = pathlib.Path(grader.__file__).resolve().parent.parent\n"
        "_namespace = {}\nexec(compile((_root / 'reference' / 'predict.py').read_text().replace('@hookimpl', ''), 'x', 'exec'), _namespace)\n\n"
        "@hookimpl\ndef predict(prefix, num_preds, net, vocab, device):\n    return _namespace['predict'](prefix, num_preds, net, vocab, device)\n"),
    "NaN outputs": ("rnn_scratch.py",
        reference_source("rnn_scratch.py").replace("return torch.cat(outputs, dim=0), (H,)",
                                                   "return torch.cat(outputs, dim=0) * float('nan'), (H * float('nan'),)")),
    "huge outputs": ("rnn_scratch.py",
        reference_source("rnn_scratch.py").replace("return torch.cat(outputs, dim=0), (H,)",
                                                   "return torch.zeros(10**8, 64), (H,)")),
}


@pytest.mark.parametrize("case", list(LIARS), ids=list(LIARS))
def test_lying_earns_nothing(grading, submission, case):
    name, source = LIARS[case]
    report = grade_hostile(grading, submission, {name: source})
    assert_honest(report, [name])
    exercise = by_exercise(report)[EXERCISE_OF_FILE[name]]
    if case in ("imports the reference", "imports grader.reference", "reads the reference's files",
                "patch the grader's modules", "patch torch.allclose and torch.equal", "patch numpy comparisons"):
        assert exercise.points == 0
    if case in ("imports the reference", "imports grader.reference", "reads the reference's files"):
        assert any("integrity" in n for n in report.notices)
    if case == "floods stdout":
        assert any("1 MiB" in c.message for c in exercise.checks)
    for check in report.all_checks():
        assert len(check.output) <= 70_000


def test_default_dtype_change_at_import_does_not_break_honest_code(grading, submission):
    report = grade_hostile(grading, submission, with_prelude("predict.py", "import torch\ntorch.set_default_dtype(torch.float64)\n"))
    assert report.points == 100


def test_shadowing_torch_is_refused(grading, submission):
    report = grade_hostile(grading, submission, {"torch.py": "raise SystemExit('gotcha')\n", "numpy.py": "import os\nos._exit(0)\n"})
    assert report.points == 100
    assert {p.path for p in report.problems} >= {"torch.py", "numpy.py"}


# ------------------------------------------------------------------ reaching outside

def test_orphan_background_processes_do_not_survive(grading, submission):
    marker = f"orphan{uuid.uuid4().hex[:10]}"
    body = (f"import os, subprocess\n"
            f"subprocess.Popen(['sh', '-c', 'sleep 1000; echo {marker}-popen'], start_new_session=True)\n"
            f"if os.fork() == 0:\n    os.setsid()\n    os.execvp('sh', ['sh', '-c', 'sleep 999; echo {marker}-setsid'])\n")
    report = grade_hostile(grading, submission, with_hook_body("grad_clipping.py", "grad_clipping", body))
    time.sleep(0.5)
    assert no_processes_with(marker)
    assert report.points == 100  # starting processes is not an error; they just do not outlive the check


def test_writing_outside_its_folder_leaves_nothing(grading, submission, sandboxed, tmp_path):
    if not sandboxed:
        pytest.skip("without the sandbox a submission can write where the grading user can")
    marker = uuid.uuid4().hex[:10]
    targets = [Path("/tmp") / f"pwned-{marker}", REFERENCE.parent / f"pwned-{marker}.py", Path.home() / f"pwned-{marker}"]
    body = "\n".join(f"try:\n    open({str(t)!r}, 'w').write('x')\nexcept OSError:\n    pass" for t in targets)
    report = grade_hostile(grading, submission, with_prelude("predict.py", body))
    assert report.points == 100
    assert not any(t.exists() for t in targets)


def test_network_connections_are_blocked(grading, submission, sandboxed):
    if not sandboxed:
        pytest.skip("without the sandbox the network is reachable")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections = []

    def accept():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                connections.append(server.accept())
            except (socket.timeout, OSError):
                if server.fileno() == -1:
                    return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    body = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'stolen')\nexcept OSError:\n    pass"
    report = grade_hostile(grading, submission, with_prelude("predict.py", body))
    server.close()
    assert report.points == 100
    assert connections == []


def test_runner_processes_are_gone_after_stop():
    from grader.judge.runners import Runner

    runner = Runner()
    runner.start()
    pid = runner.proc.pid
    runner.stop()
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
