import math
import time

import torch

from grader import hookimpl
from grad_clipping import grad_clipping


@hookimpl
def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
    state = None
    total, count = 0.0, 0
    start = time.time()
    for X, Y in train_iter:
        if state is None or use_random_iter:
            state = net.begin_state(batch_size=X.shape[0], device=device)
        else:
            state = tuple(s.detach() for s in state)
        # Mistake: the outputs are ordered by time step, so the labels must be
        # Y.T.reshape(-1); Y.reshape(-1) pairs them with the wrong characters.
        y = Y.reshape(-1).to(device)
        y_hat, state = net(X.to(device), state)
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
        total += l.item() * y.numel()
        count += y.numel()
    return math.exp(total / count), count / (time.time() - start)
