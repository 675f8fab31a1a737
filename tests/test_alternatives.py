"""Correct solutions written unlike the reference: each must score full marks."""

from __future__ import annotations

import pytest

from batch_grading import grade_many, report_of, selected_ids

HEAD = "import math\nimport time\n\nimport torch\nfrom torch import nn\nfrom torch.nn import functional as F\n\nfrom grader import hookimpl\n"

RNN_VECTORISED = HEAD + '''

@hookimpl
def get_params(vocab_size, num_hiddens, device):
    shapes = {"W_xh": (vocab_size, num_hiddens), "W_hh": (num_hiddens, num_hiddens), "b_h": (num_hiddens,),
              "W_hq": (num_hiddens, vocab_size), "b_q": (vocab_size,)}
    params = []
    for name, shape in shapes.items():
        if name.startswith("b"):
            p = torch.zeros(shape, device=device)
        else:
            p = torch.normal(0.0, 0.01, size=shape, device=device)
        params.append(p.requires_grad_())
    return params


@hookimpl
def init_rnn_state(batch_size, num_hiddens, device):
    return (torch.zeros(batch_size, num_hiddens).to(device),)


@hookimpl
def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    (H,) = state
    XW = torch.einsum("tbv,vh->tbh", inputs, W_xh) + b_h  # all input projections at once
    hiddens = []
    for t in range(inputs.shape[0]):
        H = torch.tanh(XW[t] + H @ W_hh)
        hiddens.append(H)
    outputs = torch.stack(hiddens) @ W_hq + b_q  # (T, B, V)
    return outputs.reshape(-1, outputs.shape[-1]), (H,)
'''

RNN_LINEAR = HEAD + '''

def _normal(*shape, device):
    return nn.init.normal_(torch.empty(*shape, device=device), mean=0.0, std=0.01)


@hookimpl
def get_params(vocab_size, num_hiddens, device):
    return [
        nn.Parameter(_normal(vocab_size, num_hiddens, device=device)),
        nn.Parameter(_normal(num_hiddens, num_hiddens, device=device)),
        nn.Parameter(torch.zeros(num_hiddens, device=device)),
        nn.Parameter(_normal(num_hiddens, vocab_size, device=device)),
        nn.Parameter(torch.zeros(vocab_size, device=device)),
    ]


@hookimpl
def init_rnn_state(batch_size, num_hiddens, device):
    return (torch.full((batch_size, num_hiddens), 0.0, device=device),)


@hookimpl
def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    H = state[0]
    outputs = []
    for X in inputs.unbind(0):
        H = torch.tanh(torch.addmm(torch.addmm(b_h, H, W_hh), X, W_xh))
        outputs.append(F.linear(H, W_hq.T, b_q))
    return torch.cat(outputs), (H,)
'''

RNN_BUFFER = HEAD + '''

@hookimpl
def get_params(vocab_size, num_hiddens, device):
    def weight(rows, cols):
        return (torch.randn(rows, cols, device=device) / 100).requires_grad_(True)

    def bias(n):
        return torch.zeros(n, device=device, requires_grad=True)

    return [weight(vocab_size, num_hiddens), weight(num_hiddens, num_hiddens), bias(num_hiddens),
            weight(num_hiddens, vocab_size), bias(vocab_size)]


@hookimpl
def init_rnn_state(batch_size, num_hiddens, device):
    return (torch.empty(0, device=device).new_zeros((batch_size, num_hiddens)),)


@hookimpl
def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    T, B, V = inputs.shape
    outputs = inputs.new_empty(T * B, V)
    for t in range(T):
        A = inputs[t] @ W_xh  # a fresh tensor, so in-place updates are safe
        A += H @ W_hh
        A += b_h
        H = A.tanh_()
        outputs[t * B:(t + 1) * B] = H @ W_hq + b_q
    return outputs, [H]
'''

CLIP_UTILS = HEAD + '''

@hookimpl
def grad_clipping(net, theta):
    params = list(net.parameters()) if isinstance(net, nn.Module) else net.params
    return torch.nn.utils.clip_grad_norm_(params, theta)
'''

CLIP_REPLACE = HEAD + '''

@hookimpl
def grad_clipping(net, theta):
    params = net.params if hasattr(net, "params") else [p for p in net.parameters() if p.requires_grad]
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
    if norm.item() > theta:
        factor = theta / norm
        for p in params:
            p.grad = p.grad * factor
    return norm.item()
'''

