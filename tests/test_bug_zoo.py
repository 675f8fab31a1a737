"""The bug zoo: one realistic student mistake per submission.

Each mistake must cost points in the checks of the hook it lives in, nowhere
else, and the failing message must point at the cause.
"""

from __future__ import annotations


import pytest

from batch_grading import grade_many, report_of, selected_ids
from conftest import Bug, assert_caught_where_it_lives, edits, exercises_hooks, mutate, rewrite

#: the hooks of the first four exercises, which this zoo covers
EXERCISE_OF = exercises_hooks("rnn_scratch", "grad_clipping", "predict", "train_epoch")


RNN_STEP = "H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)"
RNN_OUT = "outputs.append(torch.mm(H, W_hq) + b_q)"
RNN_RETURN = "return torch.cat(outputs, dim=0), (H,)"
RNN_VALUES = ("rnn_scratch.rnn.forward", "rnn_scratch.rnn.carries_state", "rnn_scratch.rnn.gradients")

RNN_BUGS = {
    "rnn-no-tanh": Bug("rnn", mutate("rnn_scratch.py", RNN_STEP, "H = torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h"),
                       RNN_VALUES, ("tanh",), ("rnn_scratch.rnn.shapes",), named='rnn.no-activation'),
    "rnn-relu": Bug("rnn", mutate("rnn_scratch.py", "H = torch.tanh(", "H = torch.relu("), RNN_VALUES, ("tanh",), named='rnn.relu-activation'),
    "rnn-W_hh-transposed": Bug("rnn", mutate("rnn_scratch.py", "torch.mm(H, W_hh)", "torch.mm(H, W_hh.T)"),
                               RNN_VALUES, ("carried",), ("rnn_scratch.rnn.shapes",), named='rnn.W_hh-transposed'),
    "rnn-W_hh-on-the-left": Bug("rnn", mutate("rnn_scratch.py", "torch.mm(H, W_hh)", "torch.mm(W_hh, H)"),
                                ("rnn_scratch.rnn.shapes",) + RNN_VALUES, ("orientation", "W_hh"), named='rnn.W_hh-on-the-left'),
    "rnn-state-reread-every-step": Bug(
        "rnn", mutate("rnn_scratch.py", "    H, = state\n    outputs = []\n    for X in inputs:\n",
                      "    outputs = []\n    for X in inputs:\n        H, = state\n"),
        RNN_VALUES, ("carried",), ("rnn_scratch.rnn.shapes",), named='rnn.state-not-carried'),
    "rnn-starts-from-zeros": Bug("rnn", mutate("rnn_scratch.py", "H, = state", "H = torch.zeros_like(state[0])"),
                                 ("rnn_scratch.rnn.carries_state", "rnn_scratch.rnn.gradients"),
                                 ("state passed in",), ("rnn_scratch.rnn.forward",), named='rnn.starts-from-zeros'),
    "rnn-returns-H0": Bug("rnn", mutate("rnn_scratch.py", RNN_RETURN, "return torch.cat(outputs, dim=0), state"),
                          RNN_VALUES, ("which h you return",), ("rnn_scratch.rnn.shapes",), named='rnn.returns-initial-state'),
    "rnn-outputs-stacked": Bug("rnn", mutate("rnn_scratch.py", "torch.cat(outputs, dim=0)", "torch.stack(outputs)"),
                               ("rnn_scratch.rnn.shapes", "rnn_scratch.rnn.device.meta") + RNN_VALUES,
                               ("concatenate",), named='rnn.outputs-stacked'),
    "rnn-forgets-b_q": Bug("rnn", mutate("rnn_scratch.py", RNN_OUT, "outputs.append(torch.mm(H, W_hq))"),
                           RNN_VALUES, ("first time step",), named='rnn.no-output-bias'),
    "rnn-outputs-from-pre-tanh": Bug("rnn", rewrite("rnn", """
def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    outputs = []
    for X in inputs:
        A = X @ W_xh + H @ W_hh + b_h
        H = torch.tanh(A)
        outputs.append(A @ W_hq + b_q)
    return torch.cat(outputs, dim=0), (H,)
"""), RNN_VALUES, ("tanh",), named='rnn.outputs-from-pre-activation'),
    "rnn-overwrites-state-in-place": Bug("rnn", mutate("rnn_scratch.py", "        H = torch.tanh(", "        H[:] = torch.tanh("),
                                         RNN_VALUES, ("state",), ("rnn_scratch.rnn.shapes",), named='rnn.state-overwritten-in-place'),
    # the seed article's bug: the input multiplied by the recurrent weight
    "rnn-x-times-W_hh": Bug("rnn", mutate("rnn_scratch.py", "torch.mm(X, W_xh)", "torch.mm(X, W_hh)"),
                            ("rnn_scratch.rnn.shapes",) + RNN_VALUES, ("where W_xh belongs",), named="rnn.x-times-W_hh"),
    "rnn-buffer-ignores-device": Bug("rnn", rewrite("rnn", """
def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    T, B, V = inputs.shape
    outputs = torch.zeros(T * B, V)
    for t in range(T):
        H = torch.tanh(inputs[t] @ W_xh + H @ W_hh + b_h)
        outputs[t * B:(t + 1) * B] = H @ W_hq + b_q
    return outputs, (H,)
"""), ("rnn_scratch.rnn.device.meta",), ("create tensors with device=device",), ("rnn_scratch.rnn.forward", "rnn_scratch.rnn.gradients")),
}

