"""The rest of the lesson: the concise model, the sine-wave regressor and the gradient flow through time.

Bug zoo: one realistic mistake per submission costs points in its own exercise's
checks only, with a message that points at the cause. Alternatives: correct
solutions in other styles keep full marks. Plus the facts the checks rest on
(the reference equals autograd; the sine threshold separates right from wrong).
"""

from __future__ import annotations


import pytest

from conftest import (REFERENCE, REPO, Bug, assert_caught_where_it_lives, by_exercise, edits, exercises_hooks, failures,
                      lost)

EXTRAS = ("rnn_concise", "sine_wave", "gradient_flow")
EXERCISE_OF = exercises_hooks(*EXTRAS)


@pytest.fixture(scope="module")
def extras(runner):
    """``extras(folder) -> GradingReport`` with only the three exercises of this module (a third of the time)."""
    from grader.judge import engine
    from grader.config import RunConfig
    from grader.plugins import get_plugin_manager

    pm, config = get_plugin_manager(), RunConfig()
    full = engine.plan(pm, config)
    the_plan = engine.Plan([e for e in full.exercises if e.name in EXTRAS], [c for c in full.checks if c.exercise in EXTRAS],
                           misconceptions=full.misconceptions)
    return lambda folder: engine.grade(folder, config, pm, runner, the_plan)


C = "rnn_concise."
ONE_HOT = "X = F.one_hot(inputs.T.long(), self.vocab_size).to(torch.float32)"
LINEAR = "self.linear = nn.Linear(self.num_hiddens * self.num_directions, self.vocab_size)"
SHAPE = "shape = (self.num_directions * self.rnn.num_layers, batch_size, self.num_hiddens)"
CONCISE_BUGS = {
    "concise-inputs-not-transposed": Bug(
        "rnn_model", edits("rnn_concise.py", (ONE_HOT, ONE_HOT.replace("inputs.T", "inputs"))),
        (C + "forward.scratch", C + "layers"), ("inputs.t",), (C + "begin_state",), named='rnn_concise.inputs-not-transposed'),
    "concise-batch-major-rows": Bug(
        "rnn_model", edits("rnn_concise.py", ("Y.reshape((-1, Y.shape[-1]))", "Y.transpose(0, 1).reshape((-1, Y.shape[-1]))")),
        (C + "forward.scratch", C + "layers", C + "train"), ("batch-major",), (C + "begin_state",), named='rnn_concise.batch-major-rows'),
    "concise-linear-ignores-directions": Bug(
        "rnn_model", edits("rnn_concise.py", (LINEAR, "self.linear = nn.Linear(self.num_hiddens, self.vocab_size)")),
        (C + "layers", C + "device.meta"), ("bidirectional",), (C + "forward.scratch", C + "begin_state", C + "train"), named='rnn_concise.linear-ignores-directions'),
    "concise-state-ignores-layers": Bug(
        "rnn_model", edits("rnn_concise.py", (SHAPE, SHAPE.replace(" * self.rnn.num_layers", ""))),
        (C + "begin_state", C + "device.meta"), ("num_layers",), (C + "forward.scratch", C + "layers", C + "train"), named='rnn_concise.begin-state-rows'),
    "concise-lstm-state-not-a-tuple": Bug(
        "rnn_model", edits("rnn_concise.py", ("if not isinstance(self.rnn, nn.LSTM):", "if True:")),
        (C + "begin_state", C + "device.meta"), ("tuple",), (C + "forward.scratch", C + "layers", C + "train"), named='rnn_concise.lstm-state-one-tensor'),
    "concise-state-on-cpu": Bug(
        "rnn_model", edits("rnn_concise.py", ("torch.zeros(shape, device=device)", "torch.zeros(shape, device='cpu')")),
        (C + "device.meta",), ("but the device passed in was",), (C + "forward.scratch", C + "begin_state", C + "layers", C + "train")),
    "concise-linear-in-a-list": Bug(
        "rnn_model", edits("rnn_concise.py", (LINEAR, LINEAR.replace("self.linear = nn.Linear(", "self.parts = [nn.Linear(") + "]"),
                           ("output = self.linear(", "output = self.parts[0](")),
        (C + "forward.scratch", C + "layers", C + "train"), ("plain python list",), (C + "begin_state",)),
    "concise-builds-its-own-layer": Bug(
        "rnn_model", edits("rnn_concise.py", ("self.rnn = rnn_layer", "self.rnn = type(rnn_layer)(rnn_layer.input_size, "
                                              "rnn_layer.hidden_size, num_layers=rnn_layer.num_layers, "
                                              "bidirectional=rnn_layer.bidirectional)")),
        (C + "forward.scratch", C + "layers", C + "train"), ("store that very layer",), (C + "begin_state",)),
    # the seed article's bug: the output sequence handed back as the state
    "concise-returns-output-sequence-as-state": Bug(
        "rnn_model", edits("rnn_concise.py", ("return output, state", "return output, Y")),
        (C + "forward.scratch", C + "layers"), ("output sequence",), (C + "begin_state",),
        named="rnn_concise.output-sequence-as-state"),
    "concise-ignores-state": Bug(
        "rnn_model", edits("rnn_concise.py", ("Y, state = self.rnn(X, state)", "Y, state = self.rnn(X)")),
        (C + "forward.scratch", C + "layers"), ("zero state",), (C + "begin_state",), named='rnn_concise.ignores-state'),
}

