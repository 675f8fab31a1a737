"""Mistakes in the scratch RNN: ``rnn``, ``get_params`` and ``init_rnn_state``.

``rnn``: each recogniser rebuilds the check's inputs (:func:`grader.fixtures.rnn_case`, same seed),
re-runs the reference recurrence with one mistake applied and compares the student's outputs (or
final state) with it. A mistake that raises instead (a matrix on the wrong side) is read from the
error: the two shapes torch names tell which operands were multiplied, since the check's sizes
(batch, vocabulary, hidden) differ from one another.

``get_params`` and ``init_rnn_state``: the returned tensors' shapes, flags and value statistics.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Optional

import numpy as np
import torch

from grader import hookimpl
from grader.compare import recurrence_tolerance
from grader.definitions import Evidence, Misconception
from grader.fixtures import rnn_case
from grader.hints import LOCATION
from grader.judge.misconceptions import close_to, values
from grader.wire import TensorData

EXERCISE = "rnn_scratch"
RNN_CHECKS = ("rnn_scratch.rnn.forward", "rnn_scratch.rnn.carries_state", "rnn_scratch.rnn.gradients")
#: checks where a nonzero initial state is passed in: the only ones a recurrence starting from zeros fails
GIVEN_STATE_CHECKS = ("rnn_scratch.rnn.carries_state", "rnn_scratch.rnn.gradients")
#: every check reading a run of rnn, the structural one first: a mistake that raises fails them all alike
ALL_RNN_CHECKS = ("rnn_scratch.rnn.shapes", *RNN_CHECKS, "rnn_scratch.rnn.device.*")
PARAMS_CHECKS = ("rnn_scratch.params.shapes", "rnn_scratch.params.init", "rnn_scratch.params.device.*")
STATE_CHECKS = ("rnn_scratch.state.shape", "rnn_scratch.state.device.*")
CASE_KEYS = ("seed", "vocab_size", "num_hiddens", "num_steps", "batch_size", "nonzero_state")
STEP = "H = torch.tanh(X @ W_xh + H @ W_hh + b_h)"


# ----------------------------------------------------------------- rnn: the recurrence with a mistake


def _step(X, H, W_xh, W_hh, b_h, mistake: str):
    if mistake == "relu":
        return torch.relu(X @ W_xh + H @ W_hh + b_h)
    if mistake == "no-tanh":
        return X @ W_xh + H @ W_hh + b_h
    if mistake == "W_hh-transposed":
        return torch.tanh(X @ W_xh + H @ W_hh.T + b_h)
    if mistake == "sigmoid":
        return torch.sigmoid(X @ W_xh + H @ W_hh + b_h)
    if mistake == "bias-outside-tanh":
        return torch.tanh(X @ W_xh + H @ W_hh) + b_h
    return torch.tanh(X @ W_xh + H @ W_hh + b_h)


def _mistaken_rnn(case: dict, mistake: str) -> tuple[np.ndarray, np.ndarray]:
    W_xh, W_hh, b_h, W_hq, b_q = case["params"]
    H0 = case["state"]
    H = torch.zeros_like(H0) if mistake == "zero-start" else H0
    outputs = []
    for X in case["inputs"]:
        if mistake == "state-reread":
            H = H0
        before = H
        H = _step(X, H, W_xh, W_hh, b_h, mistake)
        if mistake == "output-before-update":
            out = before @ W_hq + b_q
        elif mistake == "no-b_q":
            out = H @ W_hq
        elif mistake == "pre-tanh":
            out = (X @ W_xh + before @ W_hh + b_h) @ W_hq + b_q
        elif mistake == "softmax-outputs":
            out = torch.softmax(H @ W_hq + b_q, dim=1)
        else:
            out = H @ W_hq + b_q
        outputs.append(out)
    final = H0 if mistake == "returns-initial-state" else H
    return torch.cat(outputs, dim=0).numpy(), final.numpy()


@lru_cache(maxsize=64)
def mistaken(mistake: str, *case_values) -> tuple[np.ndarray, np.ndarray]:
    """(outputs, final state) of the recurrence with ``mistake`` on the case with these values ("" for none)."""
    with torch.no_grad():
        return _mistaken_rnn(rnn_case(*case_values), mistake)


def _seen(evidence: Evidence) -> dict:
    """What the probe returned; empty when the student's code raised."""
    return evidence.observed if isinstance(evidence.observed, dict) else {}


