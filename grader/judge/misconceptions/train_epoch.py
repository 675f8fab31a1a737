"""Mistakes in ``train_epoch``, recognised from the data its failing checks saw.

Three kinds of evidence, each read the way its check reads it:

- the behaviour runs (scratch model, raw values recorded): the judge's replay (:mod:`grader.replay`) gives
  the losses, states and gradients as recomputed from the record; a mistake leaves a signature in them
  (the labels met are ``Y.reshape(-1)``, the returned perplexity is the last minibatch's, ...);
- the full run (perplexity) and the nn.Module runs: the reference loop is re-run here with the mistake
  applied, on the same seeded setup, and its perplexities or final parameters are compared with the
  student's (:func:`mistaken_loop`);
- a run that raised: the error's text (``evidence.message``, or the error recorded per nn.Module case).
"""

from __future__ import annotations

import json
import math
import re
import time
from functools import lru_cache
from typing import Any, Callable, Iterable, Optional

import torch

from grader import hookimpl, refcache
from grader.checks import train_epoch as checks
from grader.checks.reference_runs import reference_training
from grader.definitions import Evidence, Misconception
from grader.plugins import reference_hooks
from grader.replay import initial_params, minibatches, replay
from grader.training import Setup, run_training
from grader.wire import TensorData

PREFIX = "train_epoch."
#: every check of the exercise, most specific first for a mistake that shows on all of them (a crash)
SCRATCH_CHECKS = ("perplexity", "reported", "labels", "clipping", "optimizer")
#: the perplexities and trained parameters (relative to how far training moved them) of a student's run and of
#: the mistaken reference agree to float reordering; a mistake worth naming moves the perplexity by more than
#: the check's 5% band, and two mistakes that train alike still end about 2% of the movement apart
PPL_RTOL = 1e-3
PARAMS_RTOL = 5e-3
#: returned numbers the student computed from the same losses the replay recomputes (float32 vs float64)
RETURNED_RTOL = 1e-4


def _ids(*names: str) -> tuple[str, ...]:
    return tuple(PREFIX + name for name in names)


# ---------------------------------------------------------------- the reference loop with one mistake


def mistaken_loop(mistake: str, batch_size: Any = 1) -> Callable:
    """The reference's ``train_epoch`` with ``mistake`` applied ("" for none); ``batch_size`` is the scratch
    updater's argument (the "updater-batch-size" mistake passes another)."""
    clip = reference_hooks()["grad_clipping"]

    def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
        state, total, tokens, start = None, 0.0, 0, time.perf_counter()
        for X, Y in train_iter:
            if state is None or use_random_iter or mistake == "state-reset":
                state = net.begin_state(batch_size=X.shape[0], device=device)
            elif isinstance(state, torch.Tensor):
                state.detach_()
            else:
                for s in state:
                    s.detach_()
            y = {"labels-not-transposed": Y.reshape(-1), "inputs-as-labels": X.T.reshape(-1)}.get(
                mistake, Y.T.reshape(-1))
            y_hat, state = net(Y if mistake == "labels-as-inputs" else X, state)
            l = loss(y_hat, y.long()).mean()
            if isinstance(updater, torch.optim.Optimizer):
                if mistake != "no-zero-grad":
                    updater.zero_grad()
                l.backward()
                clip(net, 1)
                updater.step()
            else:
                l.backward()
                clip(net, 1)
                updater(batch_size=batch_size)
            total += l.item() * y.numel()
            tokens += y.numel()
        return math.exp(total / tokens), tokens / max(time.perf_counter() - start, 1e-9)

    return train_epoch


@lru_cache(maxsize=32)
def _mistaken_full_run(mistake: str, batch_size: Any, setup_json: str, epochs: int) -> tuple:
    """(perplexity per epoch, final parameters) of the perplexity check's run with the mistaken loop."""
    torch.set_num_threads(1)  # as in the runner
    ppl, params = _mistaken_trained(mistake, batch_size, setup_json, epochs)
    return tuple(ppl), params