NORMAL = "torch.randn(size=shape, device=device) * 0.01"
PARAMS_BUGS = {
    "params-uniform-rand": Bug("get_params", mutate("rnn_scratch.py", "torch.randn(size=shape", "torch.rand(size=shape"),
                               ("rnn_scratch.params.init",), ("torch.rand",), ("rnn_scratch.params.shapes",), named='params.uniform-init'),
    "params-std-1": Bug("get_params", mutate("rnn_scratch.py", NORMAL, "torch.randn(size=shape, device=device)"),
                        ("rnn_scratch.params.init",), ("0.01",), ("rnn_scratch.params.shapes",), named='params.unscaled-init'),
    "params-no-requires-grad": Bug("get_params", mutate("rnn_scratch.py", "        param.requires_grad_(True)\n", "        pass\n"),
                                   ("rnn_scratch.params.shapes", "rnn_scratch.params.device.meta"), ("requires_grad",), named='params.no-requires-grad'),
    "params-requires-grad-before-scaling": Bug(
        "get_params", edits("rnn_scratch.py", (NORMAL, "torch.randn(size=shape, device=device, requires_grad=True) * 0.01"),
                            ("    for param in params:\n        param.requires_grad_(True)\n", ""),
                            ("torch.zeros(num_hiddens, device=device)", "torch.zeros(num_hiddens, device=device, requires_grad=True)"),
                            ("torch.zeros(num_outputs, device=device)", "torch.zeros(num_outputs, device=device, requires_grad=True)")),
        ("rnn_scratch.params.shapes",), ("leaf",), named='params.not-leaves'),
    "params-W_xh-shape-H-V": Bug("get_params", mutate("rnn_scratch.py", "W_xh = normal((num_inputs, num_hiddens))",
                                                      "W_xh = normal((num_hiddens, num_inputs))"),
                                 ("rnn_scratch.params.shapes", "rnn_scratch.params.init"), ("W_xh",), named='params.weights-transposed'),
    "params-random-biases": Bug("get_params", mutate("rnn_scratch.py", "b_h = torch.zeros(num_hiddens, device=device)",
                                                     "b_h = normal((num_hiddens,))"),
                                ("rnn_scratch.params.init",), ("b_h should start at zero",), ("rnn_scratch.params.shapes",)),
    "params-ignore-device": Bug("get_params", mutate("rnn_scratch.py", NORMAL, "torch.randn(size=shape) * 0.01"),
                                ("rnn_scratch.params.device.meta",), ("but the device passed in was",),
                                ("rnn_scratch.params.shapes", "rnn_scratch.params.init")),
}