def _runs(evidence: Evidence, mistake: str):
    """The mistaken and the correct (outputs, final state) on the check's inputs, and the tolerance."""
    case = tuple(evidence.params[k] for k in CASE_KEYS)
    return mistaken(mistake, *case), mistaken("", *case), recurrence_tolerance(evidence.params["num_steps"])


def _outputs_match(mistake: str) -> Callable[[Evidence], bool]:
    def recognise(evidence: Evidence) -> bool:
        (outputs, _), (correct, _), rtol = _runs(evidence, mistake)
        atol = rtol * max(1.0, float(np.abs(outputs).max()))
        return close_to(_seen(evidence).get("outputs"), outputs, correct, rtol, atol)
    return recognise


def _right_outputs(evidence: Evidence, correct: np.ndarray, rtol: float) -> bool:
    return close_to(_seen(evidence).get("outputs"), correct, None, rtol, rtol * max(1.0, float(np.abs(correct).max())))


def _returns_initial_state(evidence: Evidence) -> bool:
    (_, final), (outputs, correct_final), rtol = _runs(evidence, "returns-initial-state")
    return _right_outputs(evidence, outputs, rtol) and close_to(_seen(evidence).get("final"), final, correct_final, rtol, rtol)


#: an in-place write to a variable named like the state, in the line an error quotes ("in rnn: H[:] = ...")
IN_PLACE_ON_STATE = re.compile(r"in rnn: (?i:h|state)\w*(\[[^\]]*\])*\s*(\[[^\]]*\]\s*=|[-+*/]=|\.\w+_\()")


def _state_overwritten(evidence: Evidence) -> bool:
    if evidence.status == "error":
        # the gradient check's state requires grad, so writing into it raises instead
        return ("leaf Variable that requires grad is being used in an in-place operation" in evidence.message
                and bool(IN_PLACE_ON_STATE.search(evidence.message)))
    observed = _seen(evidence)
    if observed.get("state_untouched", True) or not observed.get("inputs_untouched", True) \
            or not observed.get("params_untouched", True):
        return False
    _, (outputs, final), rtol = _runs(evidence, "")
    return _right_outputs(evidence, outputs, rtol) and close_to(observed.get("final"), final, None, rtol, rtol)


# ----------------------------------------------------------------- rnn: errors naming two operands

#: torch's two wordings of a matrix product whose inner sizes differ (the second on the meta device)
MATMUL_ERRORS = (re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)"),
                 re.compile(r"a and b must have same reduction dim, but got \[(\d+), (\d+)\] X \[(\d+), (\d+)\]"))


def _operands(evidence: Evidence) -> Optional[tuple[str, str]]:
    """The names of the two matrices a failed product multiplied, from their shapes; None when unsure."""
    if evidence.status != "error":
        return None
    p = evidence.params
    B, V, H = p["batch_size"], p["vocab_size"], p["num_hiddens"]
    names = {(B, V): "X", (B, H): "H", (V, H): "W_xh", (H, H): "W_hh", (H, V): "W_hq"}
    if len(names) != 5:
        return None  # two of them have the same shape: the error cannot tell which was meant
    for pattern in MATMUL_ERRORS:
        found = pattern.search(evidence.message)
        if found:
            a, b, c, d = (int(n) for n in found.groups())
            left, right = names.get((a, b)), names.get((c, d))
            return (left, right) if left and right else None
    return None


def _multiplies(left: str, right: str) -> Callable[[Evidence], bool]:
    return lambda evidence: _operands(evidence) == (left, right)


