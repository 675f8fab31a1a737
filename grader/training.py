"""Training scaffolding shared by the runner's probes and the judge's reference runs.

The objects handed to a student's ``train_epoch`` are wrapped so that what it
*does* can be observed, because a short training budget's perplexity alone hides
most bugs. With ``record=True`` they keep raw values, not verdicts: per model call
the parameters, input tokens and incoming state; per loss call which output rows
met which labels; per update the gradients present. The judge recomputes the
forward pass, the loss and its gradients from them (``grader.checks.train_epoch``),
so a forged record only passes if it holds the numbers a real training run makes.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from grader.book import RNNModelScratch, SeqDataLoader, sgd
from grader.corpus import vocab_and_ids
from grader.fixtures import first_of


@dataclass(frozen=True)
class Setup:
    """A seeded training problem, small enough to send as JSON."""

    #: a corpus spec (grader.corpus): {"markov": [num_chars, seed]} or {"tokens": [...], "ids": [...]}
    corpus: dict
    num_hiddens: int = 32
    batch_size: int = 16
    num_steps: int = 16
    lr: float = 1.0
    seed: int = 0

    def to_params(self) -> dict:
        return dict(corpus=self.corpus, num_hiddens=self.num_hiddens, batch_size=self.batch_size,
                    num_steps=self.num_steps, lr=self.lr, seed=self.seed)


def make_net(vocab_size: int, num_hiddens: int, seed: int, hooks: dict[str, Callable],
             params: Optional[list] = None) -> RNNModelScratch:
    torch.manual_seed(seed)
    return RNNModelScratch(vocab_size, num_hiddens, torch.device("cpu"), hooks["get_params"],
                           hooks["init_rnn_state"], hooks["rnn"], params=params)


def loader_for(setup: Setup, ids: list, use_random_iter: bool) -> SeqDataLoader:
    """The loader a training run draws from; the judge makes the same one to regenerate the minibatches."""
    return SeqDataLoader(ids, setup.batch_size, setup.num_steps, use_random_iter, seed=setup.seed)


def loss_scale_at(index: int, scale: float) -> float:
    """The gradient scale of loss call ``index`` (0-based): ``scale`` on every other one, from the first."""
    return scale if index % 2 == 0 else 1.0


# ---------------------------------------------------------------- observation


@dataclass
class Log:
    #: keep raw values for the judge to recompute (the behaviour probes); otherwise only counts
    record: bool = False
    begin_states: int = 0
    calls: list = field(default_factory=list)   # per net call
    losses: list = field(default_factory=list)  # per loss call
    updates: list = field(default_factory=list)  # per update
    zero_grads: int = 0
    updater_args: list = field(default_factory=list)
    #: with ``record``: the order of [kind, loss index, joint gradient norm or None] for kind in "backward",
    #: "zero_grad" (the norm before zeroing) and "step"; read by the judge only to word a failure
    events: list = field(default_factory=list)
    #: [pass, index] of the minibatch the iterator handed out last
    batch: Optional[list] = None
    epoch: int = 0


def _copy(t: Any) -> Any:
    return t.detach().clone() if isinstance(t, torch.Tensor) else None


#: most events a run records (a behaviour run makes a few per minibatch)
MAX_EVENTS = 400


def _grad_norm(params: list) -> Optional[float]:
    """The joint norm of the gradients present, or None when some parameter has none."""
    grads = [p.grad for p in params]
    if not all(isinstance(g, torch.Tensor) for g in grads):
        return None
    try:
        norm = math.sqrt(sum(float((g.detach().double() ** 2).sum()) for g in grads))
    except RuntimeError:  # e.g. meta tensors
        return None
    return norm if math.isfinite(norm) else None


def _event(log: "Log", kind: str, params: Optional[list]) -> None:
    if log.record and len(log.events) < MAX_EVENTS:
        log.events.append([kind, len(log.losses) - 1, None if params is None else _grad_norm(params)])


class RecordingNet:
    """Wraps a scratch model; records what each call starts from."""

    def __init__(self, inner: RNNModelScratch, log: Log):
        self.inner, self.log = inner, log
        self.params = inner.params
        self.vocab_size, self.num_hiddens = inner.vocab_size, inner.num_hiddens
        self.last_output: Optional[torch.Tensor] = None

    def begin_state(self, batch_size: int, device: Any = None, **kwargs: Any):
        self.log.begin_states += 1
        return self.inner.begin_state(batch_size=batch_size, device=device)

    def __call__(self, X: torch.Tensor, state: Any):
        h = first_of(state)
        entry = {"batch": self.log.batch, "bad_state": not isinstance(h, torch.Tensor),
                 # believed only when it says "still attached": a graph left on the state can only cost points
                 "has_grad_fn": isinstance(h, torch.Tensor) and h.grad_fn is not None}
        if self.log.record:
            entry.update(inputs=_copy(X), state=_copy(h), params=[_copy(p) for p in self.params])
        self.log.calls.append(entry)
        outputs, new_state = self.inner(X, state)
        self.last_output = outputs
        return outputs, new_state


class RecordingIter:
    """Yields a loader's minibatches, noting which pass and index was handed out last."""

    def __init__(self, loader: SeqDataLoader, log: Log, max_batches: Optional[int] = None):
        self.loader, self.log, self.max_batches = loader, log, max_batches
        self.passes = 0

    def __iter__(self):
        this_pass = self.passes
        self.passes += 1
        for i, (X, Y) in enumerate(self.loader):
            if self.max_batches is not None and i >= self.max_batches:
                return
            self.log.batch = [this_pass, i]
            yield X, Y


