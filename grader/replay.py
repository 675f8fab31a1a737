"""Replaying a recorded training run: the judge's own recomputation of what a student's loop did.

A behaviour run of ``train_epoch`` records raw values (:mod:`grader.training`, ``record=True``): the
parameters and state at every model call, the labels at every loss call, the gradients at every
update. The student's code runs in the same process as those records, so they are not taken on trust:
the judge regenerates the minibatches and the initial parameters from the setup, recomputes the forward
pass, the loss and its gradients from the recorded values, and derives every observation itself.
Facts that can only cost points (a state still attached to its graph, a step without zero_grad) are
taken from the record as reasons; anything that earns points is recomputed here.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch.nn import functional as F

from grader.corpus import vocab_and_ids
from grader.plugins import reference_hooks
from grader.training import Setup, loader_for, loss_scale_at, make_net
from grader.wire import TensorData

#: elementwise tolerance of states (scaled by the largest value): float32 runs vs. this float64 recomputation
STATE_RTOL = 1e-4
#: per-tensor tolerance of gradients, relative to the tensor's own norm (plus GRAD_RTOL / 100 of the joint norm)
GRAD_RTOL = 1e-3
#: an update's parameter change, relative; plus PARAM_RTOL / 100 of the parameter for the rounding of p - lr * g
PARAM_RTOL = 1e-4
#: most passes over the loader a behaviour run may record beyond its epochs
EXTRA_PASSES = 2


def inconsistent(minibatch: int, why: str = "") -> str:
    return f"the values recorded during minibatch {minibatch} are not consistent with a run of the model" + (
        f" ({why})" if why else "")


class Malformed(Exception):
    """A record no run of the grader's objects could have produced."""


@dataclass
class Replay:
    """A behaviour run as the judge recomputed it from the values it recorded."""

    #: per model call: zeros, carried, has_grad_fn, bad_state
    calls: list = field(default_factory=list)
    #: per loss call: paired (True, False or None when unknown), value, tokens, epoch
    losses: list = field(default_factory=list)
    #: per update: known, fresh_norm, norm, match (equals the clipped gradient), zeroed
    updates: list = field(default_factory=list)
    #: the first value no run of the model could have produced (neutral failure for every check)
    problem: Optional[str] = None
    #: the first minibatch without a training step of its own loss (state, labels and reported need one)
    untrained: Optional[str] = None
    #: the record is not one the grader's objects can make; nothing in it is read
    malformed: bool = False
    #: per loss call: how many updates used its gradients
    steps: list = field(default_factory=list)
    #: the minibatch (1-based) being replayed, for the message
    at: int = 1

    def note(self, problem: str) -> None:
        self.problem = self.problem or problem


@functools.lru_cache(maxsize=8)
def _initial_params(setup_json: str) -> tuple:
    setup = Setup(**json.loads(setup_json))
    vocab, _ = vocab_and_ids(setup.corpus)
    with _SEEDING:  # make_net seeds torch's global generator; judges may run in threads
        net = make_net(len(vocab), setup.num_hiddens, setup.seed, reference_hooks())
        return tuple(p.detach().clone() for p in net.params)


_SEEDING = threading.Lock()


def initial_params(setup: dict) -> tuple:
    """The parameters every run starts from, made as the runner makes them (cached; warmed up with the probe)."""
    return _initial_params(json.dumps(setup, sort_keys=True))


@functools.lru_cache(maxsize=8)
def minibatches(setup_json: str, use_random_iter: bool, passes: int, max_batches: int) -> tuple:
    setup = Setup(**json.loads(setup_json))
    _, ids = vocab_and_ids(setup.corpus)
    loader = loader_for(setup, ids, use_random_iter)
    return tuple(tuple(itertools.islice(iter(loader), max_batches)) for _ in range(passes))