@refcache.cached()
def _mistaken_trained(mistake: str, batch_size: Any, setup_json: str, epochs: int) -> list:
    run = run_training(mistaken_loop(mistake, batch_size), reference_hooks(), Setup(**json.loads(setup_json)), epochs,
                       keep_params=True)
    return [[e["observed_ppl"] for e in run["epochs"]], run["params"]]


def _full_run_matches(mistake: str, batch_size: Any = 1) -> Callable[[Evidence], bool]:
    """The perplexity check's run: its per-epoch perplexities and its trained parameters are those of the
    reference loop with the mistake (two mistakes may train to nearly the same perplexities, not the same
    parameters)."""
    def recognise(evidence: Evidence) -> bool:
        setup, epochs = evidence.params["setup"], evidence.params["epochs"]
        got = [e.get("observed_ppl") for e in evidence.observed["epochs"]]
        ppl, params = _mistaken_full_run(mistake, batch_size, json.dumps(setup, sort_keys=True), epochs)
        correct = [e["observed_ppl"] for e in reference_training(Setup(**setup), epochs)["epochs"]]
        if not _close(got, ppl, PPL_RTOL) or _close(ppl, correct, 3 * PPL_RTOL):
            return False
        moved = {"initial": list(initial_params(setup)), "final": params}
        return checks.module_difference(evidence.observed.get("params"), moved) <= PARAMS_RTOL
    return recognise


@lru_cache(maxsize=64)
def _mistaken_module_params(mistake: str, batch_size: Any, setup_json: str, layer: str, optimizer: bool,
                            max_batches: int) -> Optional[list]:
    torch.set_num_threads(1)
    hooks = reference_hooks()
    run = checks.module_training(mistaken_loop(mistake, batch_size), hooks, Setup(**json.loads(setup_json)), layer,
                                 optimizer, max_batches)
    return None if run["error"] else run["params"]


def _modules_match(mistake: str, batch_size: Any = 1) -> Callable[[Evidence], bool]:
    """The nn.Module runs: every model ends with the parameters the mistaken reference loop gives it, and the
    mistake shows on at least one of them."""
    def recognise(evidence: Evidence) -> bool:
        setup, max_batches = evidence.params["setup"], evidence.params["max_batches"]
        runs, shown = evidence.observed["cases"], False
        for (layer, optimizer), run in zip(evidence.params["cases"], runs):
            mistaken = _mistaken_module_params(mistake, batch_size, json.dumps(setup, sort_keys=True), layer,
                                               bool(optimizer), max_batches)
            reference = checks.module_reference(setup, layer, optimizer, max_batches)
            if mistaken is None or run.get("error"):
                return False
            like = dict(reference, final=mistaken)  # measured against how far the mistaken loop moved them
            if checks.module_difference(run.get("params"), like) > checks.MODULE_RTOL:
                return False
            shown = shown or _apart(mistaken, reference) > 10 * checks.MODULE_RTOL
        return shown and len(runs) == len(evidence.params["cases"])
    return recognise


def _apart(params: list, reference: dict) -> float:
    """How far the mistaken loop's final parameters are from the reference loop's, relative to its movement."""
    return max(float((p.double() - w.double()).norm()) / max(float((w.double() - i.double()).norm()), 1e-12)
               for p, w, i in zip(params, reference["final"], reference["initial"]))


def _close(got: Iterable, want: Iterable, rtol: float) -> bool:
    got, want = list(got), list(want)
    return len(got) == len(want) and all(
        isinstance(g, float) and math.isfinite(g) and abs(g - w) <= rtol * abs(w) for g, w in zip(got, want))


# ---------------------------------------------------------------- signatures in the recorded runs


def _replayed(evidence: Evidence):
    rp = replay(evidence.observed, **evidence.params)
    return None if rp.malformed else rp


def _epoch_losses(rp, k: int) -> list:
    return [e for e in rp.losses if e is not None and e["epoch"] == k]


