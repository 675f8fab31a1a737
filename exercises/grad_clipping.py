"""Exercise: gradient clipping.

Long chains of matrix products make gradients explode; clipping rescales them
so their joint norm never exceeds theta.
"""

import torch
from torch import nn

from grader import hookimpl


@hookimpl
def grad_clipping(net, theta):
    """Rescale the gradients of all of net's parameters so their JOINT L2 norm is at most theta.

    net is either an nn.Module (use the parameters that require grad) or a
    scratch model whose parameters are the list net.params.

    norm = sqrt(sum over parameters p of sum(p.grad ** 2))
    If norm > theta, multiply every gradient by theta / norm (in place, or by
    assigning a new .grad); otherwise leave the gradients untouched. Do not
    clamp each value separately, and do not clip each parameter on its own:
    both change the gradient's direction. Returning the norm is optional.
    """
    raise NotImplementedError("grad_clipping")