def as_tensor(value: Any, dtype: str, shape: Optional[tuple] = None, most: int = 0) -> torch.Tensor:
    """A recorded tensor of this dtype and shape (or, without one, of at most ``most`` elements), finite."""
    if not isinstance(value, TensorData) or value.array is None or value.dtype != dtype:
        raise Malformed
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Malformed
    if shape is None and value.array.size > most:
        raise Malformed
    t = torch.from_numpy(np.array(value.array))
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise Malformed
    return t


def _int(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
        raise Malformed
    return value


def _params(value: Any, like: tuple) -> list:
    if not isinstance(value, list) or len(value) != len(like):
        raise Malformed
    return [as_tensor(v, "float32", tuple(p.shape)) for v, p in zip(value, like)]


def _norm(tensors: list) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors))


def _grads_close(got: list, want: list) -> bool:
    joint = _norm(want)
    return all(float((g.double() - w.double()).norm()) <= GRAD_RTOL * (float(w.double().norm()) + joint / 100) + 1e-30
               for g, w in zip(got, want))


def _own_gradients(got: list, fresh: list) -> bool:
    """Are the gradients at an update those of its loss, scaled (a clip by norm, a summed loss) and perhaps
    clamped elementwise (clip_grad_value_)? Clipping mistakes are the clipping check's; these values must
    still come from the loss's own backward pass."""
    g, f = [t.double() for t in got], [t.double() for t in fresh]
    top = max(float(t.abs().max()) for t in g)
    free = [t.abs() < top * (1 - GRAD_RTOL) for t in g]  # below the largest magnitude: not clamped
    dot = sum(float((a[m] * b[m]).sum()) for a, b, m in zip(g, f, free))
    size = sum(float((b[m] ** 2).sum()) for b, m in zip(f, free))
    scale = dot / size if size > 0 else top / max(max(float(b.abs().max()) for b in f), 1e-300)
    if not (top > 0 and scale > 0):
        return False
    joint = math.sqrt(size) * scale
    for a, b, m in zip(g, f, free):
        if float((a[m] - scale * b[m]).norm()) > GRAD_RTOL * (scale * float(b[m].norm()) + joint / 100) + 1e-30:
            return False
        at_top = ~m  # clamped: the sign of the gradient, where it was at least that large
        if not bool(((a[at_top] * b[at_top] > 0) & (scale * b[at_top].abs() >= top * (1 - 2 * GRAD_RTOL))).all()):
            return False
    return True


def _stepped(params: list, grads: list, lr: float, batch_size: Optional[float]) -> list:
    """Parameters after the grader's updater: sgd's p - lr * g / batch_size, or SGD's p - lr * g."""
    return [p if g is None else (p - lr * g / batch_size if batch_size is not None else p - lr * g)
            for p, g in zip(params, grads)]


def _same_params(got: list, want: list, before: list) -> bool:
    for g, w, b in zip(got, want, before):
        change, slack = (w.double() - b.double()).abs(), w.double().abs() * (PARAM_RTOL / 100)
        if not bool(((g.double() - w.double()).abs() <= PARAM_RTOL * change + slack + 1e-30).all()):
            return False
    return True


#: replays remembered by the digest of what they read (a class of similar submissions replays once)
_REMEMBERED: dict[bytes, Replay] = {}
_REMEMBERED_LOCK = threading.Lock()
MAX_REMEMBERED = 256


def replay(observed: Any, setup: dict, epochs: int, use_random_iter: bool = False, optimizer: bool = False,
           loss_scale: float = 1.0, max_batches: Optional[int] = None, **_: Any) -> Replay:
    """Recompute a behaviour run from its record; every fact a check reads comes from here.

    A replay is a function of the recorded values and these arguments alone, so identical records
    (checks reading one run, similar submissions) share one; callers only read it.
    """
    key = _digest(observed, setup, epochs, use_random_iter, optimizer, loss_scale, max_batches)
    if key is not None:
        with _REMEMBERED_LOCK:
            known = _REMEMBERED.get(key)
        if known is not None:
            return known
    rp = _fresh_replay(observed, setup, epochs, use_random_iter, optimizer, loss_scale, max_batches)
    if key is not None:
        with _REMEMBERED_LOCK:
            if len(_REMEMBERED) >= MAX_REMEMBERED:
                _REMEMBERED.clear()
            _REMEMBERED[key] = rp
    return rp


