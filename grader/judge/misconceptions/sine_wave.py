"""Mistakes in ``sine_model``, recognised from the runs its failing checks saw.

Every check of the exercise reads one run: the forward passes on the seeded inputs (``cpu``, and
each device), and the grader's training loop (``train``). A recogniser reads the part its check
judges: the forward checks and ``device.*`` the forward run on their device, ``training`` the
training run. The signatures are exact: the sizes torch names in its error, the shape of y,
outputs equal with and without h0, a returned h equal to the h0 passed in.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from grader import hookimpl
from grader.checks.sine_wave import NUM_POINTS, RTOL, forward_inputs
from grader.definitions import Evidence, Misconception
from grader.hints import hidden_size_mismatch
from grader.judge.misconceptions import values

EXERCISE = "sine_wave."
FORWARD = tuple(EXERCISE + c for c in ("forward.shapes", "forward.batch_first", "forward.uses_h0", "forward.returns_h"))
EVERYWHERE = (*FORWARD, EXERCISE + "device.*", EXERCISE + "training")


def _run(evidence: Evidence) -> tuple[Optional[dict], int, int, int, int]:
    """The run this check judges, with its (batch, steps, hidden_dim, out_dim)."""
    observed, check = evidence.observed, evidence.check_id
    if check == EXERCISE + "training":
        train = evidence.params["train"]
        return observed.get("train"), 1, NUM_POINTS - 1, train["hidden_dim"], train["out_dim"]
    forward = evidence.params["forward"]
    on_device = check.startswith(EXERCISE + "device.")
    run = observed["devices"].get(check.rsplit(".", 1)[1]) if on_device else observed["cpu"]
    return run, forward["batch"], forward["steps"], forward["hidden_dim"], forward["out_dim"]


def _error(run: Any) -> str:
    """The error a run (or its full forward pass) raised, else ""."""
    for part in (run, run.get("full") if isinstance(run, dict) else None):
        if isinstance(part, dict) and isinstance(part.get("error"), str):
            return part["error"]
    return ""


def _shape(value: Any) -> Optional[tuple]:
    return tuple(value.shape) if hasattr(value, "shape") else None


def _time_and_batch_swapped(evidence: Evidence) -> bool:
    """The layer read x (B, T, input_dim) as (T, B, input_dim): torch expected a state for T sequences, or
    the state returned is one for T sequences."""
    run, B, T, H, _ = _run(evidence)
    if B == T:
        return False
    sizes = hidden_size_mismatch(_error(run))
    if sizes:
        expected, got = sizes
        return tuple(expected) == (1, T, H) and tuple(got) == (1, B, H)
    full = run.get("full") if isinstance(run, dict) else None
    return isinstance(full, dict) and _shape(full.get("h")) == (1, T, H)


def _hidden_size_fixed(evidence: Evidence) -> bool:
    """The layer's hidden size is not the hidden_dim passed in: torch expected h0 of another width."""
    run, B, _, H, _ = _run(evidence)
    sizes = hidden_size_mismatch(_error(run))
    return bool(sizes) and tuple(sizes[1]) == (1, B, H) and len(sizes[0]) == 3 and sizes[0][:2] == (1, B) \
        and sizes[0][2] != H


def _one_prediction_per_sequence(evidence: Evidence) -> bool:
    """y has one out_dim vector per sequence, (B, out_dim), instead of one per time step."""
    run, B, _, _, out_dim = _run(evidence)
    if not isinstance(run, dict):
        return False
    if evidence.check_id == EXERCISE + "training":
        return run.get("bad_shape") in ([B, out_dim], [B, 1, out_dim])
    full = run.get("full")
    return isinstance(full, dict) and _shape(full.get("y")) in ((B, out_dim), (B, 1, out_dim))


def _same(a: Any, b: Any) -> bool:
    x, y = values(a), values(b)
    return x is not None and y is not None and x.shape == y.shape and bool(
        np.allclose(x, y, rtol=RTOL, atol=RTOL * max(1.0, float(np.abs(y).max(initial=0)))))