ZEROS = "(torch.zeros((batch_size, num_hiddens), device=device),)"
STATE_BUGS = {
    "state-bare-tensor": Bug("init_rnn_state", mutate("rnn_scratch.py", ZEROS, "torch.zeros((batch_size, num_hiddens), device=device)"),
                             ("rnn_scratch.state.shape", "rnn_scratch.state.device.meta"), ("not a bare tensor",)),
    "state-ones": Bug("init_rnn_state", mutate("rnn_scratch.py", ZEROS, "(torch.ones((batch_size, num_hiddens), device=device),)"),
                      ("rnn_scratch.state.shape",), ("zeros",), named='state.ones'),
    "state-shape-H-B": Bug("init_rnn_state", mutate("rnn_scratch.py", ZEROS, "(torch.zeros((num_hiddens, batch_size), device=device),)"),
                           ("rnn_scratch.state.shape", "rnn_scratch.state.device.meta"), ("shape",), named='state.hidden-by-batch'),
    "state-hard-coded-cuda": Bug("init_rnn_state", mutate("rnn_scratch.py", ZEROS, "(torch.zeros((batch_size, num_hiddens), device='cuda'),)"),
                                 ("rnn_scratch.state.shape", "rnn_scratch.state.device.meta"), ("do not hard-code 'cuda'",)),
    "state-hard-coded-cpu": Bug("init_rnn_state", mutate("rnn_scratch.py", ZEROS, "(torch.zeros((batch_size, num_hiddens), device='cpu'),)"),
                                ("rnn_scratch.state.device.meta",), ("but the device passed in was",), ("rnn_scratch.state.shape",)),
}

CLIP_ALL = ("grad_clipping.above", "grad_clipping.scratch", "grad_clipping.joint")
CLIP_BUGS = {
    "clip-per-parameter": Bug("grad_clipping", rewrite("grad_clipping", """
def grad_clipping(net, theta):
    params = [p for p in net.parameters()] if isinstance(net, nn.Module) else net.params
    for p in params:
        norm = torch.norm(p.grad)
        if norm > theta:
            p.grad[:] *= theta / norm
"""), ("grad_clipping.joint", "grad_clipping.above"), ("clip the norm of all gradients together",), ("grad_clipping.below",)),
    "clip-by-value": Bug("grad_clipping", rewrite("grad_clipping", """
def grad_clipping(net, theta):
    params = [p for p in net.parameters()] if isinstance(net, nn.Module) else net.params
    for p in params:
        p.grad.clamp_(-theta, theta)
"""), ("grad_clipping.above", "grad_clipping.scratch"), ("clamped",), ("grad_clipping.below",), named='clip.by-value'),
    "clip-scales-by-norm-over-theta": Bug("grad_clipping", mutate("grad_clipping.py", "theta / norm", "norm / theta"),
                                          CLIP_ALL, ("θ / norm",), ("grad_clipping.below",), named='clip.norm-over-theta'),
    "clip-always-rescales": Bug("grad_clipping", mutate("grad_clipping.py",
                                                        "    if norm > theta:\n        for param in params:\n            param",
                                                        "    if True:\n        for param in params:\n            param"),
                                ("grad_clipping.below",), ("only rescale",), CLIP_ALL, named='clip.always-rescales'),
    "clip-forgets-sqrt": Bug("grad_clipping", mutate("grad_clipping.py", "torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))",
                                                     "sum(torch.sum(p.grad ** 2) for p in params)"),
                             CLIP_ALL, ("square root",), named='clip.no-sqrt'),
    "clip-norm-of-first-parameter": Bug("grad_clipping", mutate("grad_clipping.py", "torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))",
                                                                "torch.sqrt(torch.sum(params[0].grad ** 2))"),
                                        ("grad_clipping.above", "grad_clipping.scratch"), ("only",), named='clip.one-parameter-norm'),
    "clip-return-inside-loop": Bug("grad_clipping", rewrite("grad_clipping", """
def grad_clipping(net, theta):
    params = [p for p in net.parameters()] if isinstance(net, nn.Module) else net.params
    norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm
            return norm
    return norm
"""), CLIP_ALL, ("only some",), ("grad_clipping.below",), named='clip.some-parameters'),
    "clip-modules-only": Bug("grad_clipping", rewrite("grad_clipping", """
def grad_clipping(net, theta):
    params = [p for p in net.parameters() if p.requires_grad]
    norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm
"""), ("grad_clipping.scratch",), ("net.params",), ("grad_clipping.above", "grad_clipping.below", "grad_clipping.joint"), named='clip.modules-only'),
}

