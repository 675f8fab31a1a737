"""train_epoch on nn.Module models: a state that is one tensor (nn.RNN, nn.GRU) and a tuple of tensors (nn.LSTM).

The scratch model's state is always a tuple, so a loop that only knows `for s in state: s.detach_()`
passes every check run on it; `train_epoch.state.module` is the check that sees it fail. The check
decides from the parameters each model ends with, compared with the judge's own run of the reference
loop: the flags the run records (state kind, graph, counts) only word a failure, so forging them earns
nothing.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from conftest import mutate

from grader import wire
from grader.checks import train_epoch as te
from grader.config import RunConfig
from grader.plugins import reference_hooks
from grader.training import Setup

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
    assert "nn.RNN, nn.GRU, nn.LSTM" in checks[MODULE].message and "detached" in checks[MODULE].message


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
    # the scratch model's state is a tuple too: the scratch state check names the mistake, this one points to it
    key = "train_epoch.tuple-state-detached-as-one"
    assert checks["train_epoch.state.sequential"].misconception == key
    assert checks[MODULE].misconception == key and checks[MODULE].same_cause_as == "train_epoch.state.sequential"
    assert "nn.LSTM" in checks[MODULE].details and "tuple" in checks[MODULE].details, checks[MODULE].details


@pytest.mark.parametrize("replacement", ["", "        else:\n            state = state\n"])
def test_never_detaching_loses_the_module_check(grading, submission, replacement):
    report = grading(submission(mutate("train_epoch.py", DETACH, replacement)))
    checks = checks_of(report)
    assert checks[MODULE].status != "passed" and checks[MODULE].points == 0
    carrier = checks["train_epoch.state.sequential"]
    assert carrier.misconception == checks[MODULE].misconception == "train_epoch.state-not-detached"
    assert "detach" in carrier.message and checks[MODULE].same_cause_as == carrier.check_id
    assert "detach" in checks[MODULE].details and "graph" in checks[MODULE].details, checks[MODULE].details


def test_a_loop_that_never_updates_loses_the_module_check(grading, submission):
    report = grading(submission(mutate("train_epoch.py", "            updater(batch_size=1)\n", "            pass\n")))
    checks = checks_of(report)
    assert checks[MODULE].status != "passed" and checks[MODULE].points == 0
    assert "updater(batch_size=1)" in checks[MODULE].message, checks[MODULE].message


# ---------------------------------------------------------------- the judge on records made in this process

CHECK = {c.name: c for c in te.grader_checks(RunConfig())}["state.module"]
PARAMS = CHECK.probe.params
HOOKS = reference_hooks()


def record(train_epoch) -> dict:
    """The raw result of the state.module probe, run here with ``train_epoch``."""
    def attempt(call):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - as the runner's ctx.attempt
            return {"error": f"{type(exc).__name__}: {exc}"}

    torch.set_num_threads(1)
    setup = Setup(**PARAMS["setup"])
    return {"cases": [te.module_training(train_epoch, HOOKS, setup, layer, optimizer, PARAMS["max_batches"], attempt)
                      for layer, optimizer in PARAMS["cases"]]}


def verdict(raw: dict):
    """The check's verdict after the round trip through the wire that a runner's result takes."""
    return CHECK.judge(wire.loads(wire.dumps(raw), 1 << 30), **PARAMS)


def loop(reset: bool = False, labels_transposed: bool = True, step: bool = True):
    """A compact, correct train_epoch for both kinds of state, with one switchable mistake."""
    def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
        state, total, count, start = None, 0.0, 0, time.perf_counter()
        for X, Y in train_iter:
            if state is None or use_random_iter or reset:
                state = net.begin_state(batch_size=X.shape[0], device=device)
            else:
                state = state.detach() if isinstance(state, torch.Tensor) else tuple(s.detach() for s in state)
            y_hat, state = net(X, state)
            l = loss(y_hat, (Y.T if labels_transposed else Y).reshape(-1))
            optimizer = isinstance(updater, torch.optim.Optimizer)
            if optimizer:
                updater.zero_grad()
            l.backward()
            HOOKS["grad_clipping"](net, 1)
            if step:
                updater.step() if optimizer else updater(batch_size=1)
            total, count = total + l.item() * Y.numel(), count + Y.numel()
        return math.exp(total / count), count / (time.perf_counter() - start)
    return train_epoch


@pytest.fixture(scope="module")
def honest() -> dict:
    return record(HOOKS["train_epoch"])


def test_the_models_cover_both_kinds_of_state_with_both_updaters():
    cases = {tuple(c) for c in PARAMS["cases"]}
    assert cases == {(layer, optimizer) for layer in ("RNN", "GRU", "LSTM") for optimizer in (False, True)}


def test_honest_runs_pass_whatever_the_style(honest):
    assert verdict(honest).status == "passed"
    assert verdict(record(loop())).status == "passed"  # detach() instead of detach_(), labels flattened by hand


def test_perfect_flags_without_training_fail(honest):
    forged = {"cases": []}
    for (layer, optimizer), run in zip(PARAMS["cases"], honest["cases"]):
        initial = te.module_reference(PARAMS["setup"], layer, optimizer, PARAMS["max_batches"])["initial"]
        forged["cases"].append(dict(run, params=[p.clone() for p in initial]))
    v = verdict(forged)
    assert v.status == "failed" and "are not those the book's loop reaches" in v.message, v.message


def test_a_run_that_never_updates_but_claims_its_updates_fails(honest):
    raw = record(loop(step=False))
    for run, real in zip(raw["cases"], honest["cases"]):
        run["updates"] = real["updates"]  # the counter is the runner's word; the parameters are not
    v = verdict(raw)
    assert v.status == "failed" and "parameters" in v.message, v.message


def test_tampered_or_malformed_parameters_fail(honest):
    nudged = {"cases": [dict(run) for run in honest["cases"]]}
    first = nudged["cases"][2]  # nn.GRU with the scratch updater
    moved = te.module_reference(PARAMS["setup"], "GRU", False, PARAMS["max_batches"])
    change = [w - i for w, i in zip(moved["final"], moved["initial"])]
    first["params"] = [p + 0.01 * d for p, d in zip(first["params"], change)]
    assert "nn.GRU" in verdict(nudged).message and verdict(nudged).status == "failed"
    for bad in ([], "params", [p.double() for p in honest["cases"][0]["params"]], honest["cases"][0]["params"][:-1]):
        broken = {"cases": [dict(honest["cases"][0], params=bad), *honest["cases"][1:]]}
        v = verdict(broken)
        assert v.status == "failed" and "not a list of the model's parameters" in v.message, (bad, v.message)


def test_a_state_reset_every_minibatch_is_seen_on_the_models():
    v = verdict(record(loop(reset=True)))
    assert v.status == "failed" and "minibatch 2 started from a fresh state" in v.message, v.message


def test_a_mistake_beyond_the_state_costs_the_check_too():
    """Labels that do not match the outputs train the model elsewhere; no recorded flag shows it."""
    v = verdict(record(loop(labels_transposed=False)))
    assert v.status == "failed" and "Y.T.reshape(-1)" in v.message, v.message


def test_the_module_run_stays_fast(honest):
    start = time.perf_counter()
    record(HOOKS["train_epoch"])
    assert time.perf_counter() - start < 5.0
    assert len(wire.dumps(honest)) < 1_000_000