class RecordingLoss(nn.Module):
    """Cross-entropy that records which output rows met which labels.

    ``scale`` multiplies the gradients (not the value) of the returned loss on every
    other minibatch, which forces them far above the clipping threshold so that
    clipping (or its absence) shows.
    """

    def __init__(self, net: RecordingNet, log: Log, scale: float = 1.0):
        super().__init__()
        self.net, self.log, self.scale = net, log, scale
        #: the gradient scale of the latest loss, which the updaters undo
        self.current_scale = 1.0

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = F.cross_entropy(y_hat, y)
        entry = {"value": float(value.detach()), "tokens": int(y.numel()), "call": len(self.log.calls) - 1,
                 "epoch": self.log.epoch}
        if self.log.record:
            entry.update(_pairing(y_hat.detach(), y.detach(), self.net.last_output))
        scale = loss_scale_at(len(self.log.losses), self.scale)
        self.log.losses.append(entry)
        # Same value, gradients multiplied by scale: what the student reports is unaffected.
        # Every other minibatch keeps its natural gradients so both sides of the threshold are seen.
        self.current_scale = scale
        out = value + (scale - 1.0) * (value - value.detach()) if scale != 1.0 else value
        if self.log.record and out.requires_grad:  # when backward() reaches this loss
            out.register_hook(self._backward_hook)
        return out

    def _backward_hook(self, grad: torch.Tensor) -> None:
        _event(self.log, "backward", None)


def _pairing(y_hat: torch.Tensor, y: torch.Tensor, outputs: Optional[torch.Tensor]) -> dict:
    """Which row of the model's latest output each scored row is, and the label it met.

    Rows are matched by value, so a student who reorders outputs and labels
    consistently (e.g. batch-major outputs with ``Y.reshape(-1)``) is right too.
    The judge checks the claim by recomputing the loss's gradient from it.
    """
    if y_hat.dim() > 2 and y.dim() == y_hat.dim() - 1:  # (N, C, d...) scores: classes are dim 1
        y_hat, y = y_hat.movedim(1, -1).reshape(-1, y_hat.shape[1]), y.reshape(-1)
    if outputs is None or y_hat.dim() != 2 or y.dim() != 1 or y.numel() != y_hat.shape[0] \
            or y_hat.shape[1] != outputs.shape[-1] or y.dtype.is_floating_point:
        return {"rows": None, "labels": None}
    first: dict[bytes, int] = {}
    for i, row in enumerate(outputs.detach().cpu()):
        first.setdefault(row.numpy().tobytes(), i)
    rows = [first.get(row.numpy().tobytes()) for row in y_hat.to(outputs.dtype).cpu()]
    if any(r is None for r in rows):
        return {"rows": None, "labels": None}
    return {"rows": torch.tensor(rows, dtype=torch.int64), "labels": y.long().clone()}