def _ignores_h0(evidence: Evidence) -> bool:
    """The outputs for h0 = 0 and for the seeded, non-zero h0 are the same."""
    run = evidence.observed["cpu"]
    zero, full = run.get("zero_h0") or {}, run.get("full") or {}
    return _same(zero.get("y"), full.get("y"))


def _returns_h0(evidence: Evidence) -> bool:
    """The h returned after the first steps is the h0 passed in, unchanged."""
    forward = evidence.params["forward"]
    h0 = forward_inputs(**forward)["h0"].numpy()
    first = evidence.observed["cpu"].get("first") or {}
    got = values(first.get("h"))
    return got is not None and got.shape == h0.shape and bool(np.allclose(got, h0, rtol=0, atol=1e-7)) \
        and not _ignores_h0(evidence)


def _never_negative(evidence: Evidence) -> bool:
    """After training, not one prediction is below zero, while half of the sine wave is."""
    predictions = (evidence.observed.get("train") or {}).get("predictions")
    if not isinstance(predictions, list) or not predictions:
        return False
    flat = np.asarray([v for p in predictions for v in p], dtype=np.float64)
    return flat.size > 0 and bool(np.all(np.isfinite(flat))) and float(flat.min()) >= 0.0


def _entry(key: str, checks: tuple, mistake: str, why: str, fix: str, recognise: Callable[[Evidence], bool]):
    return Misconception(EXERCISE + key, checks, mistake, why, fix, recognise)


@hookimpl
def grader_misconceptions(config):
    return [
        _entry("not-batch-first", EVERYWHERE,
               "the recurrent layer is not batch first, so it reads x (batch, time, input_dim) as (time, batch, "
               "input_dim)",
               "nn.RNN is time-major unless told otherwise: the batch axis becomes time and the time axis becomes "
               "the batch, so the state it expects (or returns) is one for num_steps sequences (h0 stays "
               "(1, batch, hidden_dim) either way).",
               "self.rnn = nn.RNN(input_dim, hidden_dim, batch_first=True)", _time_and_batch_swapped),
        _entry("hidden-size-fixed", EVERYWHERE,
               "the recurrent layer's hidden size is a fixed number, not the hidden_dim passed in",
               "h0 has hidden_dim features, so a layer of another size cannot start from it.",
               "nn.RNN(input_dim, hidden_dim, batch_first=True) and nn.Linear(hidden_dim, out_dim)",
               _hidden_size_fixed),
        _entry("one-prediction-per-sequence", EVERYWHERE,
               "forward returns one prediction per sequence instead of one per time step",
               "The model predicts the next value at every time step, so y has shape (batch, time steps, out_dim); "
               "nn.Linear acts on the last dimension, so applying it to the whole output sequence gives them all.",
               "return self.linear(out), h", _one_prediction_per_sequence),
        _entry("ignores-h0", (EXERCISE + "forward.uses_h0", EXERCISE + "forward.returns_h"),
               "the model ignores h0: forward never passes it to the recurrent layer",
               "Without it the layer starts every sequence from zeros, so a state handed on from an earlier stretch "
               "of the wave is thrown away.",
               "out, h = self.rnn(x, h0)", _ignores_h0),
        _entry("returns-h0", (EXERCISE + "forward.returns_h",),
               "forward returns the h0 it was given instead of the layer's final state",
               "The caller continues the sequence from the h it gets back, so it must be the hidden state after "
               "the last time step.",
               "out, h = self.rnn(x, h0); return self.linear(out), h", _returns_h0),
        _entry("output-never-negative", (EXERCISE + "training",),
               "something after the linear read-out squashes the prediction (a ReLU, a sigmoid): after training "
               "it is never negative",
               "A sine wave is negative half of the time; a regression read-out must be left linear.",
               "return self.linear(out), h", _never_negative),
    ]
