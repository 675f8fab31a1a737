"""Checks for ``train_epoch``: perplexity against the reference, plus behaviour observed while it runs.

Perplexity over a short budget cannot see most training bugs (a missing clip is
invisible while gradients stay below the threshold), so each behaviour the
lesson teaches is observed directly by the objects handed to the student's loop.
Those objects live in the student's process, so what they report is not taken on
trust: they record raw values (parameters, states, gradients) and the judge
recomputes the forward pass, the loss and its gradients from them (:mod:`grader.replay`).
The loop also runs on the reference's concise models (nn.RNN, nn.GRU: a state that is one
tensor; nn.LSTM: a tuple), with both kinds of updater; there the judge runs the reference's
loop itself on the same seeded models and minibatches and compares the parameters each model
ends with (:func:`judge_module_state`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import math
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from grader import hookimpl, refcache
from grader.book import sgd
from grader.checks.reference_runs import EPOCHS, default_setup, reference_training
from grader.corpus import corpus_facts, corpus_spec
from grader.definitions import Check, Probe
from grader.figures import perplexity_chart, rounded
from grader.hints import LOCATION, Hint, explain_error
from grader.plugins import reference_hooks
from grader.results import Verdict
from grader.replay import Malformed, Replay, as_tensor, inconsistent, initial_params, minibatches, replay
from grader.training import Log, RecordingIter, RecordingModule, Setup, loader_for, run_training
from grader.corpus import vocab_and_ids

EXERCISE = "train_epoch"
HINTS = (
    Hint(r"backward through the graph a second time|StateNotDetached",
         "detach the state between minibatches: state.detach_() when it is one tensor, else s.detach_() for each "
         "tensor of the tuple"),
    Hint(r"object is not callable", "the updater may be a torch.optim optimizer: call updater.step() for those"),
    Hint(r"has no attribute 'step'|has no attribute 'zero_grad'", "the updater may be a plain function: call updater(batch_size=1)"),
    Hint(r"for \*\* or pow\(\): 'NoneType'|'NoneType' object (does not support item assignment|is not subscriptable"
         r"|has no attribute '(mul_|norm|flatten|data)')",
         "a gradient was None, as before the first backward(): call grad_clipping(net, 1) after loss.backward() "
         "and before the update"),
)
#: relative band around the reference's perplexity; same seeds, so only float reordering moves it
BAND = 0.05
#: minibatches observed by the behaviour checks
BEHAVIOUR_BATCHES = 6
GRAD_SCALE = 1000.0
#: sequential minibatches the trained parameters of the full run are evaluated on
EVAL_BATCHES = 12


def probe_train(ctx, setup: dict, epochs: int, **options: Any) -> Any:
    return run_training(ctx.student("train_epoch"), ctx.reference, Setup(**setup), epochs, **options)


#: the concise models (layer, torch.optim updater?) train_epoch also runs on: a state that is one tensor
#: (nn.RNN, nn.GRU) and a tuple of tensors (nn.LSTM), each with both kinds of updater
MODULE_CASES = (("RNN", False), ("RNN", True), ("GRU", False), ("GRU", True), ("LSTM", False), ("LSTM", True))


class ModuleRecorder(RecordingModule):
    """:class:`RecordingModule` that also notes whether each incoming state is all zeros (a fresh one).

    Like every flag the runner records, it is believed only to word a failure: whether the loop
    trained the model right is decided by the parameters it ends with (:func:`judge_module_state`).
    """

    def forward(self, X: torch.Tensor, state: Any):
        tensors = [state] if isinstance(state, torch.Tensor) else \
            [s for s in state if isinstance(s, torch.Tensor)] if isinstance(state, (tuple, list)) else []
        zeros = bool(tensors) and all(bool((t == 0).all()) for t in tensors)
        outputs = super().forward(X, state)
        self._log.calls[-1]["zeros"] = zeros
        return outputs


def module_training(train_epoch: Callable, hooks: dict, setup: Setup, layer: str, optimizer: bool, max_batches: int,
                    attempt: Callable[[Callable[[], Any]], Any] = lambda call: call()) -> dict:
    """One sequential epoch of ``train_epoch`` on the reference's concise model around a seeded ``nn.<layer>``.

    Runs in the runner (the student's loop, ``attempt`` = ``ctx.attempt``) and in the judge (the reference's
    loop, or one with a mistake applied). Returns the counts and flags of the run, the error it raised, and
    the parameters it ended with: those the judge compares with the reference loop's.
    """
    log = Log()
    vocab, ids = vocab_and_ids(setup.corpus)
    V = len(vocab)
    torch.manual_seed(setup.seed)
    net = ModuleRecorder(hooks["rnn_model"](getattr(nn, layer)(V, setup.num_hiddens), V), log)
    loader = RecordingIter(loader_for(setup, ids, False), log, max_batches)
    params = list(net.parameters())
    loss = nn.CrossEntropyLoss()
    if optimizer:
        updater: Any = torch.optim.SGD(params, lr=setup.lr)
        updater.register_step_post_hook(lambda *_: log.updates.append({}))
    else:
        def updater(batch_size: int = 1, *args: Any, **kwargs: Any) -> None:  # the book's scratch updater
            log.updates.append({})
            log.updater_args.append(batch_size if isinstance(batch_size, (int, float)) else str(batch_size))
            sgd(params, setup.lr, batch_size)
    torch.manual_seed(setup.seed)
    result = attempt(lambda: train_epoch(net, loader, loss, updater, torch.device("cpu"), False))
    error = result.get("error") if isinstance(result, dict) else None
    return {"calls": [{"kind": c["kind"], "has_grad_fn": c["has_grad_fn"], "zeros": c.get("zeros", False)}
                      for c in log.calls[:200]],
            "begin_states": log.begin_states, "updates": len(log.updates), "updater_args": log.updater_args[:50],
            "batches": (log.batch[1] + 1) if log.batch else 0, "error": error if isinstance(error, str) else None,
            "params": [p.detach().clone() for p in params]}


def probe_modules(ctx, setup: dict, max_batches: int, cases: list) -> Any:
    """The student's train_epoch for a few sequential minibatches on the reference's concise models."""
    train_epoch = ctx.student("train_epoch")
    return {"cases": [module_training(train_epoch, ctx.reference, Setup(**setup), layer, optimizer, max_batches,
                                      attempt=ctx.attempt) for layer, optimizer in cases]}


@functools.lru_cache(maxsize=32)
def _module_reference(setup_json: str, layer: str, optimizer: bool, max_batches: int) -> dict:
    torch.set_num_threads(1)  # as in the runner
    return _module_trained(setup_json, layer, optimizer, max_batches)


@refcache.cached()
def _module_trained(setup_json: str, layer: str, optimizer: bool, max_batches: int) -> dict:
    hooks = reference_hooks()
    setup = Setup(**json.loads(setup_json))
    run = module_training(hooks["train_epoch"], hooks, setup, layer, optimizer, max_batches)
    # the parameters before training, made as the run makes them: the yardstick of how far training moved them
    vocab, _ = vocab_and_ids(setup.corpus)
    torch.manual_seed(setup.seed)
    model = hooks["rnn_model"](getattr(nn, layer)(len(vocab), setup.num_hiddens), len(vocab))
    return {"initial": [p.detach().clone() for p in model.parameters()], "final": run["params"],
            "batches": run["batches"]}


def module_reference(setup: dict, layer: str, optimizer: bool, max_batches: int) -> dict:
    """The reference loop's run on a concise model: its initial and final parameters (computed once)."""
    return _module_reference(json.dumps(setup, sort_keys=True), layer, bool(optimizer), max_batches)


