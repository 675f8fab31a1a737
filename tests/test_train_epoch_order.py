"""The order of zero_grad, backward, clipping and the update in train_epoch, judged from recorded values.

Each run's raw record goes straight to the judges (as in ``test_train_epoch_forgery``), so every order
is tried in seconds. Both update checks scale every other minibatch's loss gradients far above θ, so a
step that sees unclipped gradients shows whatever the branch. The order of events the run records
words a failure; it never decides one.
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

from grader import wire
from grader.checks import train_epoch as te
from grader.config import RunConfig
from grader.plugins import reference_hooks
from grader.training import Setup, run_training

CHECKS = {c.name: c for c in te.grader_checks(RunConfig())}
HOOKS = reference_hooks()
FIX = "call grad_clipping(net, 1) after loss.backward() and before "


def loop(order: str) -> Callable:
    """A train_epoch doing, per minibatch, z(ero_grad, optimizer only), b(ackward), c(lip), s(tep) in ``order``."""

    def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
        state, total, count = None, 0.0, 0
        for X, Y in train_iter:
            if state is None or use_random_iter:
                state = net.begin_state(batch_size=X.shape[0], device=device)
            else:
                state = tuple(s.detach() for s in state)
            y_hat, state = net(X, state)
            l = loss(y_hat, Y.T.reshape(-1)).mean()
            optim = isinstance(updater, torch.optim.Optimizer)
            for op in order:
                if op == "z" and optim:
                    updater.zero_grad()
                elif op == "b":
                    l.backward()
                elif op == "c":
                    HOOKS["grad_clipping"](net, 1)
                elif op == "s":
                    updater.step() if optim else updater(batch_size=1)
            total, count = total + l.item() * Y.numel(), count + Y.numel()
        return math.exp(total / count), count / 1e-3

    return train_epoch


def run(check: str, order: str) -> dict:
    params = dict(CHECKS[check].probe.params)
    torch.set_num_threads(1)
    return run_training(loop(order), HOOKS, Setup(**params.pop("setup")), **params)


def verdict(check: str, raw: dict):
    observed = wire.loads(wire.dumps(raw), 1 << 30)
    return CHECKS[check].judge(observed, **CHECKS[check].probe.params)


def test_both_update_probes_scale_the_gradients_above_theta():
    for check in ("clipping", "optimizer"):
        assert CHECKS[check].probe.params.get("loss_scale", 1.0) >= 100, check
    assert CHECKS["optimizer"].probe.params.get("optimizer") is True


@pytest.mark.parametrize("order", ["zbcs", "bcsz"])  # zero_grad before backward, or right after the previous step
def test_correct_orders_pass_both_checks(order):
    for check in ("clipping", "optimizer"):
        v = verdict(check, run(check, order))
        assert v.status == "passed" and v.fraction == 1, f"{check}: {v.message}"
        assert "were above θ" in v.message


@pytest.mark.parametrize("order, check, words", [
    ("zbsc", "optimizer", f"the optimizer stepped with unclipped gradients of norm {{}} > θ = 1 (they were clipped "
                          f"only after the step): {FIX}updater.step()"),
    ("zbs", "optimizer", f"the optimizer stepped with unclipped gradients of norm {{}} > θ = 1: {FIX}updater.step()"),
    ("zbsc", "clipping", f"the updater was called with unclipped gradients of norm {{}} > θ = 1: {FIX}updater(batch_size=1)"),
    ("bczs", "optimizer", "updater.zero_grad() was called after loss.backward()"),
    ("bcs", "optimizer", "call updater.zero_grad() before backward()"),
])
def test_each_wrong_order_fails_with_what_was_observed(order, check, words):
    v = verdict(check, run(check, order))
    assert v.status == "failed" and v.fraction == 0, v.message
    head, _, tail = words.partition("{}")
    assert head in v.message and tail in v.message, v.message
    if tail:  # the norm named is the one the judge recomputed at the first scaled minibatch
        norm = float(v.message.split(head, 1)[1].split(" ", 1)[0])
        assert norm > 10 and v.message.startswith("in minibatch 1 ")


def test_the_recorded_order_only_words_a_failure():
    good, bad = run("optimizer", "zbcs"), run("optimizer", "zbsc")
    # a passing run with a made-up order still passes; a failing run without its order still fails
    good["events"] = [["zero_grad", 0, 0.5], ["step", 0, None]] * 3
    assert verdict("optimizer", good).status == "passed"
    bad["events"] = []
    v = verdict("optimizer", bad)
    assert v.status == "failed" and FIX in v.message and "only after" not in v.message
    bad["events"] = "not a list of events"
    assert verdict("optimizer", bad).status == "failed"
