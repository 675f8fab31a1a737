"""Exercise: one training epoch with truncated back-propagation through time."""

import math
import time

import torch
from torch import nn

from grader import hookimpl
from grad_clipping import grad_clipping  # your own function from grad_clipping.py


@hookimpl
def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
    """Train net for one pass over train_iter and return (perplexity, tokens_per_second).

    For each minibatch (X, Y), both of shape (B, T):
    - state: create it with net.begin_state(batch_size=X.shape[0], device=device)
      for the first minibatch, and for EVERY minibatch when use_random_iter is
      true; otherwise keep the previous state but detach it so gradients stop
      at the minibatch boundary. The state is a tuple of tensors for the scratch
      model and nn.LSTM, but a single tensor for nn.RNN and nn.GRU: handle both;
    - labels: the outputs come time step by time step, so compare them with
      y = Y.T.reshape(-1); move X and y to device;
    - y_hat, state = net(X, state); l = loss(y_hat, y.long()).mean();
    - update: if updater is a torch.optim.Optimizer, call zero_grad(),
      backward(), grad_clipping(net, 1), step(); otherwise backward(),
      grad_clipping(net, 1), updater(batch_size=1) (it zeroes the gradients).
    Perplexity is exp(total loss / total tokens) over the epoch, where each
    minibatch contributes l * y.numel().
    """
    raise NotImplementedError("train_epoch")