# ---------------------------------------------------------------- judges


def judge_perplexity(observed: Any, setup: dict, epochs: int, band: float = BAND, **options: Any) -> Verdict:
    ref = reference_training(Setup(**setup), epochs)
    got = [e["observed_ppl"] for e in observed["epochs"]]
    want = [e["observed_ppl"] for e in ref["epochs"]]
    figures = perplexity_chart(got, want, corpus_facts(setup["corpus"])["min_perplexity"], "training perplexity per epoch")
    summary = {"your perplexity": rounded(got[-1], 4), "reference perplexity": rounded(want[-1], 4)}
    if observed["num_batches"] == 0:
        return Verdict.failed("train_epoch never called the loss: no training happened", figures={"perplexity": figures})
    final, target = got[-1], want[-1]
    low, high = target * (1 - band), target * (1 + band)
    if not math.isfinite(final):
        return Verdict.failed("training diverged: the perplexity is not finite", figures={"perplexity": figures, **summary})
    if final < low:
        return Verdict.failed(
            f"after {epochs} epochs your training perplexity is {final:.3g}, suspiciously BELOW the reference's "
            f"{target:.3g} (band {low:.3g}-{high:.3g}); the labels may leak into the inputs (Y must be the inputs shifted by one)",
            figures={"perplexity": figures, **summary})
    if final > high:
        hint = ""
        args = observed.get("updater_args") or []
        if args and any(a != 1 for a in args if isinstance(a, (int, float))):
            hint = f"; updater was called with batch_size={args[0]}, but the loss is already a mean, so use updater(batch_size=1)"
        return Verdict.failed(
            f"after {epochs} epochs your training perplexity is {final:.3g}, above the reference's {target:.3g} "
            f"(band {low:.3g}-{high:.3g}){hint}", figures={"perplexity": figures, **summary})
    # The per-epoch perplexities are the child's word; the trained parameters are not: the judge scores them itself.
    mine, theirs = evaluated_perplexity(observed.get("params"), setup), evaluated_perplexity(ref["params"], setup)
    if mine is None or not theirs * (1 - band) <= mine <= theirs * (1 + band):
        return Verdict.failed(
            f"the parameters recorded after {epochs} epochs are not consistent with the perplexity the run reported: "
            f"they score {rounded(mine, 4) if mine is not None else 'nothing'} on the training text, where the "
            f"reference's trained parameters score {theirs:.4g}", figures={"perplexity": figures, **summary})
    return Verdict.passed(f"perplexity {final:.3g} after {epochs} epochs (reference {target:.3g})",
                          figures={"perplexity": figures, **summary})


