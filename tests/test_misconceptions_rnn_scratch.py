"""The scratch RNN's misconceptions: each realistic single mistake is named on its most specific check,
the other checks of the same function point there, and correct code is never told it has one.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass

import numpy as np
import pytest

from batch_grading import grade_many, report_of, selected_ids
from conftest import edits, mutate, rewrite
from test_alternatives import STYLES

from grader.checks.rnn_scratch import CASE
from grader.definitions import Evidence
from grader.judge.diagnosis import applicable
from grader.judge.misconceptions import rnn_scratch as catalogue
from grader.results import ERROR, FAILED
from grader.wire import TensorData

F = "rnn_scratch.py"
STEP = "H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)"
OUT = "outputs.append(torch.mm(H, W_hq) + b_q)"
NORMAL = "torch.randn(size=shape, device=device) * 0.01"
ZEROS = "(torch.zeros((batch_size, num_hiddens), device=device),)"


@dataclass(frozen=True)
class Mistake:
    hook: str
    files: dict
    #: the misconception that must name it
    key: str
    #: the check that carries the diagnosis (the others of the hook say "same cause as" it)
    carrier: str


def rnn_mistake(files: dict, key: str, carrier: str = "rnn.forward") -> Mistake:
    return Mistake("rnn", files, f"rnn.{key}", f"rnn_scratch.{carrier}")


PRE_TANH = """
def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    outputs = []
    for X in inputs:
        A = X @ W_xh + H @ W_hh + b_h
        H = torch.tanh(A)
        outputs.append(A @ W_hq + b_q)
    return torch.cat(outputs, dim=0), (H,)
