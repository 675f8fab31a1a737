"""Exercise: the Jacobian of one recurrent step, the factor back-propagation through time multiplies."""

import torch

from grader import hookimpl


@hookimpl
def state_jacobian(h_next, W_hh):
    """Return J = d h_next / d h for one step h_next = tanh(x @ W_xh + h @ W_hh + b).

    h_next: (H,), the new state;  W_hh: (H, H);  return J of shape (H, H).

    With row vectors, h_next[j] = tanh(a[j]) where a[j] = sum_i h[i] * W_hh[i, j] + ...
    By the chain rule, and since tanh'(a) = 1 - tanh(a)**2 = 1 - h_next**2:

        J[j, i] = d h_next[j] / d h[i] = (1 - h_next[j]**2) * W_hh[i, j]

    Rows index the output h_next, columns the input h (the layout of
    torch.autograd.functional.jacobian), so J = diag(1 - h_next**2) @ W_hh.T.
    Keep the result on the inputs' device and in float32.

    Back-propagation through T steps multiplies T such matrices; the report plots the norm
    of that product for small, medium and large W_hh: it vanishes or explodes
    geometrically, which is why training clips gradients.
    """
    raise NotImplementedError("state_jacobian")
