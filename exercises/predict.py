"""Exercise: generating text greedily after a prefix."""

import torch

from grader import hookimpl


@hookimpl
def predict(prefix, num_preds, net, vocab, device):
    """Return prefix followed by num_preds generated characters.

    1. Start from state = net.begin_state(batch_size=1, device=device).
    2. Warm-up: feed the prefix to the model one character at a time (as a
       (1, 1) tensor of token indices, created on `device`), carrying the
       state along; ignore the outputs, the next character is known.
    3. Prediction: num_preds times, feed the last character, take the argmax
       of the output as the next character and carry the state along.

    net(X, state) returns (outputs, state); vocab[ch] gives a character's
    index and vocab.idx_to_token[i] the character of index i.
    """
    raise NotImplementedError("predict")
