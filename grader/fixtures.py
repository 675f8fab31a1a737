"""Seeded inputs shared by probes (runner) and judges (grading process).

Both sides rebuild the same tensors from the same small parameter dicts, so the
judge never has to trust inputs that came back from student code.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def rnn_case(seed: int, vocab_size: int, num_hiddens: int, num_steps: int, batch_size: int, nonzero_state: bool) -> dict:
    """Inputs, state, parameters and output weights for grading ``rnn``.

    The parameters are larger than ``get_params``' N(0, 0.01²) so that tanh
    saturates: with tiny weights tanh(x) ~ x and a missing tanh goes unnoticed.
    """
    g = torch.Generator().manual_seed(seed)
    V, H, T, B = vocab_size, num_hiddens, num_steps, batch_size
    tokens = torch.randint(V, (T, B), generator=g)

    def randn(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    params = [
        randn(V, H, std=1.0),
        randn(H, H, std=1.2 / math.sqrt(H)),
        randn(H, std=0.5),
        randn(H, V, std=1.0 / math.sqrt(H)),
        randn(V, std=0.5),
    ]
    state = torch.tanh(randn(B, H, std=1.0)) if nonzero_state else torch.zeros(B, H)
    return {
        "inputs": F.one_hot(tokens, V).to(torch.float32),
        "state": state,
        "params": params,
        "output_weights": randn(T * B, V, std=1.0),
        "state_weights": randn(B, H, std=1.0),
    }


def first_of(state):
    """The hidden-state tensor in a returned state, tolerating a bare tensor."""
    if isinstance(state, (tuple, list)) and state:
        return state[0]
    return state
