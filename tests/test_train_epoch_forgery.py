"""Forged train_epoch records earn nothing; an honest one earns everything.

The probe's objects run next to the student's code, which can rewrite what they
record or write a result of its own. The judges therefore recompute every
observation from raw values. Here records are forged the way a skeleton could
(claims without training, values from another run, tampered honest values) and
fed straight to the judges, then an honest run is fed to the same judges.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable

import pytest
import torch
from torch.nn import functional as F

from grader import wire
from grader.checks import train_epoch as te
from grader.config import RunConfig
from grader.plugins import reference_hooks
from grader.training import Setup, run_training

#: the checks whose record is the scratch model's, replayed by the judge; ``state.module`` runs nn.Module models and
#: reads only counts and flags (tests/test_train_epoch_modules.py)
NOT_REPLAYED = ("state.module",)
CHECKS = {c.name: c for c in te.grader_checks(RunConfig()) if c.name not in NOT_REPLAYED}
#: a course's secret seed moves the corpus, the seeds and the sizes
SECRET_CHECKS = {c.name: c for c in te.grader_checks(RunConfig(secret="forgery tests")) if c.name not in NOT_REPLAYED}
BEHAVIOUR = [name for name in CHECKS if name != "perplexity"]
BATCH_SIZE = CHECKS["labels"].probe.params["setup"]["batch_size"]
HOOKS = reference_hooks()


def run(check: str, train_epoch: Callable = HOOKS["train_epoch"], checks: dict = CHECKS, **setup_changes: Any) -> dict:
    """The raw (not yet encoded) result of ``check``'s probe, run in this process with ``train_epoch``."""
    params = dict(checks[check].probe.params)
    setup = Setup(**{**params.pop("setup"), **setup_changes})
    torch.set_num_threads(1)
    return run_training(train_epoch, HOOKS, setup, **params)


def verdict(check: str, raw: Any, checks: dict = CHECKS):
    """``check``'s verdict on a raw result, after the round trip through the wire that a runner's result takes."""
    observed = wire.loads(wire.dumps(raw), 1 << 30)
    return checks[check].judge(observed, **checks[check].probe.params)


@pytest.fixture(scope="module")
def honest() -> dict:
    return {name: run(name) for name in CHECKS}


def time_major(loss, y_hat, Y):
    return loss(y_hat, Y.T.reshape(-1))


def student_loop(score: Callable = time_major, transpose: bool = True, clip: Callable = HOOKS["grad_clipping"],
                 reset: bool = False) -> Callable:
    """A compact train_epoch with one switchable style or mistake, like a student's."""

    def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
        state, total, count, start = None, 0.0, 0, time.perf_counter()
        for X, Y in train_iter:
            if state is None or use_random_iter or reset:
                state = net.begin_state(batch_size=X.shape[0], device=device)
            else:
                state = tuple(s.detach() for s in state)
            y_hat, state = net(X, state)
            l = score(loss, y_hat, Y) if transpose else loss(y_hat, Y.reshape(-1))
            optim = isinstance(updater, torch.optim.Optimizer)
            if optim:
                updater.zero_grad()
            l.backward()
            if clip is not None:
                clip(net, 1)
            updater.step() if optim else updater(batch_size=1)
            total, count = total + l.item() * Y.numel(), count + Y.numel()
        return math.exp(total / count), count / (time.perf_counter() - start)

    return train_epoch


def assert_fails(check: str, raw: Any, *words: str, checks: dict = CHECKS) -> None:
    v = verdict(check, raw, checks)
    assert v.status == "failed" and v.fraction == 0, f"{check} {v.status}: {v.message}"
    assert any(w in v.message for w in words) if words else True, v.message


# ---------------------------------------------------------------- the honest run


@pytest.mark.parametrize("check", list(CHECKS))
def test_honest_run_passes(honest, check):
    v = verdict(check, honest[check])
    assert v.status == "passed", v.message


STYLES = {
    # scores that are not rows of the output: only the correct loss is believed, and it is the correct one
    "log-softmaxed scores": student_loop(lambda loss, y_hat, Y: loss(F.log_softmax(y_hat, dim=1), Y.T.reshape(-1))),
    # (B, V, T) scores against (B, T) labels
    "class dimension second": student_loop(lambda loss, y_hat, Y: loss(
        y_hat.reshape(Y.shape[1], Y.shape[0], -1).permute(1, 2, 0), Y)),
    "float64 scores": student_loop(lambda loss, y_hat, Y: loss(y_hat.double(), Y.T.reshape(-1))),
    "clip_grad_norm_": student_loop(clip=lambda net, theta: torch.nn.utils.clip_grad_norm_(net.params, theta)),
}