#: the grader's own weighting of the outputs, (T*B, V), against (T, B, V) outputs: raised outside the student's code
STACKED_BROADCAST = re.compile(r"The size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at non-singleton dimension 1")


def _stacked(evidence: Evidence) -> bool:
    p = evidence.params
    T, B, V = p["num_steps"], p["batch_size"], p["vocab_size"]
    outputs = _seen(evidence).get("outputs")
    if isinstance(outputs, TensorData):
        return tuple(outputs.shape) == (T, B, V)
    found = STACKED_BROADCAST.search(evidence.message)
    # a location ("at rnn_scratch.py:12") would mean the student's own code raised it
    return bool(found) and (int(found[1]), int(found[2])) == (B, T * B) and not re.search(LOCATION, evidence.message)


# ----------------------------------------------------------------- get_params

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hq", "b_q")


def _param_shapes(evidence: Evidence) -> tuple[tuple[int, ...], ...]:
    V, H = evidence.params["vocab_size"], evidence.params["num_hiddens"]
    return ((V, H), (H, H), (H,), (H, V), (V,))


def _returned_params(evidence: Evidence) -> Optional[list[TensorData]]:
    observed = _seen(evidence)
    params = observed.get("params") if observed.get("kind") == "sequence" else None
    if not params or len(params) != 5 or not all(isinstance(p, TensorData) for p in params):
        return None
    return params


def _shapes(evidence: Evidence) -> Optional[list[tuple[int, ...]]]:
    params = _returned_params(evidence)
    return [tuple(p.shape) for p in params] if params is not None else None


def _weights_transposed(evidence: Evidence) -> bool:
    """W_xh returned as (H, V) and/or W_hq as (V, H), everything else in place."""
    shapes, want = _shapes(evidence), _param_shapes(evidence)
    if shapes is None or want[0] == want[3] or shapes == list(want):
        return False
    allowed = [(want[0], want[3]), (want[1],), (want[2],), (want[3], want[0]), (want[4],)]
    return all(shape in ok for shape, ok in zip(shapes, allowed))


def _wrong_order(evidence: Evidence) -> bool:
    shapes, want = _shapes(evidence), _param_shapes(evidence)
    if shapes is None or len(set(want)) != 5 or shapes == list(want) or _weights_transposed(evidence):
        return False
    return sorted(shapes) == sorted(want)


def _without_requires_grad(evidence: Evidence) -> bool:
    params = _returned_params(evidence)
    if params is None or [tuple(p.shape) for p in params] != list(_param_shapes(evidence)):
        return False
    device = evidence.params.get("device", "cpu")
    well_made = all(p.is_leaf and p.dtype == "float32" and p.device_type == device for p in params)
    return well_made and not all(p.requires_grad for p in params)


def _not_leaves(evidence: Evidence) -> bool:
    """Every parameter requires grad, but some were computed (e.g. scaled) after requires_grad was set."""
    params = _returned_params(evidence)
    if params is None or [tuple(p.shape) for p in params] != list(_param_shapes(evidence)):
        return False
    return all(p.requires_grad for p in params) and any(not p.is_leaf for p in params)


def _weight_values(evidence: Evidence) -> Optional[list[np.ndarray]]:
    params = _returned_params(evidence)
    if params is None or [tuple(p.shape) for p in params] != list(_param_shapes(evidence)):
        return None
    weights = [values(params[i]) for i in (0, 1, 3)]
    return weights if all(w is not None and w.size > 1 for w in weights) else None


def _uniform_weights(evidence: Evidence) -> bool:
    """Every weight matrix looks uniform on [0, c): nonnegative, max ~ 2 mean, std ~ mean / sqrt(3)."""
    weights = _weight_values(evidence)
    if weights is None:
        return False
    for w in weights:
        mean = float(w.mean())
        if w.min() < 0 or mean <= 0:
            return False
        # a uniform sample of >= 48*48 draws: both ratios within a few percent; a normal one is never nonnegative
        if not (0.9 <= float(w.max()) / (2 * mean) <= 1.1 and 0.9 <= float(w.std()) / (mean / np.sqrt(3)) <= 1.1):
            return False
    return True