def evaluated_perplexity(params: Any, setup: dict) -> Optional[float]:
    """exp(mean loss) of the scratch model with ``params`` on the first sequential minibatches, state carried."""
    init = initial_params(setup)
    try:
        params = [p if isinstance(p, torch.Tensor) else as_tensor(p, "float32", tuple(q.shape))
                  for p, q in zip(params, init)] if isinstance(params, list) and len(params) == len(init) else None
    except Malformed:
        params = None
    if params is None:
        return None
    V = init[0].shape[0]
    batches = minibatches(json.dumps(setup, sort_keys=True), False, 1, EVAL_BATCHES)[0]
    rnn = reference_hooks()["rnn"]
    state, total = torch.zeros(setup["batch_size"], init[0].shape[1], dtype=torch.float64), 0.0
    with torch.no_grad():
        for X, Y in batches:
            outputs, (state,) = rnn(F.one_hot(X.T, V).double(), (state,), [p.double() for p in params])
            total += float(F.cross_entropy(outputs, Y.T.reshape(-1)))
    mean = total / len(batches)
    return math.exp(mean) if math.isfinite(mean) and mean < 700 else None


def judge_reported(observed: Any, setup: dict, epochs: int, **options: Any) -> Verdict:
    rp = replay(observed, setup, epochs, **options)
    if rp.malformed:
        return Verdict.failed(rp.problem)
    if len(observed["epochs"]) != epochs:
        return Verdict.failed(inconsistent(1))
    for k, epoch in enumerate(observed["epochs"]):
        returned = epoch["returned"]
        if not isinstance(returned, list) or len(returned) != 2:
            return Verdict.failed(f"train_epoch should return (perplexity, tokens_per_second), but returned {returned!r}")
        ppl, speed = returned
        if not isinstance(ppl, float) or not isinstance(speed, float):
            return Verdict.failed(f"train_epoch should return two numbers, but returned {returned!r}")
        # the epoch's losses as the judge recomputed them, not as the run reported them
        entries = [e for e in rp.losses if e is not None and e["epoch"] == k]
        tokens = sum(e["tokens"] for e in entries)
        if not tokens:
            return Verdict.failed(f"train_epoch never called the loss in epoch {k + 1}")
        mean = sum(e["value"] * e["tokens"] for e in entries) / tokens
        want = math.exp(mean) if mean < 700 else math.inf
        if not (math.isfinite(ppl) and abs(ppl - want) <= 1e-3 * want):
            hint = ""
            if math.isfinite(ppl) and abs(ppl - math.log(want)) <= 1e-3 * math.log(want):
                hint = "; that is the mean loss: perplexity is exp(mean loss)"
            return Verdict.failed(f"in epoch {k + 1} the returned perplexity is {ppl:.5g}, but the losses computed "
                                  f"during the epoch give exp(total loss / tokens) = {want:.5g}{hint}")
        seconds = epoch["seconds"] if isinstance(epoch.get("seconds"), float) else math.nan
        measured = tokens / max(seconds, 1e-9)
        if not (math.isfinite(speed) and measured / 20 <= speed <= measured * 20):
            return Verdict.failed(f"the returned speed {speed:.4g} tokens/s does not fit the epoch: "
                                  f"{tokens} tokens in {seconds:.3g} s is about {measured:.4g} tokens/s")
    if rp.untrained:
        return Verdict.failed(rp.untrained)
    return Verdict.passed("returns exp(mean loss over the epoch) and a plausible tokens/s")