PREDICT_BUGS = {
    # the seed article's bug: each prediction computed, never appended
    "predict-never-appended": Bug("predict", mutate("predict.py", "outputs.append(int(y.argmax(dim=1).reshape(1)))",
                                                    "int(y.argmax(dim=1).reshape(1))"),
                                  ("predict.length", "predict.text"), ("never appended",), named="predict.never-appended"),
    "predict-only-generated": Bug("predict", mutate("predict.py", "for i in outputs)", "for i in outputs[len(prefix):])"),
                                  ("predict.length", "predict.text"), ("prefix",), ("predict.state",), named='predict.only-generated'),
    "predict-off-by-one": Bug("predict", mutate("predict.py", "range(num_preds)", "range(num_preds - 1)"),
                              ("predict.length", "predict.text"), ("num_preds",), ("predict.state",), named='predict.off-by-one'),
    "predict-fresh-state-after-warm-up": Bug(
        "predict", mutate("predict.py", "    for _ in range(num_preds):\n",
                          "    state = net.begin_state(batch_size=1, device=device)\n    for _ in range(num_preds):\n"),
        ("predict.state", "predict.text"), ("state",), ("predict.length",), named='predict.fresh-state-after-warm-up'),
    "predict-skips-the-prefix": Bug("predict", rewrite("predict", """
def predict(prefix, num_preds, net, vocab, device):
    state = net.begin_state(batch_size=1, device=device)
    outputs = [vocab[ch] for ch in prefix]
    for _ in range(num_preds):
        X = torch.tensor([[outputs[-1]]], device=device)
        y, state = net(X, state)
        outputs.append(int(y.argmax(dim=1)))
    return "".join(vocab.idx_to_token[i] for i in outputs)
"""), ("predict.state", "predict.text"), ("prefix",), ("predict.length",), named='predict.skips-prefix'),
    "predict-state-reset-each-step": Bug(
        "predict", mutate("predict.py", "        y, state = net(get_input(), state)\n",
                          "        state = net.begin_state(batch_size=1, device=device)\n        y, state = net(get_input(), state)\n"),
        ("predict.state", "predict.text"), ("state",), ("predict.length",), named='predict.state-reset-each-step'),
    "predict-samples": Bug("predict", mutate("predict.py", "int(y.argmax(dim=1).reshape(1))",
                                             "int(torch.multinomial(torch.softmax(y, dim=1), 1).reshape(1))"),
                           ("predict.text",), ("argmax",), ("predict.length", "predict.state"), named='predict.samples'),
    "predict-warm-up-outputs": Bug("predict", mutate("predict.py", "        _, state = net(get_input(), state)\n        outputs.append(vocab[y])\n",
                                                     "        out, state = net(get_input(), state)\n        outputs.append(int(out.argmax(dim=1).reshape(1)))\n"),
                                   ("predict.state", "predict.text"), ("prefix",), named='predict.warm-up-outputs'),
}

TRAIN_ALL = ("train_epoch.perplexity", "train_epoch.reported", "train_epoch.state.sequential", "train_epoch.labels",
             "train_epoch.clipping", "train_epoch.optimizer")