def _update_entry(params: list, log: Log, **facts: Any) -> dict:
    grads = [p.grad for p in params]
    entry = {"loss": len(log.losses) - 1, "call": len(log.calls) - 1,
             "known": all(isinstance(g, torch.Tensor) for g in grads), **facts}
    if log.record:
        entry["grads"] = [_copy(g) for g in grads]
    return entry


class RecordingUpdater:
    """The book's scratch updater ``updater(batch_size=1)``; records gradients before stepping."""

    def __init__(self, net: RecordingNet, loss: RecordingLoss, lr: float, log: Log):
        self.net, self.loss, self.lr, self.log = net, loss, lr, log

    def __call__(self, batch_size: int = 1, *args: Any, **kwargs: Any) -> None:
        self.log.updater_args.append(batch_size)
        size = float(batch_size) if isinstance(batch_size, numbers.Real) else None
        self.log.updates.append(_update_entry(self.net.params, self.log, batch_size=size))
        _event(self.log, "step", self.net.params)
        # Undo the loss's gradient scale, so that a missing clip cannot blow the model up
        # (and the student's code with it) before the behaviour is observed.
        sgd(self.net.params, self.lr / self.loss.current_scale, batch_size)


class RecordingSGD(torch.optim.SGD):
    """``torch.optim.SGD`` that records gradients at each step and counts ``zero_grad``."""

    def __init__(self, net: RecordingNet, loss: RecordingLoss, lr: float, log: Log):
        super().__init__(net.params, lr=lr)
        self._net, self._loss, self._log, self._lr = net, loss, log, lr
        self._zeroed = False

    def step(self, closure: Any = None):  # noqa: D102
        # believed only when it says "not zeroed", as a reason for gradients that do not match
        zeroed = self._zeroed or not self._log.updates
        self._log.updates.append(_update_entry(self._net.params, self._log, zeroed=zeroed))
        _event(self._log, "step", self._net.params)
        self._zeroed = False
        for group in self.param_groups:  # undo the loss's gradient scale, as RecordingUpdater does
            group["lr"] = self._lr / self._loss.current_scale
        return super().step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: D102
        self._log.zero_grads += 1
        self._zeroed = True
        _event(self._log, "zero_grad", self._net.params)
        super().zero_grad(set_to_none)


# ---------------------------------------------------------------- running


class StateNotDetached(RuntimeError):
    """An error inside train_epoch while the state it carried still held the previous minibatch's graph."""