def judge_sequential_state(observed: Any, setup: dict, epochs: int, **options: Any) -> Verdict:
    rp = replay(observed, setup, epochs, **options)
    if rp.malformed:
        return Verdict.failed(rp.problem)
    calls = rp.calls
    if not calls:
        return Verdict.failed("train_epoch never called the model")
    if not calls[0]["zeros"]:
        return Verdict.failed("the first minibatch did not start from a fresh state from net.begin_state")
    for k, call in enumerate(calls[1:], start=2):
        if call.get("bad_state"):
            return Verdict.failed(f"minibatch {k} was given a state that is not a tuple of tensors")
        if call["has_grad_fn"]:
            return Verdict.failed(f"the state carried into minibatch {k} still has its computation graph; "
                                  "detach it (s.detach_()) so back-propagation stops at the minibatch boundary")
        if not call["carried"]:
            if call["zeros"]:
                return Verdict.failed(f"minibatch {k} started from a fresh state; with sequential sampling only the "
                                      "first minibatch gets one, later ones continue from the previous final state")
            return Verdict.failed(f"minibatch {k} did not continue from the state the previous minibatch ended with")
    if observed["begin_states"] != 1:
        return Verdict.failed(f"net.begin_state was called {observed['begin_states']} times in a sequential epoch; "
                              "call it once, for the first minibatch")
    if rp.untrained:
        return Verdict.failed(rp.untrained)
    return Verdict.passed(f"fresh state once, then carried and detached across {len(calls)} minibatches")


def judge_random_state(observed: Any, setup: dict, epochs: int, **options: Any) -> Verdict:
    rp = replay(observed, setup, epochs, **options)
    if rp.malformed:
        return Verdict.failed(rp.problem)
    calls = rp.calls
    if not calls:
        return Verdict.failed("train_epoch never called the model")
    for k, call in enumerate(calls, start=1):
        if not call["zeros"] or call["has_grad_fn"]:
            return Verdict.failed(f"with random sampling minibatch {k} did not start from a fresh state; "
                                  "neighbouring minibatches are unrelated, so call net.begin_state for every one")
    if rp.untrained:
        return Verdict.failed(rp.untrained)
    return Verdict.passed(f"a fresh state for each of {len(calls)} randomly sampled minibatches")


def judge_labels(observed: Any, setup: dict, epochs: int, **options: Any) -> Verdict:
    rp = replay(observed, setup, epochs, **options)
    if rp.malformed:
        return Verdict.failed(rp.problem)
    losses = rp.losses
    if not losses:
        return Verdict.failed("train_epoch never called the loss")
    for k, entry in enumerate(losses, start=1):
        if entry is not None and entry["paired"] is False:
            return Verdict.failed(
                f"in minibatch {k} the outputs were compared with the wrong labels; outputs come time step by time "
                "step (row t*B + b), so the labels must be Y.T.reshape(-1), not Y.reshape(-1)")
    if rp.untrained:
        return Verdict.failed(rp.untrained)
    return Verdict.passed(f"outputs met their own next characters in all {len(losses)} minibatches")


def judge_clipping(observed: Any, setup: dict, epochs: int, **options: Any) -> Verdict:
    rp = replay(observed, setup, epochs, **options)
    verdict = _judge_updates(rp, "clipping", recorded_events(observed))
    return dataclasses.replace(verdict, figures={**verdict.figures, **_clipping_figure(rp.updates)})


def _clipping_figure(updates: list) -> dict:
    """The gradient norm at each update of the student's loop, before and after its clipping (log10)."""
    known = [(k, u) for k, u in enumerate(updates, start=1) if u.get("known") and "fresh_norm" in u]
    if not known:
        return {}

    def log10(value: Any) -> Any:
        return math.log10(value) if isinstance(value, float) and value > 0 and math.isfinite(value) else None

    steps = [k for k, _ in known]
    return {"gradient norm": {"series": [
        {"label": "before clipping", "x": steps, "y": [log10(u["fresh_norm"]) for _, u in known]},
        {"label": "after clipping (at the update)", "x": steps, "y": [log10(u["norm"]) for _, u in known]},
        {"label": "θ = 1", "x": [steps[0], steps[-1]], "y": [0.0, 0.0]},
    ], "title": "gradient norm at each update of your train_epoch (every other minibatch's gradients are scaled "
                "by the grader to exceed θ)", "xlabel": "update", "ylabel": "log10 of the joint gradient norm"}}