S = "sine_wave."
RNN_LINE = "self.rnn = nn.RNN(input_dim, hidden_dim, batch_first=True)"
SINE_BUGS = {
    "sine-not-batch-first": Bug(
        "sine_model", edits("sine_wave.py", (RNN_LINE, "self.rnn = nn.RNN(input_dim, hidden_dim)")),
        (S + "forward.shapes", S + "training"), ("batch_first",), named='sine_wave.not-batch-first'),
    "sine-ignores-h0": Bug(
        "sine_model", edits("sine_wave.py", ("out, h = self.rnn(x, h0)", "out, h = self.rnn(x)")),
        (S + "forward.uses_h0", S + "forward.returns_h"), ("ignores h0",),
        (S + "forward.shapes", S + "forward.batch_first", S + "training", S + "device.meta"), named='sine_wave.ignores-h0'),
    "sine-returns-h0": Bug(
        "sine_model", edits("sine_wave.py", ("return self.linear(out), h", "return self.linear(out), h0")),
        (S + "forward.returns_h",), ("last time step",), (S + "forward.shapes", S + "forward.uses_h0", S + "training"), named='sine_wave.returns-h0'),
    "sine-last-step-only": Bug(
        "sine_model", edits("sine_wave.py", ("return self.linear(out), h", "return self.linear(out[:, -1]), h")),
        (S + "forward.shapes", S + "training"), ("every time step",), named='sine_wave.one-prediction-per-sequence'),
    "sine-relu-read-out": Bug(
        "sine_model", edits("sine_wave.py", ("return self.linear(out), h", "return nn.functional.relu(self.linear(out)), h")),
        (S + "training",), ("squashes",), (S + "forward.shapes", S + "forward.batch_first", S + "forward.returns_h"), named='sine_wave.output-never-negative'),
    "sine-hidden-size-hard-coded": Bug(
        "sine_model", edits("sine_wave.py", (RNN_LINE, "self.rnn = nn.RNN(input_dim, 16, batch_first=True)"),
                            ("nn.Linear(hidden_dim, out_dim)", "nn.Linear(16, out_dim)")),
        (S + "forward.shapes",), ("hidden", "h0", "12"), (S + "training",), named='sine_wave.hidden-size-fixed'),
    "sine-linear-in-a-list": Bug(
        "sine_model", edits("sine_wave.py", ("self.linear = nn.Linear(hidden_dim, out_dim)", "self.parts = [nn.Linear(hidden_dim, out_dim)]"),
                            ("return self.linear(out), h", "return self.parts[0](out), h")),
        (S + "training",), ("plain list",), (S + "forward.shapes", S + "forward.returns_h")),
    "sine-own-zero-state-on-cpu": Bug(
        "sine_model", edits("sine_wave.py", ("from torch import nn", "import torch\nfrom torch import nn"),
                            ("out, h = self.rnn(x, h0)", "out, h = self.rnn(x, torch.zeros(1, x.shape[0], self.rnn.hidden_size))")),
        (S + "forward.uses_h0", S + "forward.returns_h", S + "device.meta"), ("ignores h0",), (S + "training",), named='sine_wave.ignores-h0'),
}