def _unit_normal_weights(evidence: Evidence) -> bool:
    """Every weight matrix has standard deviation 1 and mean 0, as torch.randn gives without scaling."""
    weights = _weight_values(evidence)
    if weights is None:
        return False
    return all(abs(float(w.std()) - 1.0) <= 5 / np.sqrt(2 * w.size) and abs(float(w.mean())) <= 5 / np.sqrt(w.size)
               for w in weights)


def _glorot_weights(evidence: Evidence) -> bool:
    """Every weight matrix has mean 0 and the standard deviation sqrt(2 / (fan_in + fan_out)) of Xavier/Glorot init."""
    weights = _weight_values(evidence)
    if weights is None:
        return False
    for w in weights:
        want = np.sqrt(2.0 / sum(w.shape))
        if abs(want - 0.01) < 0.2 * want:  # these sizes cannot tell Xavier from the book's 0.01
            return False
        if abs(float(w.std()) - want) > 5 * want / np.sqrt(2 * w.size) or abs(float(w.mean())) > 5 * want / np.sqrt(w.size):
            return False
    return True


# ----------------------------------------------------------------- init_rnn_state


def _returned_state(evidence: Evidence) -> Optional[TensorData]:
    observed = _seen(evidence)
    items = observed.get("items") or []
    if observed.get("kind") not in ("tuple", "list") or len(items) != 1 or not isinstance(items[0], TensorData):
        return None
    return items[0]


def _state_of_ones(evidence: Evidence) -> bool:
    state = _returned_state(evidence)
    p = evidence.params
    if state is None or tuple(state.shape) != (p["batch_size"], p["num_hiddens"]) or state.array is None:
        return False
    return state.array.size > 0 and bool(np.all(state.array == 1))


def _state_hidden_by_batch(evidence: Evidence) -> bool:
    state = _returned_state(evidence)
    B, H = evidence.params["batch_size"], evidence.params["num_hiddens"]
    return state is not None and B != H and tuple(state.shape) == (H, B)


# ----------------------------------------------------------------- the catalogue


def _rnn(key: str, mistake: str, why: str, fix: str, recognise: Callable[[Evidence], bool],
         checks: tuple[str, ...] = RNN_CHECKS) -> Misconception:
    return Misconception(f"rnn.{key}", checks, mistake, why, fix, recognise)