def judge_optimizer(observed: Any, setup: dict, epochs: int, **options: Any) -> Verdict:
    rp = replay(observed, setup, epochs, **options)
    if not rp.malformed and rp.losses and not rp.updates:
        return Verdict.failed("updater.step() was never called")
    return _judge_updates(rp, "optimizer", recorded_events(observed))


#: the clipping threshold of train_epoch and the slack of a norm said to be at it
THETA, NORM_SLACK = 1.0, 1e-3
EVENT_KINDS = ("backward", "zero_grad", "step")


def recorded_events(observed: Any) -> list:
    """The order the run recorded (backward, zero_grad, step), as plain (kind, loss, norm) triples.

    The runner's word, so it only ever words a failure the replay has already found; odd data reads as none.
    """
    raw = observed.get("events") if isinstance(observed, dict) else None
    if not isinstance(raw, list):
        return []
    events = []
    for item in raw[:1000]:
        if not (isinstance(item, list) and len(item) == 3 and item[0] in EVENT_KINDS
                and isinstance(item[1], int) and not isinstance(item[1], bool)
                and (item[2] is None or (isinstance(item[2], float) and math.isfinite(item[2])))):
            return []
        events.append(tuple(item))
    return events


def _step_event(events: list, k: int) -> Optional[int]:
    """The index in ``events`` of the k-th (1-based) step, if recorded."""
    steps = [j for j, e in enumerate(events) if e[0] == "step"]
    return steps[k - 1] if len(steps) >= k else None


def clipped_after_step(events: list, k: int) -> str:
    """Why update k saw unclipped gradients, where the order recorded says so; "" when it does not."""
    j = _step_event(events, k)
    if j is None:
        return ""
    for kind, _, norm in events[j + 1:]:
        if kind == "backward":
            break
        if norm is not None and 0 < norm <= THETA + NORM_SLACK:  # the same gradients, clipped after the step
            return " (they were clipped only after the step)"
    return ""


def _missing_gradients(events: list, k: int, step: str) -> str:
    """Why update k found a parameter without a gradient, where the order recorded says so."""
    j = _step_event(events, k)
    if j is not None:
        before = events[:j]
        backward = max((i for i, e in enumerate(before) if e[0] == "backward"), default=None)
        previous = max((i for i, e in enumerate(before) if e[0] == "step"), default=None)
        if backward is None or (previous is not None and backward < previous):
            return (f"in minibatch {k} {step} came before loss.backward(), so there were no gradients to step "
                    f"with: call loss.backward(), then grad_clipping(net, 1), then {step}")
        if any(e[0] == "zero_grad" for e in before[backward + 1:]):
            return (f"in minibatch {k} updater.zero_grad() was called after loss.backward(), which threw this "
                    f"minibatch's gradients away before {step}: call updater.zero_grad() before loss.backward()")
    return f"at update {k} some parameter had no gradient: call loss.backward() before {step}"


