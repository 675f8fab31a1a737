"""Training scaffolding shared by the runner's probes and the judge's reference runs.

The objects handed to a student's ``train_epoch`` are wrapped so that what it
*does* can be observed directly (which state each minibatch starts from, which
labels meet which outputs, how large the gradients are when the update runs),
because a short training budget's perplexity alone hides most bugs.
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


# ---------------------------------------------------------------- observation


@dataclass
class Log:
    begin_states: int = 0
    calls: list = field(default_factory=list)   # per net call: incoming-state facts
    losses: list = field(default_factory=list)  # per loss call: value, tokens, paired
    updates: list = field(default_factory=list)  # per update: gradient facts
    zero_grads: int = 0
    updater_args: list = field(default_factory=list)


class RecordingNet:
    """Wraps a scratch model; records the state each call starts from."""

    def __init__(self, inner: RNNModelScratch, log: Log):
        self.inner, self.log = inner, log
        self.params = inner.params
        self.vocab_size, self.num_hiddens = inner.vocab_size, inner.num_hiddens
        self.last_output: Optional[torch.Tensor] = None
        self._last_final: Optional[torch.Tensor] = None

    def begin_state(self, batch_size: int, device: Any = None, **kwargs: Any):
        self.log.begin_states += 1
        return self.inner.begin_state(batch_size=batch_size, device=device)

    def __call__(self, X: torch.Tensor, state: Any):
        h = first_of(state)
        if isinstance(h, torch.Tensor):
            self.log.calls.append({
                "zeros": bool(torch.all(h.detach() == 0)),
                "has_grad_fn": h.grad_fn is not None,
                "carried": self._last_final is not None and h.shape == self._last_final.shape
                and bool(torch.equal(h.detach(), self._last_final)),
            })
        else:
            self.log.calls.append({"zeros": False, "has_grad_fn": False, "carried": False, "bad_state": True})
        outputs, new_state = self.inner(X, state)
        self.last_output = outputs
        final = first_of(new_state)
        self._last_final = final.detach().clone() if isinstance(final, torch.Tensor) else None
        return outputs, new_state


class RecordingIter:
    """Yields a loader's minibatches, remembering the last labels handed out."""

    def __init__(self, loader: SeqDataLoader, max_batches: Optional[int] = None):
        self.loader, self.max_batches = loader, max_batches
        self.last_Y: Optional[torch.Tensor] = None

    def __iter__(self):
        for i, (X, Y) in enumerate(self.loader):
            if self.max_batches is not None and i >= self.max_batches:
                return
            self.last_Y = Y.clone()
            yield X, Y


class RecordingLoss(nn.Module):
    """Cross-entropy that also checks outputs meet the right labels and keeps fresh gradients.

    ``scale`` multiplies the gradients (not the value) of the returned loss on every
    other minibatch, which forces them far above the clipping threshold so that
    clipping (or its absence) shows.
    """

    def __init__(self, net: RecordingNet, batches: RecordingIter, log: Log, scale: float = 1.0, fresh_grads: bool = False):
        super().__init__()
        self.net, self.batches, self.log = net, batches, log
        self.scale, self.fresh_grads = scale, fresh_grads
        self.fresh: Optional[list] = None
        #: the gradient scale of the latest loss, which the updaters undo
        self.current_scale = 1.0

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = F.cross_entropy(y_hat, y)
        entry = {"value": float(value.detach()), "tokens": int(y.numel()), "paired": None}
        if self.net.last_output is not None and self.batches.last_Y is not None:
            entry["paired"] = _labels_paired(y_hat.detach(), y, self.net.last_output.detach(),
                                             self.batches.last_Y.T.reshape(-1).long())
        self.log.losses.append(entry)
        # Same value, gradients multiplied by scale: what the student reports is unaffected.
        # Every other minibatch keeps its natural gradients so both sides of the threshold are seen.
        scale = self.scale if len(self.log.losses) % 2 == 1 else 1.0
        self.current_scale = scale
        scaled = value + (scale - 1.0) * (value - value.detach()) if scale != 1.0 else value
        if self.fresh_grads and scaled.requires_grad:
            params = self.net.params
            self.fresh = [g.detach().clone() for g in torch.autograd.grad(scaled, params, retain_graph=True, allow_unused=True)]
        return scaled


