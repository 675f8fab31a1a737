"""Exercise: predicting a sine wave one step ahead with nn.RNN."""

import torch
from torch import nn

from grader import hookimpl


@hookimpl
def sine_model(input_dim, hidden_dim, out_dim):
    """Return an nn.Module that reads a batch of sequences and predicts each next value.

    forward(x, h0) -> (y, h):
      x:  (B, T, input_dim), BATCH FIRST: row b is one sequence of T steps;
      h0: (1, B, hidden_dim), the state to start from (use it, do not create your own);
      y:  (B, T, out_dim), a prediction at every time step;
      h:  (1, B, hidden_dim), the state after the last time step (the layer's second output),
          so that a sequence run in two halves gives the same y as run whole.

    An nn.RNN(input_dim, hidden_dim, batch_first=True) followed by an
    nn.Linear(hidden_dim, out_dim) applied to every step's output does it; keep both as
    attributes so that model.parameters() holds them.

    The grader trains your model with the lesson's loop: sequences x = sin(t) for 20 points
    of t on [start, start + 10] with start drawn from {0, 1, 2}, target x shifted by one step,
    Adam with lr 1e-3, one sequence per step, h0 = 0, for a fixed number of steps; the
    one-step-ahead error must then be at most twice the reference model's on the same budget.
    """
    raise NotImplementedError("sine_model")
