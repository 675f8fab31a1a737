import torch

from grader import hookimpl


@hookimpl
def get_params(vocab_size, num_hiddens, device):
    shapes = [(vocab_size, num_hiddens), (num_hiddens, num_hiddens), (num_hiddens,),
              (num_hiddens, vocab_size), (vocab_size,)]
    params = []
    for shape in shapes:
        if len(shape) == 2:
            p = torch.normal(0.0, 0.01, size=shape, device=device)
        else:
            p = torch.zeros(shape, device=device)
        params.append(p.requires_grad_())
    return params


@hookimpl
def init_rnn_state(batch_size, num_hiddens, device):
    return (torch.zeros(batch_size, num_hiddens, device=device),)


@hookimpl
def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    (H,) = state
    outputs = []
    for X in inputs:
        H = torch.tanh(X @ W_xh + H @ W_hh + b_h)
        outputs.append(H @ W_hq + b_q)
    return torch.cat(outputs), (H,)