PREDICT_WHOLE_PREFIX = HEAD + '''

@hookimpl
def predict(prefix, num_preds, net, vocab, device):
    state = net.begin_state(batch_size=1, device=device)
    X = torch.tensor([vocab[list(prefix)]], device=device)  # (1, T): the whole prefix in one call
    outputs, state = net(X, state)
    generated = []
    for _ in range(num_preds):
        token = outputs[-1].argmax()
        generated.append(int(token))
        outputs, state = net(token.reshape(1, 1), state)
    return prefix + "".join(vocab.to_tokens(generated))
'''

TRAIN_BATCH_MAJOR = HEAD + '''
from grad_clipping import grad_clipping


@hookimpl
def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
    start, state, losses = time.time(), None, []
    tokens = 0
    for X, Y in train_iter:
        B, T = X.shape
        if use_random_iter or state is None:
            state = net.begin_state(batch_size=B, device=device)
        else:
            # nn.RNN/nn.GRU: one tensor; the scratch model and nn.LSTM: a tuple
            state = state.detach() if isinstance(state, torch.Tensor) else tuple(s.detach() for s in state)
        X, Y = X.to(device), Y.to(device)
        y_hat, state = net(X, state)
        y_hat = y_hat.reshape(T, B, -1).transpose(0, 1).reshape(B * T, -1)  # batch-major rows
        l = loss(y_hat, Y.reshape(-1))
        l.backward()
        grad_clipping(net, 1)
        if isinstance(updater, torch.optim.Optimizer):
            updater.step()
            updater.zero_grad()
        else:
            updater(batch_size=1)
        losses.append(l.item())
        tokens += Y.numel()
    return math.exp(sum(losses) / len(losses)), tokens / (time.time() - start)
'''

TRAIN_BOOK = HEAD + '''
import numpy as np

from grad_clipping import grad_clipping


class Accumulator:
    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def __getitem__(self, i):
        return self.data[i]


@hookimpl
def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
    state, timer = None, time.perf_counter()
    metric = Accumulator(2)
    batch_losses = []
    for X, Y in train_iter:
        if state is None or use_random_iter:
            state = net.begin_state(X.shape[0], device)
        else:
            state = state.detach() if isinstance(state, torch.Tensor) else tuple(s.detach() for s in state)
        y = Y.T.reshape(-1).to(device)
        y_hat, state = net(X.to(device), state)
        l = loss(y_hat, y).mean()
        if hasattr(updater, "step"):
            updater.zero_grad()
            l.backward()
            grad_clipping(net, 1)
            updater.step()
        else:
            l.backward()
            grad_clipping(net, 1)
            updater(1)
        metric.add(l * y.numel(), y.numel())
        batch_losses.append(l.detach().numpy())
    ppl = np.exp(np.mean(batch_losses))  # numpy float32: every minibatch has the same size
    return ppl, metric[1] / (time.perf_counter() - timer)
'''

UTILS = "import torch\nfrom torch import nn\n\n\n" + '''def all_params(net):
    return [p for p in net.parameters() if p.requires_grad] if isinstance(net, nn.Module) else list(net.params)


def joint_norm(tensors):
    return torch.sqrt(sum((t * t).sum() for t in tensors))


def small_normal(shape, device):
    return torch.randn(shape, device=device).mul_(0.01)


def detach_all(state):
    for s in [state] if isinstance(state, torch.Tensor) else state:
        s.detach_()
'''

SPLIT_SCRATCH = "import torch\n\nfrom grader import hookimpl\nfrom rnn_utils import small_normal\n" + '''

@hookimpl
def get_params(vocab_size, num_hiddens, device):
    W_xh, W_hh, W_hq = (small_normal(s, device) for s in [(vocab_size, num_hiddens), (num_hiddens, num_hiddens),
                                                           (num_hiddens, vocab_size)])
    b_h, b_q = torch.zeros(num_hiddens, device=device), torch.zeros(vocab_size, device=device)
    return [t.requires_grad_() for t in (W_xh, W_hh, b_h, W_hq, b_q)]


@hookimpl
def init_rnn_state(batch_size, num_hiddens, device):
    return (torch.zeros((batch_size, num_hiddens), device=device),)


@hookimpl
def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    H = state[0]
    Y = []
    for X in inputs:
        H = (X @ W_xh + H @ W_hh + b_h).tanh()
        Y.append(H @ W_hq + b_q)
    return torch.cat(Y, 0), (H,)
'''