def _labels_paired(y_hat: torch.Tensor, y: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor) -> bool:
    """Does every output row meet the label that belongs to it?

    Rows are matched by value, so a student who reorders outputs and labels
    consistently (e.g. batch-major outputs with ``Y.reshape(-1)``) is right too.
    Loss values alone cannot tell: an untrained model's loss barely depends on
    which label each row meets.
    """
    if y_hat.dim() == 2 and y_hat.shape[1] == outputs.shape[1] and y.dim() == 1 and y.numel() == y_hat.shape[0]:
        allowed: dict[bytes, set] = {}
        for row, label in zip(outputs, labels.tolist()):
            allowed.setdefault(row.numpy().tobytes(), set()).add(label)
        return all(label in allowed.get(row.numpy().tobytes(), ()) for row, label in zip(y_hat, y.long().tolist()))
    value = float(F.cross_entropy(y_hat, y))
    want = float(F.cross_entropy(outputs, labels))
    return abs(value - want) <= 1e-4 * max(1.0, want)


def _update_facts(params: list, fresh: Optional[list]) -> dict:
    grads = [p.grad for p in params]
    if fresh is None or any(g is None for g in grads) or any(f is None for f in fresh):
        return {"known": False}
    fresh_norm = float(torch.sqrt(sum((f.double() ** 2).sum() for f in fresh)))
    now_norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    factor = min(1.0, 1.0 / fresh_norm) if fresh_norm > 0 else 1.0
    match = all(torch.allclose(g.double(), f.double() * factor, rtol=1e-4, atol=1e-7 * max(1.0, fresh_norm))
                for g, f in zip(grads, fresh))
    return {"known": True, "fresh_norm": fresh_norm, "norm": now_norm, "match": match}


class RecordingUpdater:
    """The book's scratch updater ``updater(batch_size=1)``; records gradients before stepping."""

    def __init__(self, net: RecordingNet, loss: RecordingLoss, lr: float, log: Log):
        self.net, self.loss, self.lr, self.log = net, loss, lr, log

    def __call__(self, batch_size: int = 1, *args: Any, **kwargs: Any) -> None:
        self.log.updater_args.append(batch_size)
        self.log.updates.append(_update_facts(self.net.params, self.loss.fresh))
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
        facts = _update_facts(self._net.params, self._loss.fresh)
        facts["zeroed"] = self._zeroed or not self._log.updates
        self._log.updates.append(facts)
        self._zeroed = False
        for group in self.param_groups:  # undo the loss's gradient scale, as RecordingUpdater does
            group["lr"] = self._lr / self._loss.current_scale
        return super().step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: D102
        self._log.zero_grads += 1
        self._zeroed = True
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
    fresh_grads: bool = False,
    max_batches: Optional[int] = None,
    keep_params: bool = False,
) -> dict:
    """Train a fresh scratch model with ``train_epoch`` and return what was observed."""
    vocab, ids = vocab_and_ids(setup.corpus)
    log = Log()
    net = RecordingNet(make_net(len(vocab), setup.num_hiddens, setup.seed, hooks), log)
    loader = RecordingIter(SeqDataLoader(ids, setup.batch_size, setup.num_steps, use_random_iter, seed=setup.seed),
                           max_batches)
    loss = RecordingLoss(net, loader, log, scale=loss_scale, fresh_grads=fresh_grads)
    updater = RecordingSGD(net, loss, setup.lr, log) if optimizer else RecordingUpdater(net, loss, setup.lr, log)
    epochs_out = []
    torch.manual_seed(setup.seed)
    for _ in range(epochs):
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
        "calls": log.calls,
        "losses": [{k: e[k] for k in ("paired", "tokens")} for e in log.losses],
        "updates": log.updates,
        "zero_grads": log.zero_grads,
        "updater_args": [a if isinstance(a, (int, float)) else str(a) for a in log.updater_args[:50]],
        "num_batches": len(log.losses),
    }
    if keep_params:
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