def _returned_perplexity(formula: Callable[[list, dict], float]) -> Callable[[Evidence], bool]:
    """The reported check: every epoch's returned perplexity is ``formula`` of the epoch's (recomputed) losses and
    the run's setup, which differs from exp(total loss / tokens) in at least one epoch."""
    def recognise(evidence: Evidence) -> bool:
        rp = _replayed(evidence)
        epochs = evidence.observed["epochs"]
        if rp is None or not epochs:
            return False
        differs = False
        for k, epoch in enumerate(epochs):
            entries = _epoch_losses(rp, k)
            ppl = epoch["returned"][0]
            if not entries or not isinstance(ppl, float):
                return False
            tokens = sum(e["tokens"] for e in entries)
            correct = math.exp(sum(e["value"] * e["tokens"] for e in entries) / tokens)
            mistaken = formula(entries, evidence.params["setup"])
            if not abs(ppl - mistaken) <= RETURNED_RTOL * max(abs(mistaken), 1.0):
                return False
            differs = differs or abs(mistaken - correct) > 1e-3 * correct
        return differs
    return recognise


def _last_batch(entries: list, _setup: dict) -> float:
    return math.exp(entries[-1]["value"])


def _mean_loss(entries: list, _setup: dict) -> float:
    return sum(e["value"] * e["tokens"] for e in entries) / sum(e["tokens"] for e in entries)


def _bitwise_and_sum(entries: list, _setup: dict) -> float:
    # total_loss += l * (1 & y.numel()): each minibatch counts once if its token count is odd, else not at all
    return math.exp(sum(e["value"] * (1 & e["tokens"]) for e in entries) / sum(e["tokens"] for e in entries))


def _unweighted_sum(entries: list, _setup: dict) -> float:
    # total_loss += l.item(): the sum of minibatch means, divided by the number of tokens
    return math.exp(sum(e["value"] for e in entries) / sum(e["tokens"] for e in entries))


def _sequences_counted(entries: list, setup: dict) -> float:
    # total_tokens += X.shape[0]: each minibatch's y.numel() = batch_size * num_steps tokens counted as batch_size
    return math.exp(sum(e["value"] * e["tokens"] for e in entries) / sum(e["tokens"] / setup["num_steps"]
                                                                          for e in entries))


def _returned_speed(what: str) -> Callable[[Evidence], bool]:
    """The reported check: the returned "speed" is the epoch's seconds, or its token count."""
    def recognise(evidence: Evidence) -> bool:
        epochs = evidence.observed["epochs"]
        for epoch in epochs:
            speed, seconds, tokens = epoch["returned"][1], epoch["seconds"], epoch["tokens"]
            if not (isinstance(speed, float) and speed > 0 and tokens > 0 and seconds > 0):
                return False
            if what == "seconds" and not (seconds / 3 <= speed <= seconds * 3 and tokens / seconds > 100 * speed):
                return False
            if what == "tokens" and abs(speed - tokens) > 0.5:
                return False
        return bool(epochs)
    return recognise


def _labels_met(which: str) -> Callable[[Evidence], bool]:
    """The labels check: the first minibatch scored against the wrong labels was scored, position by position,
    against ``Y.reshape(-1)`` ("Y") or ``X.T.reshape(-1)`` ("X") instead of ``Y.T.reshape(-1)``."""
    def recognise(evidence: Evidence) -> bool:
        rp = _replayed(evidence)
        if rp is None:
            return False
        observed, params = evidence.observed, evidence.params
        wrong = next((i for i, e in enumerate(rp.losses) if e is not None and e["paired"] is False), None)
        if wrong is None:
            return False
        loss = observed["losses"][wrong]
        labels = loss.get("labels")
        if not isinstance(labels, TensorData) or labels.array is None:
            return False
        pass_, index = observed["calls"][loss["call"]]["batch"]
        data = minibatches(json.dumps(params["setup"], sort_keys=True), bool(params.get("use_random_iter")),
                           pass_ + 1, params["max_batches"])
        X, Y = data[pass_][index]
        mistaken = Y.reshape(-1) if which == "Y" else X.T.reshape(-1)
        return bool(torch.equal(torch.from_numpy(labels.array.copy()), mistaken)) and \
            not torch.equal(mistaken, Y.T.reshape(-1))
    return recognise