def _digest(observed: Any, *args: Any) -> Optional[bytes]:
    """A digest of the values a replay reads and its arguments; None when they cannot be encoded."""
    if not isinstance(observed, dict):
        return None
    digest = hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode())
    try:
        for key in ("calls", "losses", "updates"):
            _feed(digest, observed.get(key))
    except (TypeError, ValueError, RecursionError):  # odd data is replayed (and judged) without remembering
        return None
    return digest.digest()


def _feed(digest: Any, value: Any) -> None:
    """Add a decoded value to ``digest``, its type included, so different values never feed the same bytes."""
    if isinstance(value, TensorData):
        meta = (value.dtype, value.shape, value.device, value.requires_grad, value.is_leaf, value.has_grad_fn)
        digest.update(b"T" + repr(meta).encode())
        digest.update(b"-" if value.array is None else value.array.tobytes())
    elif isinstance(value, dict):
        digest.update(b"D%d" % len(value))
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(b"L%d" % len(value))
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value).encode("utf-8", "backslashreplace")
        digest.update(b"S%d:" % len(text) + text)
    else:
        raise TypeError(f"cannot digest {type(value).__name__}")


def _fresh_replay(observed: Any, setup: dict, epochs: int, use_random_iter: bool, optimizer: bool,
                  loss_scale: float, max_batches: Optional[int]) -> Replay:
    rp = Replay()
    try:
        _replay(rp, observed, setup, epochs, use_random_iter, optimizer, loss_scale, max_batches)
    except Malformed:
        rp.malformed = True
        rp.problem = rp.untrained = rp.problem or inconsistent(rp.at)
    return rp