@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("check", BEHAVIOUR)
def test_correct_styles_pass_the_recomputation(style, check):
    v = verdict(check, run(check, STYLES[style]))
    assert v.status == "passed", v.message


@pytest.mark.parametrize("check", BEHAVIOUR)
def test_a_clipping_mistake_costs_only_the_update_checks(check):
    """clip_grad_value_ clamps each gradient: not this lesson's clipping, but still this loss's own gradients."""
    clamp = student_loop(clip=lambda net, theta: torch.nn.utils.clip_grad_value_(net.params, 0.01))
    v = verdict(check, run(check, clamp))
    assert (v.status == "passed") == (check not in ("clipping", "optimizer")), v.message


@pytest.mark.parametrize("check", list(CHECKS))
def test_honest_run_with_a_secret_seed_passes(check):
    assert SECRET_CHECKS[check].probe.params["setup"] != CHECKS[check].probe.params["setup"]
    v = verdict(check, run(check, checks=SECRET_CHECKS), SECRET_CHECKS)
    assert v.status == "passed", v.message


@pytest.mark.parametrize("check", list(CHECKS))
def test_published_inputs_replayed_under_a_secret_seed_fail(honest, check):
    """A record made at home on the published inputs, sent back when the course grades with a secret."""
    assert_fails(check, honest[check], checks=SECRET_CHECKS)


def test_result_sizes_stay_modest(honest):
    sizes = {name: len(wire.dumps(raw)) for name, raw in honest.items()}
    assert max(sizes.values()) < 2_000_000, sizes


# ---------------------------------------------------------------- claims without values


def flags_only(honest_raw: dict) -> dict:
    """What the objects used to report: perfect facts, no values behind them."""
    n = honest_raw["num_batches"]
    return {**{k: honest_raw[k] for k in ("epochs", "begin_states", "zero_grads", "updater_args", "num_batches")},
            "calls": [{"zeros": k == 0, "carried": k > 0, "has_grad_fn": False} for k in range(n)],
            "losses": [{"paired": True, "tokens": 128} for _ in range(n)],
            "updates": [{"known": True, "fresh_norm": 0.5, "norm": 0.5, "match": True, "zeroed": True}
                        for _ in range(n)]}


@pytest.mark.parametrize("check", BEHAVIOUR)
def test_perfect_flags_without_values_fail(honest, check):
    assert_fails(check, flags_only(honest[check]), "not consistent with a run of the model")


@pytest.mark.parametrize("check", BEHAVIOUR)
def test_skeleton_record_without_training_fails(honest, check):
    """Everything a loop records, made up without backward or update: zero gradients, initial parameters."""
    raw = copy.deepcopy(honest[check])
    init = [p.detach().clone() for p in te.initial_params(CHECKS[check].probe.params["setup"])]
    for call in raw["calls"]:
        call["params"] = [p.clone() for p in init]
        call["state"] = torch.zeros_like(call["state"])
    for update in raw["updates"]:
        update["grads"] = [torch.zeros_like(p) for p in init]
    raw["params"] = init
    assert_fails(check, raw)


@pytest.mark.parametrize("check", BEHAVIOUR)
def test_made_up_gradients_fail(honest, check):
    """The honest structure, but gradients of the right size that no backward() produced."""
    raw = copy.deepcopy(honest[check])
    g = torch.Generator().manual_seed(7)
    for update in raw["updates"]:
        update["grads"] = [torch.randn(t.shape, generator=g) * t.norm() / math.sqrt(t.numel()) for t in update["grads"]]
    # the update checks name what differs from the recomputed gradients first
    assert_fails(check, raw, "not consistent with a run of the model", "gradient")


# ---------------------------------------------------------------- values from another run


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("changes", [{"seed": 1}, {"corpus": {"markov": [4000, 1]}}], ids=["model-seed", "corpus"])
def test_honest_values_from_another_run_fail(check, changes):
    if check == "perplexity" and "seed" in changes:
        pytest.skip("a full training on the same text is the work itself, whatever its initial parameters")
    assert_fails(check, run(check, **changes))