def rnn_entries() -> list[Misconception]:
    return [
        _rnn("relu-activation", "the hidden state uses ReLU instead of tanh",
             "The book's RNN squashes every new state with tanh, so each H stays in (-1, 1); ReLU lets it grow without bound.",
             STEP, _outputs_match("relu")),
        _rnn("sigmoid-activation", "the hidden state uses sigmoid instead of tanh",
             "Sigmoid squashes into (0, 1), so every hidden unit is positive and centred on 0.5; the book's RNN uses tanh, "
             "whose values lie in (-1, 1) around 0.",
             STEP, _outputs_match("sigmoid")),
        _rnn("no-activation", "the new hidden state is never passed through tanh",
             "Without the nonlinearity the recurrence is linear: H grows or shrinks geometrically and the outputs differ from the first step.",
             STEP, _outputs_match("no-tanh")),
        _rnn("bias-outside-tanh", "the hidden bias b_h is added after tanh instead of inside it",
             "b_h belongs to the sum that tanh squashes; added outside, it shifts every new H out of (-1, 1), and "
             "that shifted H is carried into the next step.",
             STEP, _outputs_match("bias-outside-tanh")),
        _rnn("softmax-outputs", "the outputs are passed through softmax, so rnn returns probabilities instead of logits",
             "rnn must return raw scores, O = H W_hq + b_q: the loss, nn.CrossEntropyLoss, applies log-softmax itself, "
             "and a softmax before it squashes every row into probabilities that sum to 1 and slows learning.",
             "outputs.append(H @ W_hq + b_q), with no softmax", _outputs_match("softmax-outputs")),
        _rnn("outputs-from-pre-activation", "the outputs are computed from the value before tanh, not from the new H",
             "The output layer reads the hidden state, O = H W_hq + b_q with H = tanh(...); the sum inside tanh is only "
             "a step on the way to H.",
             "H = torch.tanh(X @ W_xh + H @ W_hh + b_h), then outputs.append(H @ W_hq + b_q)", _outputs_match("pre-tanh")),
        _rnn("W_hh-transposed", "the recurrent weight is used transposed (H @ W_hh.T)",
             "W_hh has shape (H, H) either way, so nothing fails on shape, but the state is carried into the next step "
             "through the wrong weights: row i of W_hh holds the weights from state unit i.",
             "multiply H @ W_hh, with H of shape (batch, hidden) on the left", _outputs_match("W_hh-transposed")),
        _rnn("output-before-update", "each output is computed from the previous H, before the state update",
             "Every output comes one step late: O_t must read the H_t that step t has just computed, not the state "
             "before it.",
             "in the loop, update H first, then outputs.append(H @ W_hq + b_q)", _outputs_match("output-before-update")),
        _rnn("no-output-bias", "the output bias b_q is never added",
             "The output layer is O = H W_hq + b_q: without b_q every output row is off by the same vector, from the first time step on.",
             "outputs.append(H @ W_hq + b_q)", _outputs_match("no-b_q")),
        _rnn("state-not-carried", "H is read again from `state` at every step, so the state is never carried from one step to the next",
             "Each step must continue from the H the previous step computed; reading the initial state every time makes "
             "every step forget the sequence so far.",
             "unpack H, = state once before the loop and update that H inside it", _outputs_match("state-reread")),
        _rnn("starts-from-zeros", "the recurrence starts from zeros instead of the state passed in",
             "The caller passes the state to continue from, e.g. the H where the previous minibatch ended, so "
             "replacing it with zeros throws away that history.",
             "start the loop from H, = state", _outputs_match("zero-start"), GIVEN_STATE_CHECKS),
        _rnn("returns-initial-state", "rnn returns the initial state instead of the final H",
             "The outputs are right, so the recurrence works; it is which H you return that is wrong: the caller "
             "continues from the returned state, so it must be the H after the last time step.",
             "return torch.cat(outputs, dim=0), (H,), with the H updated in the loop", _returns_initial_state),
        _rnn("state-overwritten-in-place", "the state tensor passed in is overwritten in place (e.g. H[:] = ...)",
             "That tensor belongs to the caller, who may still need it (and autograd refuses in-place writes into "
             "a tensor that requires grad), so the new H must be a new tensor.",
             f"assign a new tensor, {STEP}, instead of writing into H[:]", _state_overwritten),
        _rnn("x-times-W_hh", "the input is multiplied by W_hh where W_xh belongs (X @ W_hh)",
             "X has shape (batch, vocab_size) and only W_xh, of shape (vocab_size, hidden), maps it to the hidden "
             "units; W_hh (hidden, hidden) is the weight of the previous state H.",
             STEP, _multiplies("X", "W_hh"), ALL_RNN_CHECKS),
        _rnn("W_hh-on-the-left", "the recurrent term is written W_hh @ H, with W_hh on the left",
             "H holds one row per sequence of the batch, shape (batch, hidden), so it multiplies W_hh (hidden, hidden) "
             "from the left, as X does W_xh.",
             "torch.mm(H, W_hh), i.e. H @ W_hh", _multiplies("W_hh", "H"), ALL_RNN_CHECKS),
        _rnn("outputs-stacked", "the outputs are stacked as (num_steps, batch, vocab_size) instead of concatenated "
             "into (num_steps * batch, vocab_size)",
             "The loss compares them with the labels one row per (time step, sequence), so the time steps follow one "
             "another along dimension 0.",
             "return torch.cat(outputs, dim=0), (H,)", _stacked, ALL_RNN_CHECKS),
    ]