G = "gradient_flow."
JAC = "return torch.diag(1 - h_next ** 2) @ W_hh.T"
GRADIENT_BUGS = {
    "jacobian-transposed": Bug(
        "state_jacobian", edits("gradient_flow.py", (JAC, "return W_hh @ torch.diag(1 - h_next ** 2)")),
        (G + "jacobian.values", G + "jacobian.chain"), ("transpose",), (G + "jacobian.shape", G + "device.meta"), named='gradient_flow.jacobian-transposed'),
    "jacobian-W-not-transposed": Bug(
        "state_jacobian", edits("gradient_flow.py", (JAC, "return torch.diag(1 - h_next ** 2) @ W_hh")),
        (G + "jacobian.values", G + "jacobian.chain"), ("not transposed",), (G + "jacobian.shape",), named='gradient_flow.W_hh-not-transposed'),
    "jacobian-no-tanh-derivative": Bug(
        "state_jacobian", edits("gradient_flow.py", (JAC, "return W_hh.T.clone()")),
        (G + "jacobian.values", G + "jacobian.chain"), ("derivative is missing",), (G + "jacobian.shape",), named='gradient_flow.no-tanh-derivative'),
    "jacobian-tanh-applied-again": Bug(
        "state_jacobian", edits("gradient_flow.py", (JAC, "return torch.diag(1 - torch.tanh(h_next) ** 2) @ W_hh.T")),
        (G + "jacobian.values", G + "jacobian.chain"), ("applied again",), (G + "jacobian.shape",), named='gradient_flow.tanh-applied-again'),
    "jacobian-only-the-diagonal": Bug(
        "state_jacobian", edits("gradient_flow.py", (JAC, "return 1 - h_next ** 2")),
        (G + "jacobian.shape", G + "jacobian.values", G + "jacobian.chain", G + "device.meta"), ("only the diagonal factor",)),
    "jacobian-float64": Bug(
        "state_jacobian", edits("gradient_flow.py", (JAC, "return (torch.diag(1 - h_next ** 2) @ W_hh.T).double()")),
        (G + "jacobian.shape", G + "jacobian.values", G + "device.meta"), ("dtype float64, expected float32",)),
    "jacobian-eye-on-cpu": Bug(
        "state_jacobian", edits("gradient_flow.py", (JAC, "return (torch.eye(h_next.shape[0]) * (1 - h_next ** 2)) @ W_hh.T")),
        (G + "device.meta",), ("create tensors with device=device",), (G + "jacobian.shape", G + "jacobian.values", G + "jacobian.chain")),
    "jacobian-squares-in-place": Bug(
        "state_jacobian", edits("gradient_flow.py", (JAC, "return torch.diag(1 - h_next.pow_(2)) @ W_hh.T")),
        (G + "jacobian.values",), ("in place",), (G + "jacobian.shape",)),
}

BUGS = {**CONCISE_BUGS, **SINE_BUGS, **GRADIENT_BUGS}


@pytest.mark.parametrize("bug", [pytest.param(b, id=name) for name, b in BUGS.items()])
def test_mistake_is_caught_where_it_lives(extras, submission, bug: Bug):
    assert_caught_where_it_lives(extras(submission(bug.files)), bug, EXERCISE_OF[bug.hook])


def test_zoo_covers_every_new_hook():
    counts = {hook: sum(b.hook == hook for b in BUGS.values()) for hook in EXERCISE_OF}
    assert min(counts.values()) >= 6, counts


def test_one_mistake_in_each_new_file_costs_only_those_exercises(grading, submission):
    files = {**CONCISE_BUGS["concise-batch-major-rows"].files, **SINE_BUGS["sine-ignores-h0"].files,
             **GRADIENT_BUGS["jacobian-transposed"].files}
    report = grading(submission(files))
    assert set(lost(report)) == set(EXTRAS), failures(report)
    assert report.max_points == 100
    for name in ("rnn_scratch", "grad_clipping", "predict", "train_epoch"):
        assert by_exercise(report)[name].points == by_exercise(report)[name].max_points


# ------------------------------------------------------------------ reference, skeletons, points


def test_reference_and_skeletons(extras):
    report = extras(REFERENCE)
    assert report.points == report.max_points == 30, failures(report)
    skeleton = extras(REPO / "exercises")
    assert skeleton.points == 0
    assert {c.status for c in skeleton.all_checks()} == {"not_implemented"}


def test_points_per_exercise():
    from grader.judge import engine
    from grader.config import RunConfig
    from grader.plugins import get_plugin_manager

    the_plan = engine.plan(get_plugin_manager(), RunConfig())
    points: dict[str, float] = {}
    for check in the_plan.checks:
        points[check.exercise] = points.get(check.exercise, 0) + check.points
    assert {k: round(v, 6) for k, v in points.items()} == {
        "rnn_scratch": 30, "grad_clipping": 10, "predict": 10, "train_epoch": 20,
        "rnn_concise": 10, "sine_wave": 10, "gradient_flow": 10}