"""

MISTAKES = {
    "relu": rnn_mistake(mutate(F, "H = torch.tanh(", "H = torch.relu("), "relu-activation"),
    "sigmoid": rnn_mistake(mutate(F, "H = torch.tanh(", "H = torch.sigmoid("), "sigmoid-activation"),
    "no-tanh": rnn_mistake(mutate(F, STEP, "H = torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h"), "no-activation"),
    "outputs-from-pre-tanh": rnn_mistake(rewrite("rnn", PRE_TANH), "outputs-from-pre-activation"),
    "W_hh-transposed": rnn_mistake(mutate(F, "torch.mm(H, W_hh)", "torch.mm(H, W_hh.T)"), "W_hh-transposed"),
    "output-before-update": rnn_mistake(mutate(F, f"        {STEP}\n        {OUT}\n", f"        {OUT}\n        {STEP}\n"),
                                        "output-before-update"),
    "forgets-b_q": rnn_mistake(mutate(F, OUT, "outputs.append(torch.mm(H, W_hq))"), "no-output-bias"),
    "softmax-outputs": rnn_mistake(mutate(F, OUT, "outputs.append(torch.softmax(torch.mm(H, W_hq) + b_q, dim=1))"),
                                   "softmax-outputs"),
    "bias-outside-tanh": rnn_mistake(mutate(F, STEP, "H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh)) + b_h"),
                                     "bias-outside-tanh"),
    "reads-state-in-the-step": rnn_mistake(mutate(F, "torch.mm(H, W_hh)", "torch.mm(state[0], W_hh)"), "state-not-carried"),
    "unpacks-state-in-the-loop": rnn_mistake(
        mutate(F, "    H, = state\n    outputs = []\n    for X in inputs:\n", "    outputs = []\n    for X in inputs:\n        H, = state\n"),
        "state-not-carried"),
    "starts-from-zeros": rnn_mistake(mutate(F, "H, = state", "H = torch.zeros_like(state[0])"), "starts-from-zeros",
                                     "rnn.carries_state"),
    "returns-initial-state": rnn_mistake(mutate(F, "return torch.cat(outputs, dim=0), (H,)", "return torch.cat(outputs, dim=0), state"),
                                         "returns-initial-state"),
    "overwrites-state-in-place": rnn_mistake(mutate(F, "        H = torch.tanh(", "        H[:] = torch.tanh("),
                                             "state-overwritten-in-place"),
    # the seed article's recurrence: the input multiplied by the recurrent weight
    "x-times-W_hh": rnn_mistake(mutate(F, "torch.mm(X, W_xh)", "torch.mm(X, W_hh)"), "x-times-W_hh", "rnn.shapes"),
    "W_hh-on-the-left": rnn_mistake(mutate(F, "torch.mm(H, W_hh)", "torch.mm(W_hh, H)"), "W_hh-on-the-left", "rnn.shapes"),
    "outputs-stacked": rnn_mistake(mutate(F, "torch.cat(outputs, dim=0)", "torch.stack(outputs)"), "outputs-stacked", "rnn.shapes"),

    "params-weights-first": Mistake("get_params", mutate(F, "params = [W_xh, W_hh, b_h, W_hq, b_q]", "params = [W_xh, W_hh, W_hq, b_h, b_q]"),
                                    "params.wrong-order", "rnn_scratch.params.shapes"),
    "params-W_xh-H-by-V": Mistake("get_params", mutate(F, "W_xh = normal((num_inputs, num_hiddens))", "W_xh = normal((num_hiddens, num_inputs))"),
                                  "params.weights-transposed", "rnn_scratch.params.shapes"),
    "params-out-in-layout": Mistake("get_params", edits(F, ("W_xh = normal((num_inputs, num_hiddens))", "W_xh = normal((num_hiddens, num_inputs))"),
                                                        ("W_hq = normal((num_hiddens, num_outputs))", "W_hq = normal((num_outputs, num_hiddens))")),
                                    "params.weights-transposed", "rnn_scratch.params.shapes"),
    "params-no-requires-grad": Mistake("get_params", mutate(F, "        param.requires_grad_(True)\n", "        pass\n"),
                                       "params.no-requires-grad", "rnn_scratch.params.shapes"),
    "params-requires-grad-before-scaling": Mistake(
        "get_params", edits(F, (NORMAL, "torch.randn(size=shape, device=device, requires_grad=True) * 0.01"),
                            ("    for param in params:\n        param.requires_grad_(True)\n", ""),
                            ("torch.zeros(num_hiddens, device=device)", "torch.zeros(num_hiddens, device=device, requires_grad=True)"),
                            ("torch.zeros(num_outputs, device=device)", "torch.zeros(num_outputs, device=device, requires_grad=True)")),
        "params.not-leaves", "rnn_scratch.params.shapes"),
    "params-torch-rand": Mistake("get_params", mutate(F, "torch.randn(size=shape", "torch.rand(size=shape"),
                                 "params.uniform-init", "rnn_scratch.params.init"),
    "params-std-1": Mistake("get_params", mutate(F, NORMAL, "torch.randn(size=shape, device=device)"),
                            "params.unscaled-init", "rnn_scratch.params.init"),

    "state-ones": Mistake("init_rnn_state", mutate(F, ZEROS, "(torch.ones((batch_size, num_hiddens), device=device),)"),
                          "state.ones", "rnn_scratch.state.shape"),
    "state-hidden-by-batch": Mistake("init_rnn_state", mutate(F, ZEROS, "(torch.zeros((num_hiddens, batch_size), device=device),)"),
                                     "state.hidden-by-batch", "rnn_scratch.state.shape"),
}

#: the reference and the correct styles of the scratch RNN: nothing to name
CORRECT = {"reference": {}, **{name: files for name, files in STYLES.items() if name.startswith("rnn-")}}


@pytest.fixture(scope="module")
def reports(request, runner, tmp_path_factory):
    names = [n for n in selected_ids(request) if n in MISTAKES or n in CORRECT]
    cases = {n: (MISTAKES[n].files if n in MISTAKES else CORRECT[n]) for n in names}
    return grade_many(runner, tmp_path_factory.mktemp("rnn-misconceptions"), cases)


def failures(report) -> str:
    return "\n".join(f"  {c.check_id} [{c.status}] ({c.misconception or '-'}) {c.message}"
                     for c in report.all_checks() if c.status != "passed")


@pytest.mark.parametrize("name", list(MISTAKES))
def test_the_mistake_is_named_once_on_its_most_specific_check(reports, name: str):
    mistake = MISTAKES[name]
    report = report_of(reports, name)
    shown = failures(report)
    failing = [c for c in report.all_checks() if c.status != "passed" and mistake.hook in c.hooks]
    carrier = {c.check_id: c for c in failing}.get(mistake.carrier)
    assert carrier is not None, f"{mistake.carrier} passed:\n{shown}"
    assert carrier.misconception == mistake.key and not carrier.same_cause_as, shown
    assert carrier.message.startswith("Likely mistake: ") and "What the check saw: " in carrier.details, shown
    for other in failing:
        if other is not carrier:
            assert other.same_cause_as == mistake.carrier, shown
            assert other.message.startswith(f"same cause as {mistake.carrier} ("), shown
    # nothing else is diagnosed: the mistake lives in one function
    assert not [c.check_id for c in report.all_checks() if c.misconception and mistake.hook not in c.hooks], shown


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_code_is_told_no_misconception(reports, name: str):
    report = report_of(reports, name)
    assert report.points == report.max_points, failures(report)
    assert not [c.check_id for c in report.all_checks() if c.misconception or c.same_cause_as]


# ----------------------------------------------------------------- the catalogue and its recognisers, on hand-made evidence


def test_every_entry_names_real_checks_and_reads_whole():
    from grader.config import RunConfig
    from grader.judge import diagnosis, engine
    from grader.plugins import get_plugin_manager

    ids = [c.id for c in engine.plan(get_plugin_manager(), RunConfig()).checks]
    for entry in catalogue.grader_misconceptions(None):
        for pattern in entry.checks:
            assert fnmatch.filter(ids, pattern), f"{entry.key}: no check {pattern}"
        wording = entry.wording()
        assert "…" not in wording and not wording.endswith("..."), entry.key
        assert len(entry.mistake) <= diagnosis.CAUSE_LIMIT, f"{entry.key}: 'same cause as' would cut the mistake"
        assert entry.why.endswith(".") and not entry.fix.endswith("."), entry.key


ENTRIES = {m.key: m for m in catalogue.grader_misconceptions(None)}
FORWARD = dict(CASE, nonzero_state=False)
GIVEN_STATE = dict(CASE, seed=11, nonzero_state=True)


def tensor(array: np.ndarray, requires_grad: bool = False, device: str = "cpu") -> TensorData:
    array = np.asarray(array, dtype=np.float32)
    return TensorData("float32", array.shape, device, requires_grad, True, False, None if device == "meta" else array)


def claims(check_id: str, observed, params: dict, status: str = FAILED, message: str = "") -> list[str]:
    """The keys of every entry for ``check_id`` that recognises this evidence."""
    evidence = Evidence(check_id, observed, params, status, message)
    found = []
    for entry in applicable(check_id, ENTRIES.values()):
        try:
            matched = entry.recognise(evidence)
        except Exception:  # noqa: BLE001 - no claim, as in the grader (e.g. no outputs to read after an error)
            matched = False
        if matched:
            found.append(entry.key)
    return found


RECURRENCE_MISTAKES = {"relu": "rnn.relu-activation", "sigmoid": "rnn.sigmoid-activation", "no-tanh": "rnn.no-activation",
                       "pre-tanh": "rnn.outputs-from-pre-activation", "W_hh-transposed": "rnn.W_hh-transposed",
                       "output-before-update": "rnn.output-before-update", "no-b_q": "rnn.no-output-bias",
                       "state-reread": "rnn.state-not-carried", "zero-start": "rnn.starts-from-zeros",
                       "returns-initial-state": "rnn.returns-initial-state",
                       "softmax-outputs": "rnn.softmax-outputs", "bias-outside-tanh": "rnn.bias-outside-tanh"}


def rnn_run(params: dict, mistake: str = "", state_untouched: bool = True) -> dict:
    outputs, final = catalogue.mistaken(mistake, *(params[k] for k in catalogue.CASE_KEYS))
    return {"outputs": tensor(outputs), "final": tensor(final), "state_kind": "tuple", "state_len": 1,
            "inputs_untouched": True, "state_untouched": state_untouched, "params_untouched": True}


def test_each_recurrence_mistake_is_told_apart_from_the_others_and_from_the_right_answer():
    check = "rnn_scratch.rnn.carries_state"
    for mistake, key in RECURRENCE_MISTAKES.items():
        assert claims(check, rnn_run(GIVEN_STATE, mistake), GIVEN_STATE) == [key], mistake
    assert claims(check, rnn_run(GIVEN_STATE), GIVEN_STATE) == []
    # from a zero state, starting from zeros is right: the forward check cannot tell, so it claims nothing
    assert claims("rnn_scratch.rnn.forward", rnn_run(FORWARD, "zero-start"), FORWARD) == []
    assert claims(check, rnn_run(GIVEN_STATE, state_untouched=False), GIVEN_STATE) == ["rnn.state-overwritten-in-place"]


def test_a_matrix_product_error_names_its_operands_from_the_check_sizes():
    B, V, H = CASE["batch_size"], CASE["vocab_size"], CASE["num_hiddens"]
    where = " at rnn_scratch.py:37 in rnn: H = torch.tanh(...)"

    def error(text: str, params: dict = FORWARD, check: str = "rnn_scratch.rnn.shapes") -> list[str]:
        return claims(check, None, params, ERROR, f"rnn raised RuntimeError: {text}{where}")

    assert error(f"mat1 and mat2 shapes cannot be multiplied ({B}x{V} and {H}x{H})") == ["rnn.x-times-W_hh"]
    assert error(f"mat1 and mat2 shapes cannot be multiplied ({H}x{H} and {B}x{H})") == ["rnn.W_hh-on-the-left"]
    assert error(f"a and b must have same reduction dim, but got [{B}, {V}] X [{H}, {H}].",
                 dict(FORWARD, device="meta"), "rnn_scratch.rnn.device.meta") == ["rnn.x-times-W_hh"]
    assert error(f"mat1 and mat2 shapes cannot be multiplied ({B}x{H} and {V}x{H})") == []  # H @ W_xh: not these two
    # sizes where X and H have the same shape: the error cannot say which was multiplied
    assert error(f"mat1 and mat2 shapes cannot be multiplied ({B}x{H} and {H}x{H})", dict(FORWARD, vocab_size=H)) == []


def test_the_state_written_in_place_is_read_from_the_line_the_error_quotes():
    leaf = "rnn raised RuntimeError: a leaf Variable that requires grad is being used in an in-place operation. "
    check = "rnn_scratch.rnn.gradients"
    assert claims(check, None, GIVEN_STATE, ERROR, leaf + "at rnn_scratch.py:37 in rnn: H[:] = torch.tanh(A)") \
        == ["rnn.state-overwritten-in-place"]
    assert claims(check, None, GIVEN_STATE, ERROR, leaf + "at rnn_scratch.py:36 in rnn: W_hh[:] = W_hh * 2") == []
    assert claims(check, None, GIVEN_STATE, ERROR, leaf.strip()) == []


def test_stacked_outputs_are_named_on_every_check_that_saw_them():
    T, B, V = CASE["num_steps"], CASE["batch_size"], CASE["vocab_size"]
    assert claims("rnn_scratch.rnn.shapes", {"outputs": tensor(np.zeros((T, B, V)))}, FORWARD) == ["rnn.outputs-stacked"]
    # the gradient check weights the outputs itself: torch's broadcast error, raised outside the student's code
    broadcast = f"The size of tensor a ({B}) must match the size of tensor b ({T * B}) at non-singleton dimension 1"
    assert claims("rnn_scratch.rnn.gradients", None, GIVEN_STATE, ERROR, f"rnn raised RuntimeError: {broadcast}") \
        == ["rnn.outputs-stacked"]
    assert claims("rnn_scratch.rnn.gradients", None, GIVEN_STATE, ERROR,
                  f"rnn raised RuntimeError: {broadcast} at rnn_scratch.py:40 in rnn: Y = Y * w") == []


PARAMS = dict(vocab_size=28, num_hiddens=64, device="cpu")


def parameters(weights, biases=np.zeros, requires_grad: bool = True, order=(0, 1, 2, 3, 4), device: str = "cpu") -> dict:
    V, H = PARAMS["vocab_size"], PARAMS["num_hiddens"]
    made = [weights((V, H)), weights((H, H)), biases((H,)), weights((H, V)), biases((V,))]
    return {"kind": "sequence", "params": [tensor(made[i], requires_grad, device) for i in order], "distinct": True}


def test_parameter_mistakes_are_read_from_shapes_flags_and_value_statistics():
    rng = np.random.default_rng(0)
    normal = lambda shape: rng.standard_normal(shape) * 0.01  # noqa: E731
    check = "rnn_scratch.params.init"
    assert claims(check, parameters(normal), PARAMS) == []
    assert claims(check, parameters(normal, order=(0, 1, 3, 2, 4)), PARAMS) == ["params.wrong-order"]
    # W_xh and W_hq in each other's place look exactly like both transposed: named as transposed, not as the order
    assert claims(check, parameters(normal, order=(3, 1, 2, 0, 4)), PARAMS) == ["params.weights-transposed"]
    assert claims(check, parameters(normal, requires_grad=False), PARAMS) == ["params.no-requires-grad"]
    scaled_after = parameters(normal)
    scaled_after["params"][0] = dataclasses.replace(scaled_after["params"][0], is_leaf=False, has_grad_fn=True)
    assert claims(check, scaled_after, PARAMS) == ["params.not-leaves"]
    assert claims("rnn_scratch.params.device.meta", parameters(normal, requires_grad=False, device="meta"),
                  dict(PARAMS, device="meta")) == ["params.no-requires-grad"]
    assert claims(check, parameters(lambda shape: rng.random(shape) * 0.01), PARAMS) == ["params.uniform-init"]
    assert claims(check, parameters(lambda shape: rng.random(shape)), PARAMS) == ["params.uniform-init"]
    assert claims(check, parameters(rng.standard_normal), PARAMS) == ["params.unscaled-init"]
    assert claims(check, parameters(lambda shape: rng.standard_normal(shape) * 0.1), PARAMS) == []  # another scale: no claim


def test_state_mistakes():
    size = dict(batch_size=5, num_hiddens=48, device="cpu")
    state = lambda array: {"kind": "tuple", "items": [tensor(array)]}  # noqa: E731
    assert claims("rnn_scratch.state.shape", state(np.ones((5, 48))), size) == ["state.ones"]
    assert claims("rnn_scratch.state.shape", state(np.zeros((48, 5))), size) == ["state.hidden-by-batch"]
    assert claims("rnn_scratch.state.shape", state(np.full((5, 48), 0.5)), size) == []
    assert claims("rnn_scratch.state.shape", state(np.zeros((5, 5))), dict(size, num_hiddens=5)) == []