def test_reference_perplexities_with_untrained_parameters_fail(honest):
    raw = copy.deepcopy(honest["perplexity"])
    raw["params"] = [p.clone() for p in te.initial_params(CHECKS["perplexity"].probe.params["setup"])]
    assert_fails("perplexity", raw, "not consistent with the perplexity")
    del raw["params"]
    assert_fails("perplexity", raw, "not consistent with the perplexity")
    raw["params"] = run("perplexity", corpus={"markov": [4000, 1]})["params"]  # trained, but on other text
    assert_fails("perplexity", raw, "not consistent with the perplexity")


# ---------------------------------------------------------------- a buggy run's values, tampered


def test_relabelled_losses_of_a_wrong_label_run_fail():
    raw = run("labels", student_loop(transpose=False))
    assert_fails("labels", raw, "wrong labels")
    for loss in raw["losses"]:  # claim the right labels: the recorded gradients were not theirs
        loss["labels"] = loss["labels"].reshape(BATCH_SIZE, -1).T.reshape(-1).clone()
    assert_fails("labels", raw, "not consistent with a run of the model")


def test_clipped_gradients_claimed_by_an_unclipped_run_fail():
    raw = run("clipping", student_loop(clip=None))
    assert_fails("clipping", raw, "clipped")
    for update in raw["updates"]:  # show clipped gradients: the parameters moved by the unclipped ones
        norm = math.sqrt(sum(float((g ** 2).sum()) for g in update["grads"]))
        update["grads"] = [g / max(norm, 1.0) for g in update["grads"]]
    assert_fails("clipping", raw, "not consistent with a run of the model")


def test_carried_states_claimed_by_a_resetting_run_fail():
    raw = run("state.sequential", student_loop(reset=True))
    assert_fails("state.sequential", raw, "fresh state")
    raw["begin_states"] = 1
    previous = None
    for call in raw["calls"]:  # show each state as the previous call's final one, computed here
        if previous is not None:
            call["state"] = previous
        X = F.one_hot(call["inputs"].T, call["params"][0].shape[0]).float()
        _, (previous,) = HOOKS["rnn"](X, (call["state"],), call["params"])
    assert_fails("state.sequential", raw, "not consistent with a run of the model")


def test_loss_values_and_returned_numbers_are_not_believed(honest):
    raw = copy.deepcopy(honest["reported"])
    for loss in raw["losses"]:
        loss["value"] = 0.5  # the judge recomputes the losses; these claims change nothing
    assert verdict("reported", raw).status == "passed"
    for epoch in raw["epochs"]:
        epoch["returned"] = [math.exp(0.5), epoch["returned"][1]]
    assert_fails("reported", raw, "returned perplexity")


# ---------------------------------------------------------------- through the runner


SKELETON_FORGER = '''
import math
import time

import torch

from grader import hookimpl


@hookimpl
def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
    """Forward passes only; the updates are written into the grader's log instead of made."""
    log, state, total, count, start = net.log, None, 0.0, 0, time.perf_counter()
    for X, Y in train_iter:
        state = net.begin_state(batch_size=X.shape[0], device=device) if state is None or use_random_iter \\
            else tuple(s.detach() for s in state)
        y_hat, state = net(X, state)
        l = loss(y_hat, Y.T.reshape(-1))
        entry = {"loss": len(log.losses) - 1, "call": len(log.calls) - 1, "known": True, "batch_size": 1.0,
                 "zeroed": True}
        if log.record:
            entry["grads"] = [torch.full_like(p, 1e-3) for p in net.params]
        log.updates.append(entry)
        total, count = total + float(l) * Y.numel(), count + Y.numel()
    return math.exp(total / count), count / (time.perf_counter() - start)
'''


def test_a_submission_faking_its_updates_earns_nothing(grading, submission):
    report = grading(submission({"train_epoch.py": SKELETON_FORGER}))
    checks = [c for c in report.all_checks() if c.exercise == "train_epoch"]
    assert not [(c.check_id, c.message) for c in checks if c.points > 0]
    checks = [c for c in checks if c.check_id.removeprefix("train_epoch.") not in NOT_REPLAYED]
    # the behaviour checks fail on the recomputation, not on a claim the submission left out
    assert all("not consistent with a run of the model" in c.message or "gradient" in c.message
               for c in checks if c.check_id != "train_epoch.perplexity"), [c.message for c in checks]