def _sequential_calls(evidence: Evidence) -> Optional[list]:
    rp = _replayed(evidence)
    return rp.calls if rp is not None and len(rp.calls) >= 2 else None


def _state_reset(evidence: Evidence) -> bool:
    """Sequential run: every minibatch started from a fresh state of its own (begin_state once per minibatch)."""
    if evidence.check_id == PREFIX + "state.module":
        return _modules_match("state-reset")(evidence)
    if evidence.check_id == PREFIX + "perplexity":
        return _full_run_matches("state-reset")(evidence)
    calls = _sequential_calls(evidence)
    return calls is not None and evidence.observed["begin_states"] == len(calls) and all(c["zeros"] for c in calls)


def _random_state_kept(evidence: Evidence) -> bool:
    """Random sampling: one fresh state for the first minibatch, then the previous final state carried on."""
    calls = _sequential_calls(evidence)
    return calls is not None and evidence.observed["begin_states"] == 1 and calls[0]["zeros"] and all(
        c["carried"] for c in calls[1:])


def _unclipped_updates(evidence: Evidence) -> bool:
    """Every update whose fresh gradients exceed θ took them at their full norm (this minibatch's own)."""
    rp = _replayed(evidence)
    if rp is None:
        return False
    above = [u for u in rp.updates if u.get("known") and u.get("fresh_norm", 0.0) > checks.THETA * 1.01]
    return bool(above) and all(
        u.get("own") and abs(u["norm"] - u["fresh_norm"]) <= checks.NORM_SLACK * u["fresh_norm"] for u in above)


def _clipped_after_step(evidence: Evidence) -> bool:
    """Unclipped updates, and the gradients found clipped to θ after the step (the order the run recorded)."""
    if not _unclipped_updates(evidence):
        return False
    rp, events = _replayed(evidence), checks.recorded_events(evidence.observed)
    first = next(k for k, u in enumerate(rp.updates, start=1) if u.get("fresh_norm", 0.0) > checks.THETA * 1.01)
    return bool(checks.clipped_after_step(events, first))


def _never_zeroed(evidence: Evidence) -> bool:
    if evidence.check_id == PREFIX + "state.module":
        return _modules_match("no-zero-grad")(evidence)
    rp = _replayed(evidence)
    return rp is not None and evidence.params.get("optimizer") is True and evidence.observed["zero_grads"] == 0 \
        and len(rp.updates) >= 2 and any(not u["match"] for u in rp.updates[1:])


def _updater_batch_size(evidence: Evidence) -> Any:
    """The one batch_size (not 1) every call of the scratch updater was given, else None."""
    args = evidence.observed.get("updater_args") or []
    if not args or any(isinstance(a, bool) or not isinstance(a, (int, float)) for a in args) or len(set(args)) != 1:
        return None
    return args[0] if args[0] != 1 and args[0] > 0 else None


def _batch_size_recognise(evidence: Evidence) -> bool:
    if evidence.check_id == PREFIX + "state.module":
        sizes = {a for run in evidence.observed["cases"] for a in run.get("updater_args") or []}
        size = next(iter(sizes)) if len(sizes) == 1 else None
        return size is not None and size != 1 and _modules_match("updater-batch-size", size)(evidence)
    size = _updater_batch_size(evidence)
    return size is not None and _full_run_matches("updater-batch-size", size)(evidence)


def _loop_mistake(mistake: str, recorded: Optional[Callable[[Evidence], bool]] = None) -> Callable[[Evidence], bool]:
    """The perplexity and nn.Module runs by re-running the mistaken loop; the behaviour runs by ``recorded``."""
    def recognise(evidence: Evidence) -> bool:
        if evidence.check_id == PREFIX + "perplexity":
            return _full_run_matches(mistake)(evidence)
        if evidence.check_id == PREFIX + "state.module":
            return _modules_match(mistake)(evidence)
        return recorded is not None and recorded(evidence)
    return recognise


