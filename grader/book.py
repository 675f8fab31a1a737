"""The book's objects that grading hands to student functions.

They behave like Dive into Deep Learning's ``SeqDataLoader``, ``RNNModelScratch``
and ``sgd`` but take explicit seeds so every check is repeatable (the book's ``Vocab``
lives with the corpora, in :mod:`grader.corpus`). Nothing here is graded; it is the
scaffolding around what is.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.nn import functional as F


def seq_data_iter_random(corpus: Sequence[int], batch_size: int, num_steps: int, rng: random.Random):
    """Minibatches of subsequences taken at random positions (the book's random sampling)."""
    corpus = corpus[rng.randint(0, num_steps - 1):]
    num_subseqs = (len(corpus) - 1) // num_steps
    starts = list(range(0, num_subseqs * num_steps, num_steps))
    rng.shuffle(starts)
    num_batches = num_subseqs // batch_size
    for i in range(0, batch_size * num_batches, batch_size):
        batch = starts[i:i + batch_size]
        X = [corpus[j:j + num_steps] for j in batch]
        Y = [corpus[j + 1:j + 1 + num_steps] for j in batch]
        yield torch.tensor(X), torch.tensor(Y)


def seq_data_iter_sequential(corpus: Sequence[int], batch_size: int, num_steps: int, rng: random.Random):
    """Minibatches whose rows continue each other from one batch to the next."""
    offset = rng.randint(0, num_steps)
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    Xs = torch.tensor(corpus[offset:offset + num_tokens]).reshape(batch_size, -1)
    Ys = torch.tensor(corpus[offset + 1:offset + 1 + num_tokens]).reshape(batch_size, -1)
    num_batches = Xs.shape[1] // num_steps
    for i in range(0, num_steps * num_batches, num_steps):
        yield Xs[:, i:i + num_steps], Ys[:, i:i + num_steps]


class SeqDataLoader:
    """Iterates minibatches; each pass draws its offsets from its own seeded generator."""

    def __init__(self, corpus: Sequence[int], batch_size: int, num_steps: int, use_random_iter: bool, seed: int = 0):
        self.corpus = list(corpus)
        self.batch_size, self.num_steps = batch_size, num_steps
        self.use_random_iter = use_random_iter
        self._rng = random.Random(seed)
        self._sample = seq_data_iter_random if use_random_iter else seq_data_iter_sequential

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._sample(self.corpus, self.batch_size, self.num_steps, self._rng)


class RNNModelScratch:
    """The scratch language model: parameters plus the three scratch functions."""

    def __init__(
        self,
        vocab_size: int,
        num_hiddens: int,
        device: Any,
        get_params: Callable,
        init_state: Callable,
        forward_fn: Callable,
        params: Sequence[torch.Tensor] | None = None,
    ):
        self.vocab_size, self.num_hiddens = vocab_size, num_hiddens
        self.params = list(params) if params is not None else get_params(vocab_size, num_hiddens, device)
        self.init_state, self.forward_fn = init_state, forward_fn

    def __call__(self, X: torch.Tensor, state: Any):
        X = F.one_hot(X.T, self.vocab_size).type(torch.float32)
        return self.forward_fn(X, state, self.params)

    def begin_state(self, batch_size: int, device: Any):
        return self.init_state(batch_size, self.num_hiddens, device)


def sgd(params: Sequence[torch.Tensor], lr: float, batch_size: int) -> None:
    """Minibatch stochastic gradient descent; zeroes the gradients it used."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()
