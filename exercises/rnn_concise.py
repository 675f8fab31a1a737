"""Exercise: the concise language model with torch's recurrent layers (nn.RNN, nn.GRU, nn.LSTM).

Write the RNNModel class below, then make rnn_model return RNNModel(rnn_layer, vocab_size).
"""

import torch
from torch import nn
from torch.nn import functional as F

from grader import hookimpl


class RNNModel(nn.Module):
    """One-hot inputs -> rnn_layer -> one nn.Linear read-out.

    __init__(self, rnn_layer, vocab_size):
        keep the layer you are given as an attribute (self.rnn = rnn_layer; do not build a
        new one), remember vocab_size, num_hiddens = rnn_layer.hidden_size and
        num_directions (2 if rnn_layer.bidirectional else 1), and create
        self.linear = nn.Linear(num_directions * num_hiddens, vocab_size). Assign modules to
        attributes (not plain lists), so that model.parameters() and model.to(device) see them.

    forward(self, inputs, state):
        inputs are token indices of shape (B, T), int64. torch's recurrent layers are
        time-major, so one-hot encode inputs.T into (T, B, V) and convert to float32;
        Y, state = self.rnn(X, state) gives Y of shape (T, B, num_directions * H); reshape it
        to (T*B, num_directions * H) and apply the linear layer. Return (outputs, state):
        outputs (T*B, V), rows time step by time step, like the scratch model's.

    begin_state(self, device, batch_size=1):
        zeros of shape (num_directions * rnn_layer.num_layers, batch_size, num_hiddens),
        created on `device`; for an nn.LSTM a tuple of two such tensors (H, C). The grader
        calls it with keywords: begin_state(device=..., batch_size=...).
    """

    def __init__(self, rnn_layer, vocab_size):
        super().__init__()
        raise NotImplementedError("RNNModel.__init__")

    def forward(self, inputs, state):
        raise NotImplementedError("RNNModel.forward")

    def begin_state(self, device, batch_size=1):
        raise NotImplementedError("RNNModel.begin_state")


@hookimpl
def rnn_model(rnn_layer, vocab_size):
    """Return the concise model built around rnn_layer: RNNModel(rnn_layer, vocab_size).

    The grader writes weights into the rnn_layer it passes in and into your model's single
    nn.Linear, then checks that the outputs equal the scratch model's (weight_ih = W_xh.T,
    weight_hh = W_hh.T, bias_ih = b_h, linear weight = W_hq.T, linear bias = b_q). It also
    tries 2-layer bidirectional nn.RNN, nn.GRU and 2-layer nn.LSTM layers, and trains your
    model with the reference's train_epoch and predict.
    """
    raise NotImplementedError("rnn_model")
