"""Mistakes from an audit of realistic submissions nobody on the team wrote: what each now says.

Each case was once misnamed or blamed on the wrong thing; these pin the message that replaced it.
"""

from __future__ import annotations

import pytest

from batch_grading import grade_many, report_of, selected_ids
from conftest import edits, mutate
from grader.judge.engine import META_NOTICE

CASES = {
    # the warm-up feeds each prefix character one step late: prefix[0] never, the last one twice
    "predict-late-warm-up": edits("predict.py", ("    for y in prefix[1:]:\n        _, state = net(get_input(), state)\n",
                                                 "    for y in prefix[1:]:\n        _, state = net(torch.tensor([[vocab[y]]], "
                                                 "device=device), state)\n")),
    "predict-argmax-dim-0": mutate("predict.py", "y.argmax(dim=1)", "y.argmax(dim=0)"),
    "params-xavier": mutate("rnn_scratch.py", "return torch.randn(size=shape, device=device) * 0.01",
                            "return torch.nn.init.xavier_uniform_(torch.empty(shape, device=device))"),
    "concise-state-batch-first": mutate("rnn_concise.py", "shape = (self.num_directions * self.rnn.num_layers, batch_size, ",
                                        "shape = (batch_size, self.num_directions * self.rnn.num_layers, "),
}


@pytest.fixture(scope="module")
def reports(request, runner, tmp_path_factory):
    names = [n for n in selected_ids(request) if n in CASES] or list(CASES)
    return grade_many(runner, tmp_path_factory.mktemp("audit"), {n: CASES[n] for n in names})


def checks_of(reports, name: str) -> dict:
    return {c.check_id: c for c in report_of(reports, name).all_checks()}


def test_a_late_warm_up_is_not_called_a_skipped_prefix(reports):
    checks = checks_of(reports, "predict-late-warm-up")
    state = checks["predict.state"]
    assert state.status == "failed" and state.misconception != "predict.skips-prefix"
    assert "should be fed" in state.message + state.details  # what was fed, against what should be


def test_argmax_over_the_wrong_dimension_is_named_once(reports):
    report = report_of(reports, "predict-argmax-dim-0")
    checks = checks_of(reports, "predict-argmax-dim-0")
    assert checks["predict.text"].misconception == "predict.argmax-wrong-dim"
    assert checks["predict.device.meta"].same_cause_as == "predict.text"  # not blamed on the device
    assert META_NOTICE not in report.notices


def test_xavier_initialisation_is_named(reports):
    init = checks_of(reports, "params-xavier")["rnn_scratch.params.init"]
    assert init.misconception == "params.xavier-init", init.message
    assert "torch.rand is uniform" not in init.message + init.details  # the student never used torch.rand


def test_a_state_with_swapped_axes_is_named_in_training_too(reports):
    checks = checks_of(reports, "concise-state-batch-first")
    assert "axes are in the order (batch_size, num_directions * num_layers" in checks["rnn_concise.begin_state"].message
    train = checks["rnn_concise.train"]
    assert "first two axes are swapped" in train.message and "inputs.T" not in train.message