def _judge_updates(rp: Replay, what: str, events: list = ()) -> Verdict:
    """Every update must see this minibatch's own gradients (recomputed by the replay), clipped to norm θ.

    That single observation covers the order: zero_grad before backward (else the gradients are summed
    with earlier ones, or gone), backward before clipping and clipping before the step (else the step sees
    them unclipped). The recorded order of events only words the failure.
    """
    if rp.malformed:
        return Verdict.failed(rp.problem)
    events = list(events)
    updates, batches = rp.updates, len(rp.losses)
    step = "updater.step()" if what == "optimizer" else "updater(batch_size=1)"
    stepped = "the optimizer stepped" if what == "optimizer" else "the updater was called"
    if not updates:
        return Verdict.failed("the updater was never called, so the model never learned")
    if len(updates) != batches or any(n != 1 for n in rp.steps):
        return Verdict.failed(f"{len(updates)} updates for {batches} minibatches: update exactly once per minibatch")
    for k, update in enumerate(updates, start=1):
        if not update.get("known"):
            return Verdict.failed(_missing_gradients(events, k, step))
        if update["match"]:
            continue
        fresh, norm = update.get("fresh_norm", math.nan), update["norm"]
        if update.get("own") and fresh > THETA and norm > THETA + NORM_SLACK:
            unclipped = "unclipped " if abs(norm - fresh) <= NORM_SLACK * fresh else ""
            return Verdict.failed(f"in minibatch {k} {stepped} with {unclipped}gradients of norm {norm:.4g} > θ = 1"
                                  f"{clipped_after_step(events, k)}: call grad_clipping(net, 1) after loss.backward() "
                                  f"and before {step}")
        if what == "optimizer" and k > 1 and update.get("zeroed") is False:
            return Verdict.failed(f"at update {k} the gradients were not this minibatch's alone: updater.zero_grad() was "
                                  "not called since the previous step, so backward() added to the old gradients; "
                                  "call updater.zero_grad() before backward()")
        if what == "optimizer" and k > 1 and norm > THETA + NORM_SLACK:
            return Verdict.failed(f"at update {k} the gradients were not this minibatch's (norm {norm:.3g}); gradients "
                                  "from earlier minibatches were still there: call updater.zero_grad() before backward()")
        if fresh > THETA and norm > THETA + NORM_SLACK:
            return Verdict.failed(f"in minibatch {k} {stepped} with gradients of norm {norm:.4g} > θ = 1, not this "
                                  f"minibatch's gradients clipped: call grad_clipping(net, 1) after loss.backward() "
                                  f"and before {step}")
        if fresh <= THETA and abs(norm - THETA) < NORM_SLACK:
            return Verdict.failed(f"at update {k} gradients of norm {fresh:.3g} were rescaled up to 1; "
                                  "only clip when the norm is above θ")
        return Verdict.failed(f"at update {k} the gradients differ from this minibatch's gradients clipped to norm 1 "
                              f"(norm {norm:.4g}, expected {min(fresh, THETA):.4g})")
    if rp.problem:
        return Verdict.failed(rp.problem)
    scaled = sum(1 for u in updates if u.get("fresh_norm", 0.0) > THETA)
    if what == "optimizer":
        return Verdict.passed(f"at each of {batches} steps the gradients were this minibatch's own (zeroed before "
                              f"backward), clipped to norm ≤ 1 before updater.step() ({scaled} of them were above θ)")
    return Verdict.passed(f"gradients clipped to norm 1 before every one of {batches} updates "
                          f"({scaled} of them were above θ)")


def _module_fix(layer: str) -> str:
    """The fix for a loop that treats this layer's state as the other kind."""
    if layer == "LSTM":
        return ("with an nn.LSTM model the state is a tuple (H, C), not one tensor: detach each tensor of it "
                "(for s in state: s.detach_()), and state.detach_() only when isinstance(state, torch.Tensor)")
    return (f"with an nn.{layer} model the state is one tensor, not a tuple: `for s in state: s.detach_()` detaches "
            "views of it and fails; use state.detach_() when isinstance(state, torch.Tensor), else detach each "
            "tensor of the tuple (nn.LSTM)")


def _detach_fix(layer: str) -> str:
    """The fix for a loop that does not detach the carried state."""
    how = "a tuple (H, C): for s in state: s.detach_()" if layer == "LSTM" else \
        "one tensor: state.detach_()"
    return (f"detach the state before each minibatch after the first, so back-propagation stops at the minibatch "
            f"boundary (for nn.{layer} it is {how})")


def _torch_text(error: str, phrase: str) -> str:
    """The quoted error up to the sentence holding ``phrase``, with where it was raised; torch's advice left out."""
    text, at, where = error.rpartition(" at ")
    if not at or not re.match(LOCATION, where):
        text, at, where = error, "", ""
    cut = text.find(".", text.find(phrase) + len(phrase) - 1)
    return (text[:cut + 1] if cut >= 0 else text) + (at + where if at else "")


def _expected_batches(setup: dict, max_batches: int) -> int:
    _, ids = vocab_and_ids(setup["corpus"])
    return min(max_batches, sum(1 for _ in loader_for(Setup(**setup), ids, False)))


#: how far a concise model's final parameters may be from the reference loop's, relative to how far training moved
#: them; float reordering (batch-major rows, another order of reduction) stays near 1e-6 of it
MODULE_RTOL = 1e-3