def test_new_hooks_are_known_to_the_loader_and_the_reference():
    from grader.registry import EXERCISE_HOOKS
    from grader.plugins import reference_hooks

    assert set(EXERCISE_HOOKS) >= set(EXERCISE_OF)
    hooks = reference_hooks()
    assert all(hooks[h].__module__.startswith("grader.reference.") for h in EXERCISE_OF)


# ------------------------------------------------------------------ alternatives keep full marks

ALTERNATIVES = {
    "concise-read-out-then-reshape": {"rnn_concise.py": '''
import torch
from torch import nn
from torch.nn import functional as F
from grader import hookimpl


class Model(nn.Module):
    def __init__(self, rnn, vocab_size):
        super().__init__()
        self.rnn, self.vocab_size = rnn, vocab_size
        self.dense = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), vocab_size)

    def forward(self, inputs, state):
        Y, state = self.rnn(F.one_hot(inputs.T, self.vocab_size).float(), state)
        return self.dense(Y).flatten(0, 1), state

    def begin_state(self, device, batch_size=1):
        rows = self.rnn.num_layers * (2 if self.rnn.bidirectional else 1)
        zeros = lambda: torch.zeros(rows, batch_size, self.rnn.hidden_size, device=device)
        return (zeros(), zeros()) if isinstance(self.rnn, nn.LSTM) else zeros()


@hookimpl
def rnn_model(rnn_layer, vocab_size):
    return Model(rnn_layer, vocab_size)
'''},
    "concise-read-out-as-parameters": {"rnn_concise.py": '''
import torch
from torch import nn
from torch.nn import functional as F
from grader import hookimpl


class Model(nn.Module):
    def __init__(self, rnn, vocab_size):
        super().__init__()
        self.layers = nn.ModuleList([rnn])
        self.V = vocab_size
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        self.W_hq = nn.Parameter(torch.randn(width, vocab_size) * 0.01)
        self.b_q = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, inputs, state):
        X = F.one_hot(inputs.T.long(), self.V).type(torch.float32)
        Y, state = self.layers[0](X, state)
        return Y.reshape(-1, Y.shape[-1]) @ self.W_hq + self.b_q, state

    def begin_state(self, batch_size=1, device=None):
        rnn = self.layers[0]
        shape = (rnn.num_layers * (1 + rnn.bidirectional), batch_size, rnn.hidden_size)
        if isinstance(rnn, nn.LSTM):
            return tuple(torch.zeros(shape, device=device) for _ in range(2))
        return torch.zeros(shape, device=device)


@hookimpl
def rnn_model(rnn_layer, vocab_size):
    return Model(rnn_layer, vocab_size)
'''},
    "sine-time-major-with-transposes": {"sine_wave.py": '''
from torch import nn
from grader import hookimpl


class Net(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.head = nn.Linear(h, o)  # created first: a different initialisation than the reference's
        self.cell = nn.RNN(i, h)

    def forward(self, x, h0):
        out, h = self.cell(x.transpose(0, 1), h0)
        return self.head(out.transpose(0, 1)), h


@hookimpl
def sine_model(input_dim, hidden_dim, out_dim):
    return Net(input_dim, hidden_dim, out_dim)
'''},
    "sine-sequential-read-out": {"sine_wave.py": '''
import torch
from torch import nn
from grader import hookimpl


class Net(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.rnn = nn.RNN(input_size=i, hidden_size=h, num_layers=1, batch_first=True)
        self.read_out = nn.Sequential(nn.Linear(h, o))

    def forward(self, x, h0):
        hs, h_last = self.rnn(x, h0)
        B, T, H = hs.shape
        return self.read_out(hs.reshape(B * T, H)).reshape(B, T, -1), h_last


@hookimpl
def sine_model(input_dim, hidden_dim, out_dim):
    torch.manual_seed(123)  # another seed: another initialisation, still within the threshold
    return Net(input_dim, hidden_dim, out_dim)
'''},
    "jacobian-broadcast": {"gradient_flow.py": '''
from grader import hookimpl


@hookimpl
def state_jacobian(h_next, W_hh):
    return (1 - h_next * h_next)[:, None] * W_hh.t()
'''},
    "jacobian-einsum": {"gradient_flow.py": '''
import torch
from grader import hookimpl


@hookimpl
def state_jacobian(h_next, W_hh):
    return torch.einsum("j,ij->ji", 1 - h_next.pow(2), W_hh)
'''},
}


