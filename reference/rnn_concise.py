"""The concise language model: one-hot inputs, a torch recurrent layer, a linear output layer."""

import torch
from torch import nn
from torch.nn import functional as F

from grader import hookimpl


class RNNModel(nn.Module):
    """The book's ``RNNModel``: works with nn.RNN, nn.GRU and nn.LSTM, deep or bidirectional."""

    def __init__(self, rnn_layer, vocab_size):
        super().__init__()
        self.rnn = rnn_layer
        self.vocab_size = vocab_size
        self.num_hiddens = self.rnn.hidden_size
        self.num_directions = 2 if self.rnn.bidirectional else 1
        self.linear = nn.Linear(self.num_hiddens * self.num_directions, self.vocab_size)

    def forward(self, inputs, state):
        X = F.one_hot(inputs.T.long(), self.vocab_size).to(torch.float32)
        Y, state = self.rnn(X, state)
        # (T, B, D*H) -> (T*B, D*H): rows time step by time step, as the scratch model's
        output = self.linear(Y.reshape((-1, Y.shape[-1])))
        return output, state

    def begin_state(self, device, batch_size=1):
        shape = (self.num_directions * self.rnn.num_layers, batch_size, self.num_hiddens)
        if not isinstance(self.rnn, nn.LSTM):
            return torch.zeros(shape, device=device)
        return (torch.zeros(shape, device=device), torch.zeros(shape, device=device))


@hookimpl
def rnn_model(rnn_layer, vocab_size):
    return RNNModel(rnn_layer, vocab_size)
