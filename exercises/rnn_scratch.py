"""Exercise: the scratch RNN language model (Dive into Deep Learning, "RNN from scratch").

Implement the three functions below, then run `grade FOLDER` with the folder that holds
this file (`grade .` inside it, or e.g. `grade exercises/` from its parent). Keep the
`@hookimpl` markers: they tell the grader which function is which. Helper functions and
extra imports are fine.
"""

import torch

from grader import hookimpl


@hookimpl
def get_params(vocab_size, num_hiddens, device):
    """Create the model's parameters.

    Return the list [W_xh, W_hh, b_h, W_hq, b_q] with shapes
    (V, H), (H, H), (H,), (H, V), (V,) where V = vocab_size and H = num_hiddens.

    - every tensor is float32 and created on `device` (pass device=device; the
      grader also calls this with a device that is not the CPU);
    - weights are drawn from a normal distribution with mean 0 and standard
      deviation 0.01 (torch.randn(...) * 0.01), biases start at zero;
    - every parameter requires gradients: call requires_grad_(True) AFTER
      scaling, so each one stays a leaf tensor.
    """
    raise NotImplementedError("get_params")


@hookimpl
def init_rnn_state(batch_size, num_hiddens, device):
    """Return the initial hidden state as a one-element tuple: (zeros of shape (B, H),).

    The tuple matters: other models keep several tensors in their state, and
    the training loop treats the state as a tuple.
    """
    raise NotImplementedError("init_rnn_state")


@hookimpl
def rnn(inputs, state, params):
    """Run the recurrence over a minibatch.

    inputs: one-hot tensor of shape (T, B, V), time-major: inputs[t] is X_t (B, V).
    state:  (H_0,) with H_0 of shape (B, H).
    params: [W_xh, W_hh, b_h, W_hq, b_q].

    For t = 1..T:  H_t = tanh(X_t @ W_xh + H_{t-1} @ W_hh + b_h)
                   O_t = H_t @ W_hq + b_q
    Return (outputs, (H_T,)) where outputs stacks O_1..O_T along dimension 0,
    giving shape (T*B, V): rows 0..B-1 are time step 1, and so on.
    Start from the state you are given, and build new tensors rather than
    modifying inputs, state or params in place.
    """
    raise NotImplementedError("rnn")