def _replay(rp: Replay, observed: Any, setup: dict, epochs: int, use_random_iter: bool, optimizer: bool,
            loss_scale: float, max_batches: Optional[int]) -> None:
    if not isinstance(observed, dict):
        raise Malformed
    calls, losses, updates = (observed.get(k) for k in ("calls", "losses", "updates"))
    if not all(isinstance(v, list) for v in (calls, losses, updates)) or max_batches is None:
        raise Malformed
    if max(len(calls), len(losses), len(updates)) > 2 * (epochs + EXTRA_PASSES) * max_batches:
        raise Malformed  # far more than a loop over these minibatches makes; each would cost a recomputation
    init = initial_params(setup)
    hooks = reference_hooks()
    B, T, lr = setup["batch_size"], setup["num_steps"], float(setup["lr"])
    V, H = init[0].shape
    passes = 0
    for call in calls:
        batch = call.get("batch") if isinstance(call, dict) else None
        if not isinstance(batch, list) or len(batch) != 2:
            raise Malformed
        passes = max(passes, _int(batch[0], 0, epochs + EXTRA_PASSES) + 1)
    data = minibatches(json.dumps(setup, sort_keys=True), use_random_iter, passes, max_batches)

    # one loss per call, updates after their loss and before the next call: the order a real loop makes
    loss_of_call: dict[int, int] = {}
    for i, loss in enumerate(losses):
        if not isinstance(loss, dict):
            raise Malformed
        c = _int(loss.get("call"), 0, len(calls))
        if c in loss_of_call or (i and c < losses[i - 1]["call"]):
            raise Malformed
        loss_of_call[c] = i
    # each minibatch trained on once, in the order the iterator handed them out
    next_index: dict[int, int] = {}
    for i, loss in enumerate(losses):
        pass_, index = calls[loss["call"]]["batch"]
        if index != next_index.get(pass_, 0) or any(p > pass_ for p in next_index):
            rp.note(inconsistent(i + 1, "its minibatch is not the next one the iterator handed out"))
        next_index[pass_] = index + 1
    updates_of_call: dict[int, list] = {}
    for u, update in enumerate(updates):
        if not isinstance(update, dict):
            raise Malformed
        c, i = _int(update.get("call"), -1, len(calls)), _int(update.get("loss"), -1, len(losses))
        if (u and c < updates[u - 1]["call"]) or (i >= 0 and losses[i]["call"] > c):
            raise Malformed
        updates_of_call.setdefault(c, []).append(u)
    if -1 in updates_of_call:  # no loop steps before its first forward pass
        raise Malformed
    rp.losses = [None] * len(losses)

    grads_of_loss: dict[int, list] = {}
    previous_final: Optional[torch.Tensor] = None
    expected = previous_params = list(init)
    for k, call in enumerate(calls):
        rp.at = k + 1
        params = _params(call.get("params"), init)
        has_grad_fn, bad_state = bool(call.get("has_grad_fn")), bool(call.get("bad_state"))
        state = None if bad_state else as_tensor(call.get("state"), "float32", (B, H))
        if not _same_params(params, expected, previous_params):
            rp.note(inconsistent(k + 1, "the parameters are not the model's initial ones" if k == 0 else
                                  "the parameters changed other than by the updater's step"))
        if state is None:
            rp.calls.append({"zeros": False, "carried": False, "has_grad_fn": has_grad_fn, "bad_state": True})
            rp.note(inconsistent(k + 1))
            previous_final = None
        else:
            pass_, index = call["batch"]
            if index >= len(data[pass_]):
                raise Malformed
            X, Y = data[pass_][index]
            inputs = as_tensor(call.get("inputs"), "int64", tuple(X.shape))
            if bool((inputs < 0).any()) or bool((inputs >= V).any()):
                raise Malformed
            if not (torch.equal(inputs, X) or torch.equal(inputs, Y)):  # Y: the labels-as-inputs bug, judged elsewhere
                rp.note(inconsistent(k + 1, "the model was not given this minibatch's tokens"))
            carried = previous_final is not None and bool(torch.allclose(
                state.double(), previous_final, rtol=STATE_RTOL, atol=STATE_RTOL * float(previous_final.abs().max())))
            rp.calls.append({"zeros": bool((state == 0).all()), "carried": carried, "has_grad_fn": has_grad_fn,
                             "bad_state": False})
            leaves = [p.double().requires_grad_(True) for p in params]
            outputs, new_state = hooks["rnn"](F.one_hot(inputs.T, V).double(), (state.double(),), leaves)
            previous_final = new_state[0].detach()
            if k in loss_of_call:
                i = loss_of_call[k]
                grads_of_loss[i] = _score(rp, losses[i], i, outputs, leaves, Y, loss_scale)
        # the parameters the next call must start from: these, moved by the updates recorded in between
        previous_params, expected = params, params
        for u in updates_of_call.get(k, []):
            expected = _update(rp, updates[u], expected, grads_of_loss, lr, optimizer, loss_scale, B * T)
    final = _params(observed.get("params"), init)
    if calls and not _same_params(final, expected, previous_params):
        rp.note(inconsistent(len(calls), "the parameters changed other than by the updater's step"))
    for i in range(len(losses)):
        k = losses[i]["call"]
        own = [u for u in updates_of_call.get(k, []) if updates[u]["loss"] == i]
        rp.steps.append(len(own))
        if not own:
            rp.untrained = rp.untrained or inconsistent(k + 1, "no update followed its loss")
        elif not all(rp.updates[u]["own"] for u in own):
            rp.untrained = rp.untrained or inconsistent(k + 1, "the gradients at its update are not those of its loss")
    rp.untrained = rp.problem or rp.untrained


