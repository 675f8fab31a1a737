import torch

from grader import hookimpl


@hookimpl
def predict(prefix, num_preds, net, vocab, device):
    state = net.begin_state(batch_size=1, device=device)
    tokens = [vocab[prefix[0]]]
    for ch in prefix[1:]:
        _, state = net(torch.tensor([[tokens[-1]]], device=device), state)
        tokens.append(vocab[ch])
    for _ in range(num_preds):
        y, state = net(torch.tensor([[tokens[-1]]], device=device), state)
        tokens.append(int(y.argmax(dim=1)[0]))
    return "".join(vocab.idx_to_token[i] for i in tokens)