# ---------------------------------------------------------------- errors


def _errors(evidence: Evidence, layers: Iterable[str] = ("RNN", "GRU", "LSTM")) -> list[str]:
    """The error texts of a run that raised: the check's message, or the nn.Module cases' recorded errors."""
    if evidence.check_id == PREFIX + "state.module" and isinstance(evidence.observed, dict):
        return [run["error"] for (layer, _), run in zip(evidence.params["cases"], evidence.observed["cases"])
                if layer in layers and isinstance(run.get("error"), str)]
    return [evidence.message] if evidence.observed is None and evidence.message else []


def _raised(pattern: str, layers: Iterable[str] = ("RNN", "GRU", "LSTM")) -> Callable[[Evidence], bool]:
    found = re.compile(pattern)
    return lambda evidence: any(found.search(text) for text in _errors(evidence, layers))


#: the runner's wording of a loop that raised while its state still held the previous minibatch's graph
UNDETACHED = r"StateNotDetached|still had its computation graph|backward through the graph a second time"


def _state_attached(evidence: Evidence) -> bool:
    """The state carried into a later minibatch still held its graph (the run's flag, or the error it led to)."""
    if _raised(UNDETACHED)(evidence):
        return True
    observed = evidence.observed
    if evidence.check_id == PREFIX + "state.module" and isinstance(observed, dict):
        return any(call.get("has_grad_fn") for run in observed["cases"] for call in (run.get("calls") or [])[1:])
    if isinstance(observed, dict) and not evidence.params.get("use_random_iter"):
        return any(call.get("has_grad_fn") for call in (observed.get("calls") or [])[1:])
    return False


# ---------------------------------------------------------------- the catalogue


DETACH_FIX = ("before each minibatch after the first, detach the state: state.detach_() when it is one tensor "
              "(nn.RNN, nn.GRU), else for s in state: s.detach_() (the scratch model, nn.LSTM)")