#: a missing detach is told by the state check; the others say "same cause as" it
STATE_FIRST = ("train_epoch.state.sequential",) + tuple(c for c in TRAIN_ALL if c != "train_epoch.state.sequential")
SCRATCH_UPDATE = "            l.backward()\n            grad_clipping(net, 1)\n            updater(batch_size=1)\n"
OPTIM_UPDATE = "            l.backward()\n            grad_clipping(net, 1)\n            updater.step()\n"
TRAIN_BUGS = {
    "train-labels-not-transposed": Bug("train_epoch", mutate("train_epoch.py", "Y.T.reshape(-1)", "Y.reshape(-1)"),
                                       ("train_epoch.labels", "train_epoch.perplexity"), ("label",), named='train_epoch.labels-not-transposed'),
    "train-state-never-detached": Bug("train_epoch", mutate("train_epoch.py", "            for s in state:\n                s.detach_()\n",
                                                            "            pass\n"),
                                      STATE_FIRST, ("detach",), ("train_epoch.state.random",), named='train_epoch.state-not-detached'),
    "train-retain-graph-instead-of-detach": Bug("train_epoch", edits("train_epoch.py",
                                                                     ("            for s in state:\n                s.detach_()\n", "            pass\n"),
                                                                     ("l.backward()", "l.backward(retain_graph=True)")),
                                                 STATE_FIRST, ("detach",), ("train_epoch.state.random",), named='train_epoch.state-not-detached'),
    "train-state-reset-every-batch": Bug("train_epoch", mutate("train_epoch.py", "if state is None or use_random_iter:", "if True:"),
                                         ("train_epoch.state.sequential",), ("fresh state",), ("train_epoch.state.random",), named='train_epoch.state-reset-every-minibatch'),
    "train-random-iter-never-reset": Bug("train_epoch", mutate("train_epoch.py", "if state is None or use_random_iter:", "if state is None:"),
                                         ("train_epoch.state.random",), ("fresh state",), ("train_epoch.state.sequential",), named='train_epoch.random-state-carried'),
    "train-clips-after-update": Bug("train_epoch", edits("train_epoch.py",
                                                         (SCRATCH_UPDATE, "            l.backward()\n            updater(batch_size=1)\n            grad_clipping(net, 1)\n"),
                                                         (OPTIM_UPDATE, "            l.backward()\n            updater.step()\n            grad_clipping(net, 1)\n")),
                                    ("train_epoch.clipping", "train_epoch.optimizer"),
                                    ("grad_clipping(net, 1) is missing between loss.backward() and the update",),
                                    ("train_epoch.labels",), named='train_epoch.unclipped-update'),
    "train-no-clipping": Bug("train_epoch", mutate("train_epoch.py", "            grad_clipping(net, 1)\n", "", count=2),
                             ("train_epoch.clipping", "train_epoch.optimizer"),
                             ("call grad_clipping(net, 1) after loss.backward() and before updater(batch_size=1)",),
                             ("train_epoch.labels",), named='train_epoch.unclipped-update'),
    # mistakes in the torch.optim branch alone: only the optimizer check runs it
    "train-optimizer-clips-after-step": Bug(
        "train_epoch", mutate("train_epoch.py", OPTIM_UPDATE, "            l.backward()\n            updater.step()\n"
                                                             "            grad_clipping(net, 1)\n"),
        ("train_epoch.optimizer",),
        ("clipped after updater.step()",),
        ("train_epoch.clipping", "train_epoch.perplexity", "train_epoch.labels"), named='train_epoch.clipped-after-step'),
    "train-optimizer-no-clipping": Bug(
        "train_epoch", mutate("train_epoch.py", OPTIM_UPDATE, "            l.backward()\n            updater.step()\n"),
        ("train_epoch.optimizer",),
        ("grad_clipping(net, 1) is missing between loss.backward() and the update",),
        ("train_epoch.clipping", "train_epoch.perplexity", "train_epoch.labels"), named='train_epoch.unclipped-update'),
    "train-optimizer-clips-before-backward": Bug(
        "train_epoch", mutate("train_epoch.py", "            updater.zero_grad()\n" + OPTIM_UPDATE,
                              "            updater.zero_grad()\n            grad_clipping(net, 1)\n"
                              "            l.backward()\n            updater.step()\n"),
        ("train_epoch.optimizer",), ("after loss.backward() and before the update",),
        ("train_epoch.clipping", "train_epoch.perplexity", "train_epoch.labels")),
    "train-no-zero-grad": Bug("train_epoch", mutate("train_epoch.py", "            updater.zero_grad()\n", ""),
                              ("train_epoch.optimizer",), ("zero_grad",), ("train_epoch.clipping", "train_epoch.perplexity"), named='train_epoch.no-zero-grad'),
    "train-updater-batch-size": Bug("train_epoch", mutate("train_epoch.py", "updater(batch_size=1)", "updater(batch_size=X.shape[0])"),
                                    ("train_epoch.perplexity",), ("batch_size",), ("train_epoch.clipping",), named='train_epoch.updater-batch-size'),
    # the seed article's bug: & where * was meant in the loss sum
    "train-bitwise-and-in-loss-sum": Bug("train_epoch", mutate("train_epoch.py", "total_loss += l.item() * y.numel()",
                                                               "total_loss += l * 1 & y.numel()"),
                                         ("train_epoch.reported",), ("uses & where a multiplication was meant",),
                                         named="train_epoch.bitwise-and-in-loss-sum"),
    "train-perplexity-of-last-batch": Bug("train_epoch", mutate("train_epoch.py", "math.exp(total_loss / total_tokens)", "math.exp(l.item())"),
                                          ("train_epoch.reported",), ("perplexity",), ("train_epoch.perplexity",), named='train_epoch.perplexity-of-last-minibatch'),
    "train-mean-loss-not-exp": Bug("train_epoch", mutate("train_epoch.py", "math.exp(total_loss / total_tokens)", "total_loss / total_tokens"),
                                   ("train_epoch.reported",), ("exp(mean loss)",), ("train_epoch.perplexity",), named='train_epoch.mean-loss-not-exponentiated'),
    "train-returns-seconds": Bug("train_epoch", mutate("train_epoch.py", "total_tokens / elapsed", "elapsed"),
                                 ("train_epoch.reported",), ("tokens/s",), ("train_epoch.perplexity",), named='train_epoch.seconds-not-speed'),
    "train-labels-as-inputs": Bug("train_epoch", mutate("train_epoch.py", "y_hat, state = net(X, state)", "y_hat, state = net(Y, state)"),
                                  ("train_epoch.perplexity",), ("leak",), named='train_epoch.labels-as-inputs'),
    "train-inputs-as-labels": Bug("train_epoch", mutate("train_epoch.py", "y = Y.T.reshape(-1)", "y = X.T.reshape(-1)"),
                                  ("train_epoch.labels", "train_epoch.perplexity"), ("label",), named='train_epoch.inputs-as-labels'),
    "train-assumes-optimizer": Bug("train_epoch", edits("train_epoch.py",
                                                        ("        if isinstance(updater, torch.optim.Optimizer):\n", "        if True:\n")),
                                   ("train_epoch.perplexity", "train_epoch.clipping"), ("the updater may be a plain function",), ("train_epoch.optimizer",)),
}

BUGS = {**RNN_BUGS, **PARAMS_BUGS, **STATE_BUGS, **CLIP_BUGS, **PREDICT_BUGS, **TRAIN_BUGS}


@pytest.fixture(scope="module")
def reports(request, runner, tmp_path_factory):
    names = [n for n in selected_ids(request) if n in BUGS]
    return grade_many(runner, tmp_path_factory.mktemp("zoo"), {n: BUGS[n].files for n in names})


@pytest.mark.parametrize("name", list(BUGS))
def test_mistake_is_caught_where_it_lives(reports, name: str):
    bug = BUGS[name]
    assert_caught_where_it_lives(report_of(reports, name), bug, EXERCISE_OF[bug.hook])


def test_zoo_covers_every_hook():
    counts = {hook: sum(b.hook == hook for b in BUGS.values()) for hook in EXERCISE_OF}
    assert min(counts.values()) >= 3, counts
    assert len(BUGS) >= 24