SPLIT_CLIP = "from grader import hookimpl\nfrom rnn_utils import all_params, joint_norm\n" + '''

@hookimpl
def grad_clipping(net, theta):
    params = all_params(net)
    norm = joint_norm([p.grad for p in params])
    if norm > theta:
        for p in params:
            p.grad.mul_(theta / norm)
'''

SPLIT_TRAIN = "import math\nimport time\n\nimport torch\n\nfrom grader import hookimpl\nfrom rnn_utils import detach_all\nimport solution_clip\n" + '''

@hookimpl
def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
    state = None
    total, count, t0 = 0.0, 0, time.monotonic()
    for X, Y in train_iter:
        if state is None or use_random_iter:
            state = net.begin_state(batch_size=X.shape[0], device=device)
        else:
            detach_all(state)
        y = torch.flatten(Y.T)
        y_hat, state = net(X, state)
        l = loss(y_hat, y)
        optimizer = isinstance(updater, torch.optim.Optimizer)
        if optimizer:
            updater.zero_grad()
        l.backward()
        solution_clip.grad_clipping(net, 1)
        updater.step() if optimizer else updater(batch_size=1)
        total += float(l) * y.numel()
        count += y.numel()
    return math.exp(total / count), count / (time.monotonic() - t0)
'''

SPLIT_PREDICT = "import torch\n\nfrom grader import hookimpl\n" + '''

@hookimpl
def predict(prefix, num_preds, net, vocab, device):
    state = net.begin_state(1, device)
    text = list(prefix)
    for i, ch in enumerate(prefix):
        y, state = net(torch.tensor([[vocab[ch]]], device=device), state)
    for _ in range(num_preds):
        nxt = vocab.idx_to_token[y.argmax(dim=1).item()]
        text.append(nxt)
        if len(text) < len(prefix) + num_preds:
            y, state = net(torch.tensor([[vocab[nxt]]], device=device), state)
    return "".join(text)
'''

REFERENCE_FILES = {"rnn_scratch.py": None, "grad_clipping.py": None, "predict.py": None, "train_epoch.py": None}

STYLES = {
    "rnn-einsum-vectorised+torch.normal": {"rnn_scratch.py": RNN_VECTORISED},
    "rnn-addmm-F.linear+nn.Parameter": {"rnn_scratch.py": RNN_LINEAR},
    "rnn-preallocated-buffer-in-place+new_zeros": {"rnn_scratch.py": RNN_BUFFER},
    "clip-clip_grad_norm_": {"grad_clipping.py": CLIP_UTILS},
    "clip-replaces-grad-vector_norm": {"grad_clipping.py": CLIP_REPLACE},
    "predict-whole-prefix-to_tokens": {"predict.py": PREDICT_WHOLE_PREFIX},
    "train-batch-major-tuple-detach": {"train_epoch.py": TRAIN_BATCH_MAJOR},
    "train-book-accumulator-numpy-ppl": {"train_epoch.py": TRAIN_BOOK},
    "split-helpers-module": {**REFERENCE_FILES, "rnn_utils.py": UTILS, "solution_scratch.py": SPLIT_SCRATCH,
                             "solution_clip.py": SPLIT_CLIP, "solution_train.py": SPLIT_TRAIN,
                             "solution_predict.py": SPLIT_PREDICT},
    "one-file-solution": {**REFERENCE_FILES, "solution.py": "\n\n".join(
        [RNN_LINEAR, CLIP_REPLACE.replace(HEAD, ""), PREDICT_WHOLE_PREFIX.replace(HEAD, ""),
         TRAIN_BATCH_MAJOR.replace(HEAD, "").replace("from grad_clipping import grad_clipping\n", "")])},
}


@pytest.fixture(scope="module")
def reports(request, runner, tmp_path_factory):
    names = [n for n in selected_ids(request) if n in STYLES]
    return grade_many(runner, tmp_path_factory.mktemp("styles"), {n: STYLES[n] for n in names})


@pytest.mark.parametrize("name", list(STYLES))
def test_correct_style_scores_full_marks(reports, name: str):
    report = report_of(reports, name)
    failing = [f"{c.check_id} [{c.status}] {c.message}" for c in report.all_checks() if c.status != "passed"]
    problems = [f"{p.path}: {p.message}" for p in report.problems]
    assert report.points == report.max_points, "\n".join(failing + problems)
    assert not [p for p in report.problems if p.severity == "error"], problems