@pytest.mark.parametrize("files", [pytest.param(f, id=name) for name, f in ALTERNATIVES.items()])
def test_correct_alternatives_keep_full_marks(extras, submission, files):
    report = extras(submission(files))
    assert report.points == report.max_points, failures(report)


# ------------------------------------------------------------------ what the checks rest on


def test_reference_jacobian_is_autograds():
    import numpy as np
    import torch

    from grader.checks import gradient_flow as gf
    from grader.plugins import reference_hooks

    jacobian = reference_hooks()["state_jacobian"]
    for case in gf.CASES:
        data = gf.jacobian_case(**case)
        assert np.allclose(jacobian(data["h_next"], data["W"]).numpy(), gf.reference_jacobian(**case), rtol=1e-6, atol=1e-7)
    h, W, xw = torch.randn(5), torch.randn(5, 5), torch.randn(5)
    step = lambda h: torch.tanh(xw + h @ W)  # noqa: E731
    assert torch.allclose(jacobian(step(h), W), torch.autograd.functional.jacobian(step, h), atol=1e-6)


def test_reference_chain_is_autograds_and_vanishes_and_explodes():
    import numpy as np

    from grader.checks import gradient_flow as gf

    ref = gf.reference_chain(**gf.CHAIN)
    for gain in gf.CHAIN["gains"]:
        truth = gf.autograd_chain(gf.CHAIN["seed"], gf.CHAIN["num_hiddens"], gf.CHAIN["num_steps"], gain)
        product = ref[str(gain)]["product"]
        assert np.linalg.norm(product - truth) <= 1e-5 * np.linalg.norm(truth), gain
    last = {g: ref[str(g)]["log_norms"][-1] for g in gf.CHAIN["gains"]}
    assert last[0.5] < -8 and -2 < last[1.5] < 2 and last[3.0] > 3, last


def test_sine_threshold_separates_right_from_wrong():
    """Other initialisations of a correct model pass; a model that cannot carry state does not."""
    import torch

    from grader.checks import sine_wave as sw
    from grader.reference.sine_wave import SineRNN

    train = {k: sw.TRAIN[k] for k in ("seed", "hidden_dim", "iterations", "lr")}
    limit = sw.MSE_FACTOR * sw.reference_training(**sw.TRAIN)["mse"]
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        assert sw.train_sine(SineRNN(1, 16, 1), **train)["mse"] < 0.6 * limit, seed

    class Memoryless(SineRNN):  # each step from its own input: what a broken recurrence amounts to
        def forward(self, x, h0):
            B, T, _ = x.shape
            out, h = self.rnn(x.reshape(B * T, 1, -1), h0.expand(1, B * T, -1).contiguous())
            return self.linear(out).reshape(B, T, -1), h[:, -1:]

    torch.manual_seed(0)
    assert sw.train_sine(Memoryless(1, 16, 1), **train)["mse"] > 1.4 * limit


def test_grader_adam_is_torch_adam():
    import torch

    from grader.checks.sine_wave import Adam

    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    ours, theirs = Adam(list(a.parameters()), lr=1e-3), torch.optim.Adam(b.parameters(), lr=1e-3)
    x = torch.randn(8, 4)
    for _ in range(20):
        for model, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            (model(x) ** 2).sum().backward()
            opt.step()
    assert all(torch.allclose(p, q, rtol=1e-6, atol=1e-7) for p, q in zip(a.parameters(), b.parameters()))


def test_report_has_the_lessons_figures(grading):
    report = grading(REFERENCE)
    figures = {ex.name: ex.figures for ex in report.exercises}
    assert {"prediction", "training loss"} <= set(figures["sine_wave"])
    assert "Jacobian products" in figures["gradient_flow"]
    assert len(figures["gradient_flow"]["Jacobian products"]["series"]) == 3
    assert "perplexity" in figures["rnn_concise"]
    clipping = {c.check_id: c for c in report.all_checks()}["train_epoch.clipping"]
    series = clipping.figures["gradient norm"]["series"]
    before, after = series[0]["y"], series[1]["y"]
    assert max(before) > 1 and max(after) <= 1e-3  # log10: scaled gradients well above θ = 1, clipped to it