def module_difference(params: Any, reference: dict) -> float:
    """How far recorded final parameters are from the reference loop's, relative to the reference's own change
    (the largest over tensors); infinite for a record that is not the model's parameters."""
    initial, final = reference["initial"], reference["final"]
    if not isinstance(params, list) or len(params) != len(final):
        return math.inf
    worst = 0.0
    for got, want, before in zip(params, final, initial):
        try:
            got = as_tensor(got, "float32", tuple(want.shape)).double()
        except Malformed:
            return math.inf
        want, before = want.double(), before.double()
        moved = max(float((want - before).norm()), 1e-6 * float(want.norm()), 1e-12)
        worst = max(worst, float((got - want).norm()) / moved)
    return worst


def judge_module_state(observed: Any, setup: dict, max_batches: int, cases: list) -> Verdict:
    """Each concise model must end with the parameters the reference's loop gives it on the same minibatches.

    The flags the run recorded (state kind, graph, fresh state, counts) only word a failure: the parameters,
    compared with the judge's own run of the reference loop, decide it.
    """
    runs = observed.get("cases") if isinstance(observed, dict) else None
    if not isinstance(runs, list) or len(runs) != len(cases) or not all(isinstance(r, dict) for r in runs):
        return Verdict.failed("the run with nn.Module models returned no usable record")
    expected = _expected_batches(setup, max_batches)
    for (layer, optimizer), run in zip(cases, runs):
        updater = "a torch.optim optimizer" if optimizer else "the scratch updater"
        where = f"on an nn.Module model around nn.{layer} with {updater}"
        calls, error = run.get("calls") if isinstance(run.get("calls"), list) else [], run.get("error")
        calls = [c if isinstance(c, dict) else {} for c in calls]
        want = "tensor" if layer != "LSTM" else "tuple"
        for k, call in enumerate(calls[1:], start=2):
            if call.get("kind") != want:
                shape = "one tensor" if want == "tensor" else "a tuple of tensors"
                return Verdict.failed(f"{where}, minibatch {k} was given a state of type {call.get('kind')}, not the "
                                      f"{shape} the model returned; keep the state {shape}: "
                                      f"{_detach_fix(layer)}")
            if call.get("has_grad_fn"):
                return Verdict.failed(f"{where}, the state carried into minibatch {k} still has its computation "
                                      f"graph, so backward() reaches back into the previous minibatch: "
                                      f"{_detach_fix(layer)}")
        if isinstance(error, str):
            if "detach views in-place" in error:
                return Verdict.failed(f"{where}, train_epoch failed: {_module_fix(layer)}. "
                                      f"The error was: {_torch_text(error, 'detach views in-place')}")
            if "backward through the graph a second time" in error:
                return Verdict.failed(f"{where}, backward() went through a previous minibatch's graph, so the state "
                                      f"was not detached: {_detach_fix(layer)}. The error was: "
                                      f"{_torch_text(error, 'backward through the graph a second time')}")
            hint = _module_fix(layer) if "detach" in error or "tuple" in error else ""
            return Verdict.failed(f"{where}, " + explain_error("train_epoch", error, hint=hint))
        if len(calls) != expected or run.get("batches") != expected:
            return Verdict.failed(f"{where}, train_epoch called the model {len(calls)} times for {expected} "
                                  "minibatches; call it once per minibatch")
        if run.get("updates") != expected:
            step = "updater.step()" if optimizer else "updater(batch_size=1)"
            return Verdict.failed(f"{where}, train_epoch updated the model {run.get('updates')} times for {expected} "
                                  f"minibatches; update once per minibatch ({step})")
        difference = module_difference(run.get("params"), module_reference(setup, layer, optimizer, max_batches))
        if difference > MODULE_RTOL:
            fresh = next((k for k, call in enumerate(calls[1:], start=2) if call.get("zeros")), None)
            if fresh is not None:
                return Verdict.failed(f"{where}, minibatch {fresh} started from a fresh state; with sequential "
                                      "minibatches only the first gets one from net.begin_state, later ones carry "
                                      "the previous minibatch's final state (detached)")
            off = "not a list of the model's parameters" if math.isinf(difference) else \
                f"off by {difference:.2g} of how far training moved them"
            return Verdict.failed(f"{where}, the parameters after {expected} minibatches are not those the book's "
                                  f"loop reaches on the same seeded minibatches ({off}): carry the state, detached, "
                                  "from one minibatch to the next, compare the outputs with Y.T.reshape(-1), and "
                                  "update once per minibatch")
    models = ", ".join(f"nn.{layer}" for layer in dict.fromkeys(layer for layer, _ in cases))
    return Verdict.passed(f"on nn.Module models around {models}, with both kinds of updater, the state was carried "
                          f"and detached over {expected} minibatches and the parameters end where the book's loop "
                          "takes them")