@hookimpl
def grader_misconceptions(config):
    return [
        Misconception(
            PREFIX + "state-not-detached",
            _ids("state.sequential", "state.module", *SCRATCH_CHECKS),
            "the state carried from one minibatch to the next is never detached",
            "Its computation graph still reaches back into the earlier minibatches, so backward() goes through "
            "graphs whose buffers are freed, or, with retain_graph=True, through parameters the update has changed "
            "since. retain_graph=True only hides the first error: truncated back-propagation must stop at the "
            "minibatch boundary.",
            DETACH_FIX, _state_attached),
        Misconception(
            PREFIX + "one-tensor-state-iterated",
            _ids("state.module"),
            "the loop detaches an nn.RNN or nn.GRU state with `for s in state: s.detach_()`",
            "That state is one tensor of shape (num_layers * num_directions, batch, hidden), not a tuple: iterating "
            "over it yields its rows, which are views, and torch cannot detach a view in place.",
            "state.detach_() when isinstance(state, torch.Tensor), else for s in state: s.detach_()",
            _raised(r"detach views in-place", ("RNN", "GRU"))),
        Misconception(
            PREFIX + "tuple-state-detached-as-one",
            _ids("state.sequential", "state.module", "state.random", *SCRATCH_CHECKS),
            "the loop calls state.detach_() as if the state were always one tensor",
            "The scratch model's state is a tuple (H,) and an nn.LSTM's a tuple (H, C); only nn.RNN and nn.GRU "
            "return one tensor.",
            "state.detach_() when isinstance(state, torch.Tensor), else for s in state: s.detach_()",
            _raised(r"'tuple' object has no attribute 'detach", ("LSTM",))),
        Misconception(
            PREFIX + "params-of-a-module",
            _ids("state.module"),
            "the loop reads net.params, which only the scratch model has",
            "train_epoch is also given nn.Module models (nn.RNN, nn.GRU, nn.LSTM inside), which keep their weights "
            "in net.parameters().",
            "params = list(net.parameters()) if isinstance(net, nn.Module) else net.params",
            _raised(r"has no attribute 'params'")),
        Misconception(
            PREFIX + "bitwise-and-in-loss-sum",
            _ids("reported", "state.sequential", "state.module", "state.random", "perplexity", "labels", "clipping",
                 "optimizer"),
            "the loss sum uses & where a multiplication was meant (`l * 1 & y.numel()`)",
            "& is a bitwise and, which torch does not define for a float loss; the sum over the epoch needs each "
            "minibatch's mean loss times its number of tokens.",
            "total_loss += l.item() * y.numel()",
            _raised(r"bitwise_and|unsupported operand type\(s\) for &")),
        Misconception(
            PREFIX + "loss-sum-bitwise-and",
            _ids("reported"),
            "the summed loss stays 0, so the returned perplexity is exp(0) = 1",
            "Each minibatch's loss is multiplied by 1 & y.numel(), a bitwise and: 0 for an even number of tokens, "
            "1 for an odd one, never the number of tokens, so the perplexity returned says nothing about training.",
            "total_loss += l.item() * y.numel() (a multiplication), then return math.exp(total_loss / total_tokens)",
            _returned_perplexity(_bitwise_and_sum)),
        Misconception(
            PREFIX + "labels-not-transposed",
            _ids("labels", "perplexity", "state.module"),
            "the labels are Y.reshape(-1) instead of Y.T.reshape(-1)",
            "The model's output rows go time step by time step (row t * batch_size + b), while Y.reshape(-1) lists "
            "each sequence in turn, so almost every output is scored against another position's next character.",
            "y = Y.T.reshape(-1)",
            _loop_mistake("labels-not-transposed", _labels_met("Y"))),
        Misconception(
            PREFIX + "inputs-as-labels",
            _ids("labels", "perplexity", "state.module"),
            "the labels are the inputs X instead of Y",
            "Each output must predict the next character, Y (the inputs shifted by one); scoring it against X asks "
            "the model to copy the character it was just given, which it learns at once, so the perplexity drops "
            "towards 1 without learning the language.",
            "y = Y.T.reshape(-1)",
            _loop_mistake("inputs-as-labels", _labels_met("X"))),
        Misconception(
            PREFIX + "labels-as-inputs",
            _ids("perplexity", "state.module"),
            "the model is fed Y, the labels, instead of X",
            "Y is X shifted by one character, so the labels leak into the inputs: the model sees each character it "
            "must predict, learns to copy its input, and the perplexity drops towards 1.",
            "y_hat, state = net(X, state)",
            _loop_mistake("labels-as-inputs")),
        Misconception(
            PREFIX + "perplexity-of-last-minibatch",
            _ids("reported"),
            "the returned perplexity is the last minibatch's, exp(l.item())",
            "The perplexity of an epoch is exp of the mean loss over all its tokens; the last minibatch alone is "
            "one noisy sample of it.",
            "sum l.item() * y.numel() and y.numel() over the epoch, then return math.exp(total_loss / total_tokens)",
            _returned_perplexity(_last_batch)),
        Misconception(
            PREFIX + "loss-sum-not-weighted",
            _ids("reported"),
            "the loss sum adds l.item(), each minibatch's mean loss, without multiplying it by its number of tokens",
            "l is already a mean over the minibatch's tokens; dividing the sum of these means by the number of tokens "
            "divides twice, so the perplexity returned is close to 1 whatever the model does.",
            "total_loss += l.item() * y.numel(), then return math.exp(total_loss / total_tokens)",
            _returned_perplexity(_unweighted_sum)),
        Misconception(
            PREFIX + "sequences-counted-as-tokens",
            _ids("reported"),
            "the token count adds X.shape[0], the number of sequences in a minibatch, not its number of tokens",
            "Each minibatch holds batch_size sequences of num_steps tokens, y.numel() in all; counting sequences "
            "makes the mean loss num_steps times too large (its exp astronomically so) and the speed sequences per "
            "second.",
            "total_tokens += y.numel() (and total_loss += l.item() * y.numel())",
            _returned_perplexity(_sequences_counted)),
        Misconception(
            PREFIX + "mean-loss-not-exponentiated",
            _ids("reported"),
            "the returned perplexity is the mean loss itself",
            "Perplexity is exp(mean loss): 1 for a perfect model and the vocabulary size for a uniform guess; the "
            "mean cross-entropy is its logarithm.",
            "return math.exp(total_loss / total_tokens) as the perplexity",
            _returned_perplexity(_mean_loss)),
        Misconception(
            PREFIX + "seconds-not-speed",
            _ids("reported"),
            "the second value returned is the epoch's duration in seconds, not its speed",
            "train_epoch returns (perplexity, speed in tokens/s): the number of tokens processed divided by the "
            "time the epoch took.",
            "return math.exp(total_loss / total_tokens), total_tokens / elapsed",
            _returned_speed("seconds")),
        Misconception(
            PREFIX + "tokens-not-speed",
            _ids("reported"),
            "the second value returned is the number of tokens, not tokens per second",
            "The speed is the number of tokens divided by the time the epoch took.",
            "start = time.perf_counter() before the loop, then return total_tokens / (time.perf_counter() - start)",
            _returned_speed("tokens")),
        Misconception(
            PREFIX + "clipped-after-step",
            _ids("optimizer", "clipping"),
            "the gradients are clipped after updater.step(), when the step has already used them",
            "Clipping protects the update from an exploding gradient only if it happens between loss.backward() "
            "and the step; afterwards it rescales gradients nothing reads.",
            "call grad_clipping(net, 1) after loss.backward() and before updater.step()",
            _clipped_after_step),
        Misconception(
            PREFIX + "unclipped-update",
            _ids("clipping", "optimizer"),
            "the update uses the gradients unclipped: grad_clipping(net, 1) is missing between loss.backward() and "
            "the update",
            "An exploding gradient then moves the parameters by its full size; the lesson clips the joint norm to "
            "θ = 1 before every update, in both branches (the scratch updater and torch.optim).",
            "call grad_clipping(net, 1) after loss.backward() and before updater(batch_size=1), or before "
            "updater.step() with torch.optim",
            _unclipped_updates),
        Misconception(
            PREFIX + "no-zero-grad",
            _ids("optimizer", "state.module"),
            "updater.zero_grad() is never called in the torch.optim branch",
            "backward() adds to the gradients already there, so every step uses the sum of all earlier minibatches' "
            "gradients; the scratch updater zeroes them itself, torch.optim does not.",
            "updater.zero_grad() before l.backward()",
            _never_zeroed),
        Misconception(
            PREFIX + "updater-batch-size",
            _ids("perplexity", "state.module"),
            "the scratch updater is called with the batch size instead of batch_size=1",
            "The loss is already a mean over the batch's tokens, so dividing the step by the batch size again "
            "makes every update that many times too small.",
            "updater(batch_size=1)",
            _batch_size_recognise),
        Misconception(
            PREFIX + "state-reset-every-minibatch",
            _ids("state.sequential", "state.module", "perplexity"),
            "with sequential sampling the state is reset (net.begin_state) for every minibatch",
            "Sequential minibatches continue each other's text, so the final state of one is where the next "
            "begins; a fresh state throws that context away. Only random sampling needs one per minibatch.",
            "if state is None or use_random_iter: state = net.begin_state(...), else detach the carried state",
            _state_reset),
        Misconception(
            PREFIX + "random-state-carried",
            _ids("state.random"),
            "with random sampling the state is carried over from the previous minibatch",
            "Randomly sampled minibatches are not neighbours in the text, so the previous final state describes "
            "unrelated characters: each minibatch needs a fresh state.",
            "if state is None or use_random_iter: state = net.begin_state(batch_size=X.shape[0], device=device)",
            _random_state_kept),
    ]
