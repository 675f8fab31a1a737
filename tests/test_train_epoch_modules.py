"""train_epoch on nn.Module models: a state that is one tensor (nn.RNN) and a tuple of tensors (nn.LSTM).

The scratch model's state is always a tuple, so a loop that only knows `for s in state: s.detach_()`
passes every check run on it; `train_epoch.state.module` is the check that sees it fail.
"""

from __future__ import annotations

import pytest

from conftest import mutate

MODULE = "train_epoch.state.module"
#: the checks run on the scratch model, which a loop that only handles tuple states passes
SCRATCH = ("train_epoch.perplexity", "train_epoch.reported", "train_epoch.state.sequential", "train_epoch.state.random",
           "train_epoch.labels", "train_epoch.clipping", "train_epoch.optimizer")
TENSOR_BRANCH = "        elif isinstance(net, nn.Module) and not isinstance(state, tuple):\n            state.detach_()\n"
DETACH = TENSOR_BRANCH + "        else:\n            for s in state:\n                s.detach_()\n"


def checks_of(report) -> dict:
    return {c.check_id: c for c in report.all_checks()}


def test_reference_passes_on_module_models(grading, submission):
    report = grading(submission())
    checks = checks_of(report)
    assert checks[MODULE].status == "passed", checks[MODULE].message
    assert checks[MODULE].points == checks[MODULE].max_points == 2
    assert sum(c.max_points for c in checks.values() if c.check_id.startswith("train_epoch.")) == 20
    assert "nn.RNN and nn.LSTM" in checks[MODULE].message and "detached" in checks[MODULE].message


def test_tuple_only_detach_loses_the_module_check_only(grading, submission):
    report = grading(submission(mutate("train_epoch.py", TENSOR_BRANCH, "")))
    checks = checks_of(report)
    assert checks[MODULE].status != "passed" and checks[MODULE].points == 0
    message = checks[MODULE].message
    assert "nn.RNN" in message and "state.detach_()" in message and "views" in message, message
    for check_id in SCRATCH:
        assert checks[check_id].status == "passed", (check_id, checks[check_id].message)


def test_tensor_only_detach_fails_on_lstm(grading, submission):
    report = grading(submission(mutate("train_epoch.py", DETACH, "        else:\n            state.detach_()\n")))
    checks = checks_of(report)
    assert checks[MODULE].status != "passed" and checks[MODULE].points == 0
    assert "nn.LSTM" in checks[MODULE].message and "tuple" in checks[MODULE].message, checks[MODULE].message


@pytest.mark.parametrize("replacement", ["", "        else:\n            state = state\n"])
def test_never_detaching_loses_the_module_check(grading, submission, replacement):
    report = grading(submission(mutate("train_epoch.py", DETACH, replacement)))
    checks = checks_of(report)
    assert checks[MODULE].status != "passed" and checks[MODULE].points == 0
    assert "detach" in checks[MODULE].message and "graph" in checks[MODULE].message, checks[MODULE].message


def test_a_loop_that_never_updates_loses_the_module_check(grading, submission):
    report = grading(submission(mutate("train_epoch.py", "            updater(batch_size=1)\n", "            pass\n")))
    checks = checks_of(report)
    assert checks[MODULE].status != "passed" and checks[MODULE].points == 0
    assert "updater(batch_size=1)" in checks[MODULE].message, checks[MODULE].message