def _module_references(setup: dict, max_batches: int, cases: list) -> None:
    for layer, optimizer in cases:
        module_reference(setup, layer, optimizer, max_batches)


# ---------------------------------------------------------------- registration


@hookimpl
def grader_checks(config):
    setup = default_setup(corpus_spec(config), config.secret).to_params()

    def probe(epochs: int = 1, **options: Any) -> Probe:
        """A run for behaviour checks: the first minibatches of a short training, with raw values recorded."""
        params = dict(setup=setup, epochs=epochs, max_batches=BEHAVIOUR_BATCHES, record=True, **options)
        return Probe("train_epoch", probe_train, params, timeout=20.0, hints=HINTS,
                     reference=functools.partial(_behaviour_reference, params))

    # a course may widen the band or change the budget (then give the check a matching timeout)
    band = config.setting(f"{EXERCISE}.perplexity", "band", BAND)
    epochs = config.setting(f"{EXERCISE}.perplexity", "epochs", EPOCHS)
    full = Probe("train_epoch", probe_train, dict(setup=setup, epochs=epochs, keep_params=True), timeout=40.0,
                 hints=HINTS, reference=functools.partial(_full_reference, setup, epochs))
    sequential = probe()  # read by the state and the labels checks
    module_cases = [list(c) for c in MODULE_CASES]
    modules = Probe("train_epoch", probe_modules, dict(setup=setup, max_batches=BEHAVIOUR_BATCHES, cases=module_cases),
                    timeout=20.0, hints=HINTS,
                    reference=functools.partial(_module_references, setup, BEHAVIOUR_BATCHES, module_cases))
    return [
        Check(EXERCISE, "perplexity", f"perplexity after {epochs} seeded epochs within {band:.0%} of the reference's", 3,
              full, functools.partial(judge_perplexity, band=band), settings=dict(band=float(band), epochs=int(epochs)),
              explains="The student's train_epoch trains the scratch model on the seeded corpus; its last epoch's "
                       "perplexity and the judge's own evaluation of the trained parameters must both fall in the band."),
        Check(EXERCISE, "reported", "returns (exp(mean loss), tokens per second)", 2, probe(epochs=2), judge_reported),
        Check(EXERCISE, "state.sequential", "sequential sampling: fresh state once, then carried and detached", 3,
              sequential, judge_sequential_state),
        Check(EXERCISE, "state.random", "random sampling: a fresh state for every minibatch", 3,
              probe(use_random_iter=True), judge_random_state),
        Check(EXERCISE, "state.module", "nn.Module models (nn.RNN, nn.GRU: one tensor; nn.LSTM: a tuple): state "
                                        "carried and detached, parameters trained as by the book's loop", 2,
              modules, judge_module_state,
              explains="The student's train_epoch runs a few sequential minibatches on the reference's concise model "
                       "around nn.RNN and nn.GRU (a state that is one tensor) and nn.LSTM (a tuple of tensors), each "
                       "with the scratch updater and a torch.optim optimizer; the parameters it ends with must be "
                       "those the reference's loop reaches on the same minibatches."),
        Check(EXERCISE, "labels", "outputs are compared with labels Y.T.reshape(-1)", 3, sequential, judge_labels),
        Check(EXERCISE, "clipping", "gradients are clipped to norm 1 before every update", 2,
              probe(loss_scale=GRAD_SCALE), judge_clipping),
        Check(EXERCISE, "optimizer", "with a torch.optim optimizer: zero_grad, backward, clip, step", 2,
              probe(optimizer=True, loss_scale=GRAD_SCALE), judge_optimizer),
    ]


def _behaviour_reference(params: dict) -> None:
    """What a behaviour judge needs before any run: the initial parameters (seeded once) and the minibatches."""
    initial_params(params["setup"])
    minibatches(json.dumps(params["setup"], sort_keys=True), bool(params.get("use_random_iter")), params["epochs"],
                 params["max_batches"])


def _full_reference(setup: dict, epochs: int) -> None:
    evaluated_perplexity(reference_training(Setup(**setup), epochs)["params"], setup)
