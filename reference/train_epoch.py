"""One epoch of truncated back-propagation through time."""

import math
import time

import torch
from torch import nn

from grader import hookimpl

if __package__:  # imported as the reference package
    from .grad_clipping import grad_clipping
else:  # graded as a submission folder, where files import their siblings
    from grad_clipping import grad_clipping


@hookimpl
def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
    state, start = None, time.perf_counter()
    total_loss, total_tokens = 0.0, 0
    for X, Y in train_iter:
        if state is None or use_random_iter:
            state = net.begin_state(batch_size=X.shape[0], device=device)
        elif isinstance(net, nn.Module) and not isinstance(state, tuple):
            state.detach_()
        else:
            for s in state:
                s.detach_()
        y = Y.T.reshape(-1)
        X, y = X.to(device), y.to(device)
        y_hat, state = net(X, state)
        l = loss(y_hat, y.long()).mean()
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.backward()
            grad_clipping(net, 1)
            updater.step()
        else:
            l.backward()
            grad_clipping(net, 1)
            updater(batch_size=1)
        total_loss += l.item() * y.numel()
        total_tokens += y.numel()
    elapsed = max(time.perf_counter() - start, 1e-9)
    return math.exp(total_loss / total_tokens), total_tokens / elapsed
