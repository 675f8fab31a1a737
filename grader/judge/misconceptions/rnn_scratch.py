"""Mistakes in the scratch RNN's ``rnn``: the reference recurrence re-run with one mistake applied.

Each recogniser rebuilds the check's inputs (:func:`grader.fixtures.rnn_case`, same seed) and
compares the student's outputs with those of the mistaken recurrence.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from grader import hookimpl
from grader.compare import recurrence_tolerance
from grader.definitions import Evidence, Misconception
from grader.fixtures import rnn_case
from grader.judge.misconceptions import close_to

RNN_CHECKS = ("rnn_scratch.rnn.forward", "rnn_scratch.rnn.carries_state", "rnn_scratch.rnn.gradients")
CASE_KEYS = ("seed", "vocab_size", "num_hiddens", "num_steps", "batch_size", "nonzero_state")


def _step(X, H, W_xh, W_hh, b_h, mistake: str):
    if mistake == "relu":
        return torch.relu(X @ W_xh + H @ W_hh + b_h)
    if mistake == "no-tanh":
        return X @ W_xh + H @ W_hh + b_h
    if mistake == "W_hh-transposed":
        return torch.tanh(X @ W_xh + H @ W_hh.T + b_h)
    if mistake == "sigmoid":
        return torch.sigmoid(X @ W_xh + H @ W_hh + b_h)
    return torch.tanh(X @ W_xh + H @ W_hh + b_h)


def _mistaken_rnn(case: dict, mistake: str) -> tuple[np.ndarray, np.ndarray]:
    W_xh, W_hh, b_h, W_hq, b_q = case["params"]
    H0 = case["state"]
    H = torch.zeros_like(H0) if mistake == "zero-start" else H0
    outputs = []
    for X in case["inputs"]:
        if mistake == "state-reread":
            H = H0
        before = H
        H = _step(X, H, W_xh, W_hh, b_h, mistake)
        if mistake == "output-before-update":
            out = before @ W_hq + b_q
        elif mistake == "no-b_q":
            out = H @ W_hq
        else:
            out = H @ W_hq + b_q
        outputs.append(out)
    return torch.cat(outputs, dim=0).numpy(), H.numpy()


@lru_cache(maxsize=64)
def mistaken(mistake: str, *case_values) -> tuple[np.ndarray, np.ndarray]:
    """(outputs, final state) of the recurrence with ``mistake`` on the case with these values."""
    with torch.no_grad():
        return _mistaken_rnn(rnn_case(*case_values), mistake)


def _outputs_match(mistake: str) -> Callable[[Evidence], bool]:
    def recognise(evidence: Evidence) -> bool:
        case = tuple(evidence.params[k] for k in CASE_KEYS)
        outputs, _ = mistaken(mistake, *case)
        correct, _ = mistaken("", *case)
        rtol = recurrence_tolerance(evidence.params["num_steps"])
        return close_to(evidence.observed.get("outputs"), outputs, correct, rtol, rtol * max(1.0, float(np.abs(outputs).max())))
    return recognise


def _entry(key: str, mistake: str, why: str, fix: str, behaviour: str) -> Misconception:
    return Misconception(f"rnn.{key}", RNN_CHECKS, mistake, why, fix, _outputs_match(behaviour))


@hookimpl
def grader_misconceptions(config):
    return [
        _entry("relu-activation", "the hidden state uses ReLU instead of tanh",
               "The book's RNN squashes every new state with tanh, so each H stays in (-1, 1); ReLU lets it grow without bound.",
               "H = torch.tanh(X @ W_xh + H @ W_hh + b_h)", "relu"),
        _entry("no-activation", "the new hidden state is never passed through tanh",
               "Without the nonlinearity the recurrence is linear: H grows or shrinks geometrically and the outputs differ from the first step.",
               "H = torch.tanh(X @ W_xh + H @ W_hh + b_h)", "no-tanh"),
        _entry("W_hh-transposed", "the recurrent weight is used transposed (H @ W_hh.T)",
               "W_hh has shape (H, H) either way, so nothing fails on shape, but row i of W_hh holds the weights from state unit i.",
               "multiply H @ W_hh, with H of shape (batch, hidden) on the left", "W_hh-transposed"),
    ]