def run_training(
    train_epoch: Callable,
    hooks: dict[str, Callable],
    setup: Setup,
    epochs: int,
    use_random_iter: bool = False,
    optimizer: bool = False,
    loss_scale: float = 1.0,
    max_batches: Optional[int] = None,
    keep_params: bool = False,
    record: bool = False,
) -> dict:
    """Train a fresh scratch model with ``train_epoch`` and return what was observed.

    :param record: keep the raw values the judge recomputes (parameters, states, gradients per minibatch).
    :param keep_params: also return the parameters after the last epoch.
    """
    vocab, ids = vocab_and_ids(setup.corpus)
    log = Log(record=record)
    net = RecordingNet(make_net(len(vocab), setup.num_hiddens, setup.seed, hooks), log)
    loader = RecordingIter(loader_for(setup, ids, use_random_iter), log, max_batches)
    loss = RecordingLoss(net, log, scale=loss_scale)
    updater = RecordingSGD(net, loss, setup.lr, log) if optimizer else RecordingUpdater(net, loss, setup.lr, log)
    epochs_out = []
    torch.manual_seed(setup.seed)
    for epoch in range(epochs):
        log.epoch = epoch
        first_loss = len(log.losses)
        start = time.perf_counter()
        first_call = len(log.calls)
        try:
            returned = train_epoch(net, loader, loss, updater, torch.device("cpu"), use_random_iter)
        except RuntimeError as exc:  # autograd's errors are RuntimeErrors; say why it went back that far
            undetached = [k for k, call in enumerate(log.calls[first_call:], start=1) if call["has_grad_fn"]]
            if not undetached:
                raise
            raise StateNotDetached(
                f"the state carried into minibatch {undetached[0]} still had its computation graph, so backward() "
                f"reached back into earlier minibatches; detach the state (s.detach_()) at every minibatch boundary. "
                f"The error was: {exc}").with_traceback(exc.__traceback__) from None
        elapsed = time.perf_counter() - start
        entries = log.losses[first_loss:]
        tokens = sum(e["tokens"] for e in entries)
        observed = math.exp(sum(e["value"] * e["tokens"] for e in entries) / tokens) if tokens else float("nan")
        epochs_out.append({"returned": _plain_pair(returned), "observed_ppl": observed, "tokens": tokens,
                           "seconds": elapsed})
    result = {
        "epochs": epochs_out,
        "begin_states": log.begin_states,
        "zero_grads": log.zero_grads,
        "updater_args": [a if isinstance(a, (int, float)) else str(a) for a in log.updater_args[:50]],
        "num_batches": len(log.losses),
    }
    if record:
        result.update(calls=log.calls, losses=log.losses, updates=log.updates, events=log.events)
    if keep_params or record:
        result["params"] = [p.detach().clone() for p in net.params]
    return result


def _plain_pair(returned: Any) -> Any:
    if isinstance(returned, (tuple, list)):
        out = []
        for item in returned:
            if isinstance(item, torch.Tensor) and item.numel() == 1:
                item = item.item()
            elif isinstance(item, np.ndarray) and item.size == 1:
                item = item.item()
            # numpy scalars (np.float32 from np.exp of float32 losses) are numbers too
            out.append(float(item) if isinstance(item, numbers.Real) else type(item).__name__)
        return out
    return type(returned).__name__


# ---------------------------------------------------------------- concise models (nn.Module)


def _state_kind(state: Any) -> str:
    """"tensor", "tuple" (of tensors) or the type's name: what a concise model was handed as its state."""
    if isinstance(state, torch.Tensor):
        return "tensor"
    if isinstance(state, tuple) and state and all(isinstance(s, torch.Tensor) for s in state):
        return "tuple"
    return type(state).__name__


class RecordingModule(nn.Module):
    """Wraps a concise model (an ``nn.Module`` around ``nn.RNN``/``nn.GRU``/``nn.LSTM``); records each call's state.

    Only counts and flags are kept: whether the incoming state is a tensor or a tuple, and whether it still
    holds a graph (believed only when it says so, as :class:`RecordingNet`'s flag).
    """

    def __init__(self, inner: nn.Module, log: Log):
        super().__init__()
        self.inner = inner
        self._log = log
        self.vocab_size = getattr(inner, "vocab_size", None)
        self.num_hiddens = getattr(inner, "num_hiddens", None)

    def begin_state(self, *args: Any, **kwargs: Any):
        # the book calls begin_state(batch_size=..., device=...); accept either order positionally
        for arg in args:
            if isinstance(arg, numbers.Integral) and "batch_size" not in kwargs:
                kwargs["batch_size"] = int(arg)
            elif "device" not in kwargs:
                kwargs["device"] = arg
        self._log.begin_states += 1
        return self.inner.begin_state(device=kwargs.get("device"), batch_size=kwargs.get("batch_size", 1))

    def forward(self, X: torch.Tensor, state: Any):
        tensors = [state] if isinstance(state, torch.Tensor) else \
            [s for s in state if isinstance(s, torch.Tensor)] if isinstance(state, (tuple, list)) else []
        self._log.calls.append({"batch": self._log.batch, "kind": _state_kind(state),
                               "has_grad_fn": any(t.grad_fn is not None for t in tensors)})
        return self.inner(X, state)
