"""Exercise: the Jacobian of one recurrent step, the factor back-propagation through time multiplies."""

import torch

from grader import hookimpl


@hookimpl
def state_jacobian(h_next, W_hh):
    """Return J = d h_next / d h for one step h_next = tanh(x @ W_xh + h @ W_hh + b).

    h_next: (H,), the new state (row-vector convention, as in the book);  W_hh: (H, H);
    return J of shape (H, H), float32, on the inputs' device.

    J[j, i] is d h_next[j] / d h[i]: rows index the output h_next, columns the input h
    (the layout torch.autograd.functional.jacobian uses). The previous state h is not
    given: work out with the chain rule what the derivative of tanh needs, and note that
    tanh(a) is h_next itself. Mind which index of W_hh belongs to h.

    Back-propagation through T steps multiplies T such matrices; the report plots the norm
    of that product for small, medium and large W_hh: it vanishes or explodes
    geometrically, which is why training clips gradients.
    """
    raise NotImplementedError("state_jacobian")