def _score(rp: Replay, loss: dict, i: int, outputs: torch.Tensor, leaves: list, Y: torch.Tensor,
           loss_scale: float) -> list:
    """The loss the student computed, as the judge recomputes it, and its gradients (with the grader's scale)."""
    correct = Y.T.reshape(-1).long()
    rows, labels = loss.get("rows"), loss.get("labels")
    epoch = _int(loss.get("epoch"), 0, 1 << 20)
    if rows is None and labels is None:
        # scores that are not rows of the output (e.g. log-softmaxed): only the correct loss is believed
        value = F.cross_entropy(outputs, correct)
        claimed = loss.get("value")
        want = float(value.detach())
        paired = None
        if not (isinstance(claimed, float) and abs(claimed - want) <= 1e-4 * max(1.0, want)):
            paired = False  # believed: a loss that is not the correct one can only cost points
        tokens = correct.numel()
    else:
        rows = as_tensor(rows, "int64", most=outputs.shape[0])
        labels = as_tensor(labels, "int64", tuple(rows.shape))
        if rows.dim() != 1 or rows.numel() == 0 or bool((rows < 0).any()) or bool((rows >= outputs.shape[0]).any()) \
                or bool((labels < 0).any()) or bool((labels >= outputs.shape[1]).any()):
            raise Malformed
        value = F.cross_entropy(outputs[rows], labels)
        paired = _paired(outputs.detach(), rows, labels, correct)
        tokens = rows.numel()
    rp.losses[i] = {"paired": paired, "value": float(value.detach()), "tokens": tokens, "epoch": epoch}
    return [g.detach() for g in torch.autograd.grad(value * loss_scale_at(i, loss_scale), leaves, retain_graph=True)]


def _paired(outputs: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, correct: torch.Tensor) -> bool:
    """Does every scored row meet a label that belongs to it? Equal output rows may trade labels."""
    atol = 1e-6 * float(outputs.abs().max())
    for row, label in zip(rows.tolist(), labels.tolist()):
        if correct[row] == label:
            continue
        same = (outputs - outputs[row]).abs().amax(dim=1) <= atol
        if label not in set(correct[same].tolist()):
            return False
    return True


def _update(rp: Replay, update: dict, before: list, grads_of_loss: dict, lr: float, optimizer: bool,
            loss_scale: float, most_tokens: int) -> list:
    """One update: how its gradients relate to its loss's, and the parameters it leads to."""
    i = update["loss"]
    known = bool(update.get("known"))
    raw = update.get("grads")
    if not isinstance(raw, list) or len(raw) != len(before):
        raise Malformed
    grads = [None if g is None and not known else as_tensor(g, "float32", tuple(p.shape)) for g, p in zip(raw, before)]
    facts = {"known": known and all(g is not None for g in grads), "match": False, "own": False,
             "zeroed": update.get("zeroed") is not False}
    if facts["known"] and i in grads_of_loss:
        fresh = grads_of_loss[i]
        fresh_norm = _norm(fresh)
        factor = min(1.0, 1.0 / fresh_norm) if fresh_norm > 0 else 1.0
        facts.update(fresh_norm=fresh_norm, norm=_norm(grads), match=_grads_close(grads, [f * factor for f in fresh]),
                     own=_own_gradients(grads, fresh))
    elif facts["known"]:
        facts.update(fresh_norm=float("nan"), norm=_norm(grads))
    rp.updates.append(facts)
    step_lr = lr / loss_scale_at(i, loss_scale) if i >= 0 else lr
    batch_size = None
    if not optimizer:
        batch_size = update.get("batch_size")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, float)) or not batch_size > 0:
            raise Malformed
        if batch_size > most_tokens:  # a step too small to train: the gradients would hardly matter
            rp.note(inconsistent(rp.at, f"updater(batch_size={batch_size:g}) hardly moves the parameters"))
    return _stepped(before, grads, step_lr, batch_size)