def params_entries() -> list[Misconception]:
    return [
        Misconception(
            "params.weights-transposed", PARAMS_CHECKS,
            "W_xh or W_hq is created with its two dimensions the wrong way round",
            "The model multiplies row vectors from the left, X @ W_xh and H @ W_hq, so W_xh is (vocab_size, "
            "num_hiddens) and W_hq is (num_hiddens, vocab_size); nn.Linear's (out, in) layout does not apply here.",
            "W_xh = normal((num_inputs, num_hiddens)); W_hq = normal((num_hiddens, num_outputs))",
            _weights_transposed),
        Misconception(
            "params.wrong-order", PARAMS_CHECKS,
            "get_params returns the right five tensors, but in the wrong order",
            "rnn unpacks them by position, W_xh, W_hh, b_h, W_hq, b_q = params, so a tensor in another slot is read "
            "as the wrong parameter (the shape the check names belongs to another tensor).",
            "return [W_xh, W_hh, b_h, W_hq, b_q]", _wrong_order),
        Misconception(
            "params.no-requires-grad", PARAMS_CHECKS,
            "the parameters (or some of them) are created without requires_grad",
            "Autograd fills .grad only for tensors that require it, so after backward() their .grad stays None and "
            "training never updates them.",
            "call param.requires_grad_(True) on every parameter, after scaling it", _without_requires_grad),
        Misconception(
            "params.not-leaves", PARAMS_CHECKS,
            "requires_grad is set before the weights are scaled, so they are not leaf tensors",
            "torch.randn(..., requires_grad=True) * 0.01 is the result of a multiplication: backward() fills .grad "
            "only on leaf tensors, so these weights never receive a gradient.",
            "torch.randn(size=shape, device=device) * 0.01 first, then param.requires_grad_(True)", _not_leaves),
        Misconception(
            "params.uniform-init", ("rnn_scratch.params.init",),
            "the weights are drawn with torch.rand, which is uniform on [0, 1), instead of torch.randn",
            "Uniform draws are all positive, with mean 0.5 (0.005 after * 0.01), so the weights are not centred on 0; "
            "the book draws them from a normal distribution with mean 0 and standard deviation 0.01.",
            "torch.randn(size=shape, device=device) * 0.01", _uniform_weights),
        Misconception(
            "params.unscaled-init", ("rnn_scratch.params.init",),
            "the weights are drawn from N(0, 1): the * 0.01 is missing",
            "torch.randn has standard deviation 1; weights that large saturate tanh from the first step, so "
            "training starts slowly or unstably. The book scales them down to a standard deviation of 0.01.",
            "torch.randn(size=shape, device=device) * 0.01", _unit_normal_weights),
        Misconception(
            "params.xavier-init", ("rnn_scratch.params.init",),
            "the weights use Xavier (Glorot) initialisation instead of N(0, 0.01²)",
            "Xavier init is a sound choice in general, but this exercise asks for the book's scheme, a normal "
            "distribution with standard deviation 0.01 for every weight matrix, whatever its size.",
            "torch.randn(size=shape, device=device) * 0.01", _glorot_weights),
    ]


def state_entries() -> list[Misconception]:
    return [
        Misconception(
            "state.ones", ("rnn_scratch.state.shape",),
            "the initial state is filled with ones instead of zeros",
            "Before the first character there is no history to remember; a state of ones feeds a made-up history "
            "through W_hh into the first step.",
            "return (torch.zeros((batch_size, num_hiddens), device=device),)", _state_of_ones),
        Misconception(
            "state.hidden-by-batch", STATE_CHECKS,
            "the state is created with shape (num_hiddens, batch_size) instead of (batch_size, num_hiddens)",
            "Each row of H is one sequence of the batch: rnn computes H @ W_hh, which needs H as (batch_size, num_hiddens).",
            "return (torch.zeros((batch_size, num_hiddens), device=device),)", _state_hidden_by_batch),
    ]


@hookimpl
def grader_misconceptions(config):
    return [*rnn_entries(), *params_entries(), *state_entries()]
