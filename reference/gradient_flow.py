"""The Jacobian of one recurrent step: the factor that back-propagation through time multiplies."""

import torch

from grader import hookimpl


@hookimpl
def state_jacobian(h_next, W_hh):
    # h_next[j] = tanh(a[j]) with a[j] = sum_i h[i] W_hh[i, j] + ..., so
    # d h_next[j] / d h[i] = (1 - h_next[j]**2) * W_hh[i, j]
    return torch.diag(1 - h_next ** 2) @ W_hh.T
