import torch
from torch import nn

from grader import hookimpl


@hookimpl
def grad_clipping(net, theta):
    params = net.parameters() if isinstance(net, nn.Module) else net.params
    for p in params:
        # Mistake: each parameter is clipped on its own, which changes the
        # direction of the overall gradient.
        norm = p.grad.norm()
        if norm > theta:
            p.grad *= theta / norm
