"""Mistakes in ``rnn_model``, recognised from the runs its failing checks saw.

Every check of the exercise reads one run: forward and begin_state of the student's model around
seeded layers (``cpu``: the scratch comparison and three layer kinds; ``devices``: two of them
again), and the grader's training loop (``train``). A recogniser reads the part its check judges
and compares it with the reference model re-run with the mistake applied (batch-major rows, a
zero state), or with the exact sizes a mistake leads to (a state shaped like the output sequence,
the sizes torch names in its error, the output layer the model holds).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from grader import hookimpl
from grader.checks.rnn_concise import layer_inputs, make_layer, reference_layer
from grader.checks.rnn_scratch import reference_rnn
from grader.compare import recurrence_tolerance
from grader.definitions import Evidence, Misconception
from grader.hints import hidden_size_mismatch
from grader.judge.misconceptions import close_to
from grader.nets import linear_values, output_layer, set_output_layer
from grader.plugins import reference_hooks

EXERCISE = "rnn_concise."
FORWARD = (EXERCISE + "forward.scratch", EXERCISE + "layers", EXERCISE + "device.*")
EVERYWHERE = (EXERCISE + "forward.scratch", EXERCISE + "layers", EXERCISE + "train", EXERCISE + "begin_state",
              EXERCISE + "device.*")


def _directions(spec: dict) -> int:
    return 2 if spec["bidirectional"] else 1


def _layer_runs(evidence: Evidence) -> Iterator[tuple[dict, dict, dict]]:
    """(spec, case, entry) of each layer kind this check judges: the cpu runs, or those on its device."""
    params, observed = evidence.params, evidence.observed
    if evidence.check_id.startswith(EXERCISE + "device."):
        device = evidence.check_id.rsplit(".", 1)[1]
        for name in params["device_layers"]:
            yield params["layers"][name], params["device_case"], observed["devices"][device][name]
    else:
        for name, spec in params["layers"].items():
            yield spec, params["case"], observed["cpu"][name]


def _forward_runs(evidence: Evidence) -> Iterator[tuple[Optional[dict], dict, dict]]:
    """(spec or None for the scratch comparison, sizes, forward run) of the forward passes this check judges."""
    check, params = evidence.check_id, evidence.params
    if check == EXERCISE + "forward.scratch":
        scratch = params["scratch"]
        sizes = {k: scratch[k] for k in ("vocab_size", "num_hiddens", "num_steps", "batch_size")}
        yield None, sizes, evidence.observed["cpu"]["scratch"]
    elif check == EXERCISE + "layers" or check.startswith(EXERCISE + "device."):
        for spec, case, entry in _layer_runs(evidence):
            yield spec, case, entry.get("forward") or entry


def _first_tensor(record: Any) -> Any:
    items = record.get("items") if isinstance(record, dict) else None
    return next((i for i in items or [] if hasattr(i, "shape")), None)


def _errors(evidence: Evidence) -> list[str]:
    """Every error the runs this check judges raised."""
    observed, found = evidence.observed, []
    if evidence.check_id == EXERCISE + "train":
        parts = [observed.get("train")]
    elif evidence.check_id == EXERCISE + "begin_state":
        parts = [entry.get("begin") for _, _, entry in _layer_runs(evidence)]
    else:
        parts = [run for _, _, run in _forward_runs(evidence)]
        if evidence.check_id != FORWARD[0]:
            parts += [entry.get("begin") for _, _, entry in _layer_runs(evidence)]
    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("error"), str):
            found.append(part["error"])
    return found


# ---------------------------------------------------------------- signatures


def _state_is_output_sequence(evidence: Evidence) -> bool:
    """forward returned (a slice of) the layer's output sequence as the state: a tensor of shape (num_steps, batch,
    num_directions * num_hiddens), or (1, batch, ...) where the state has another shape; in training, the layer
    was handed such a state back, or torch could not detach it in place (a slice is a view)."""
    if evidence.check_id == EXERCISE + "train":
        setup = evidence.params["train"]["setup"]
        for error in _errors(evidence):
            sizes = hidden_size_mismatch(error)
            if "detach views in-place" in error or (sizes and tuple(sizes[1]) == (
                    setup["num_steps"], setup["batch_size"], setup["num_hiddens"]) != tuple(sizes[0])):
                return True
        return False
    shown = False
    for spec, case, run in _forward_runs(evidence):
        got = _first_tensor(run.get("state")) if isinstance(run, dict) else None
        if got is None:
            continue
        D = _directions(spec) if spec else 1
        rows = D * spec["num_layers"] if spec else 1
        T, B, H = case["num_steps"], case["batch_size"], case["num_hiddens"]
        if tuple(got.shape) in ((T, B, D * H), (1, B, D * H)) and tuple(got.shape) != (rows, B, H):
            shown = True
    return shown


def _inputs_not_transposed(evidence: Evidence) -> bool:
    """The layer was given (B, T, V): torch expected a state for T sequences where the state had B."""
    for spec, case, run in _forward_runs(evidence):
        error = run.get("error") if isinstance(run, dict) else None
        sizes = hidden_size_mismatch(error) if isinstance(error, str) else None
        T, B = case["num_steps"], case["batch_size"]
        if sizes and len(sizes[0]) == 3 and T != B and sizes[0][1] == T and sizes[1][1] == B:
            return True
    return False


def _batch_major(ref: np.ndarray, T: int, B: int) -> np.ndarray:
    V = ref.shape[-1]
    return ref.reshape(T, B, V).transpose(1, 0, 2).reshape(T * B, V)


def _references(evidence: Evidence, zero_state: bool = False) -> Iterator[tuple[Any, np.ndarray, float, int, int]]:
    """(the student's outputs, the reference's, tolerance, T, B) of each forward pass this check compares on the cpu."""
    if evidence.check_id.startswith(EXERCISE + "device."):
        return
    for spec, case, run in _forward_runs(evidence):
        if not isinstance(run, dict) or "outputs" not in run:
            continue
        T, B = case["num_steps"], case["batch_size"]
        if spec is None:
            scratch = evidence.params["scratch"]
            ref = reference_rnn(**dict(scratch, nonzero_state=not zero_state))
            outputs, rtol = ref["outputs"], recurrence_tolerance(T)
        else:
            name = next(n for n, s in evidence.params["layers"].items() if s == spec)
            outputs = (_zero_state_layer(json.dumps(spec, sort_keys=True), json.dumps(case, sort_keys=True))
                       if zero_state else reference_layer(name, spec, case)["outputs"])
            rtol = recurrence_tolerance(T * spec["num_layers"])
        yield run["outputs"], outputs, rtol * max(1.0, float(np.abs(outputs).max())), T, B


def _batch_major_rows(evidence: Evidence) -> bool:
    """The outputs are the reference's, rows batch by batch (row b*T + t) instead of step by step (row t*B + b)."""
    shown = False
    for got, ref, atol, T, B in _references(evidence):
        mistaken = _batch_major(ref, T, B)
        if close_to(got, mistaken, ref, atol, atol):
            shown = True
        elif not close_to(got, ref, None, atol, atol):
            return False
    return shown


@lru_cache(maxsize=8)
def _zero_state_layer(spec_json: str, case_json: str) -> np.ndarray:
    """The reference model's outputs on a layer kind's seeded tokens, from a zero state instead of the given one."""
    spec, case = json.loads(spec_json), json.loads(case_json)
    V, H, D = case["vocab_size"], case["num_hiddens"], _directions(spec)
    layer = make_layer(spec["kind"], V, H, spec["num_layers"], spec["bidirectional"], spec["seed"])
    model = reference_hooks()["rnn_model"](layer, V)
    found, _ = output_layer(model, layer, D * H, V)
    set_output_layer(found, *linear_values(spec["seed"], D * H, V))
    inputs = layer_inputs(spec, **case)
    zeros = tuple(torch.zeros_like(s) for s in inputs["state"]) if isinstance(inputs["state"], tuple) \
        else torch.zeros_like(inputs["state"])
    with torch.no_grad():
        outputs, _ = model(inputs["tokens"], zeros)
    return outputs.numpy().copy()


def _ignores_state(evidence: Evidence) -> bool:
    """The outputs are those of a zero state: the state passed to forward never reached the layer."""
    shown = False
    for got, zero, atol, _, _ in _references(evidence, zero_state=True):
        if not close_to(got, zero, None, atol, atol):
            return False
        shown = True
    correct = [ref for _, ref, _, _, _ in _references(evidence)]
    mistaken = [zero for _, zero, _, _, _ in _references(evidence, zero_state=True)]
    return shown and any(not np.allclose(m, c, rtol=1e-3, atol=1e-3) for m, c in zip(mistaken, correct))


def _begin_state_rows(evidence: Evidence) -> bool:
    """begin_state's first axis is 1, num_layers or num_directions where it must be num_directions * num_layers."""
    for spec, case, entry in _layer_runs(evidence):
        got = _first_tensor(entry.get("begin"))
        D, L = _directions(spec), spec["num_layers"]
        B, H = case["batch_size"], case["num_hiddens"]
        if got is not None and len(got.shape) == 3 and tuple(got.shape[1:]) == (B, H) and got.shape[0] != D * L \
                and got.shape[0] in (1, D, L):
            return True
    return False


def _lstm_state_one_tensor(evidence: Evidence) -> bool:
    """For the LSTM, begin_state returned one tensor instead of the tuple (H, C)."""
    return any(spec["kind"] == "LSTM" and isinstance(entry.get("begin"), dict)
               and entry["begin"].get("kind") == "tensor" for spec, _, entry in _layer_runs(evidence))


LINEAR = re.compile(r"should hold one nn\.Linear\((\d+), (\d+)\) \(found ([^)]*\)[^)]*)\)")


def _linears(evidence: Evidence) -> Iterator[tuple[int, int, list[tuple[int, int]], Optional[dict], dict]]:
    """(expected in, out, the nn.Linear sizes found, spec, sizes) where the output layer could not be found."""
    runs: list = []
    if evidence.check_id in (EXERCISE + "forward.scratch", EXERCISE + "train"):
        part = evidence.observed["cpu"]["scratch"] if evidence.check_id == FORWARD[0] else evidence.observed["train"]
        runs.append((None, evidence.params["scratch"], part))
    else:
        runs += [(spec, case, entry) for spec, case, entry in _layer_runs(evidence)]
    for spec, case, entry in runs:
        problem = entry.get("problem") if isinstance(entry, dict) else None
        match = LINEAR.search(problem) if isinstance(problem, str) else None
        if match:
            found = [tuple(int(v) for v in m) for m in re.findall(r"nn\.Linear\((\d+), (\d+)\)", match[3])]
            yield int(match[1]), int(match[2]), found, spec, case


def _linear_ignores_directions(evidence: Evidence) -> bool:
    """A bidirectional layer's output layer takes num_hiddens inputs, not 2 * num_hiddens."""
    return any(spec is not None and spec["bidirectional"] and found == [(case["num_hiddens"], out)]
               and want == 2 * case["num_hiddens"] for want, out, found, spec, case in _linears(evidence))


def _linear_takes_vocab(evidence: Evidence) -> bool:
    """The output layer takes vocab_size inputs where the recurrent layer gives num_directions * num_hiddens."""
    return any(found == [(out, out)] and want != out for want, out, found, _, _ in _linears(evidence))


def _raised(pattern: str) -> Callable[[Evidence], bool]:
    found = re.compile(pattern)
    return lambda evidence: any(found.search(error) for error in _errors(evidence))


@hookimpl
def grader_misconceptions(config):
    return [
        Misconception(
            EXERCISE + "output-sequence-as-state", (*FORWARD, EXERCISE + "train"),
            "forward returns the layer's output sequence Y (or a slice of it) as the state",
            "Y holds every time step's top-layer output, (num_steps, batch, num_directions * num_hiddens); the state "
            "is the layer's second result, (num_directions * num_layers, batch, num_hiddens), and the next minibatch "
            "must start from that. A slice of Y is also a view, which the training loop cannot detach in place.",
            "Y, state = self.rnn(X, state); return output, state", _state_is_output_sequence),
        Misconception(
            EXERCISE + "inputs-not-transposed", FORWARD,
            "the tokens are one-hot encoded as (batch, num_steps, vocab_size), without transposing them",
            "torch's recurrent layers are time-major: they read the first axis as time, so they took the batch for "
            "the time steps and expected a state for num_steps sequences.",
            "X = F.one_hot(inputs.T.long(), self.vocab_size).to(torch.float32)", _inputs_not_transposed),
        Misconception(
            EXERCISE + "batch-major-rows", FORWARD,
            "the output rows are batch-major (row b * num_steps + t) instead of going time step by time step",
            "The layer's output is (num_steps, batch, hidden); reshaping it directly gives row t * batch + b, the "
            "order of the labels Y.T.reshape(-1) and of the scratch model, while transposing it first does not.",
            "output = self.linear(Y.reshape((-1, Y.shape[-1])))", _batch_major_rows),
        Misconception(
            EXERCISE + "ignores-state", FORWARD,
            "forward never passes the state it is given to the recurrent layer",
            "Without it the layer starts every call from a zero state, so nothing carries over from one minibatch or "
            "one predicted character to the next.",
            "Y, state = self.rnn(X, state)", _ignores_state),
        Misconception(
            EXERCISE + "begin-state-rows", (EXERCISE + "begin_state", EXERCISE + "device.*"),
            "begin_state's first axis leaves out the number of layers or of directions",
            "A deep or bidirectional layer keeps one state per layer and direction, so its state is "
            "(num_directions * num_layers, batch, num_hiddens).",
            "shape = (self.num_directions * self.rnn.num_layers, batch_size, self.num_hiddens)", _begin_state_rows),
        Misconception(
            EXERCISE + "lstm-state-one-tensor", (EXERCISE + "begin_state", EXERCISE + "device.*"),
            "begin_state returns one tensor for an nn.LSTM",
            "An LSTM keeps a hidden state and a memory cell, so its state is the tuple (H, C) of two zero tensors.",
            "for an nn.LSTM return (torch.zeros(shape, device=device), torch.zeros(shape, device=device))",
            _lstm_state_one_tensor),
        Misconception(
            EXERCISE + "linear-ignores-directions", (EXERCISE + "layers", EXERCISE + "device.*"),
            "the output layer takes num_hiddens inputs even when the recurrent layer is bidirectional",
            "A bidirectional layer concatenates both directions at every time step, so it outputs "
            "2 * num_hiddens features per step.",
            "self.linear = nn.Linear(self.num_hiddens * self.num_directions, self.vocab_size)",
            _linear_ignores_directions),
        Misconception(
            EXERCISE + "linear-takes-vocab-size", (*FORWARD, EXERCISE + "train"),
            "the output layer takes vocab_size inputs",
            "It reads the recurrent layer's output, num_directions * num_hiddens features per time step, and maps "
            "them to vocab_size scores.",
            "self.linear = nn.Linear(self.num_hiddens * self.num_directions, self.vocab_size)", _linear_takes_vocab),
        Misconception(
            EXERCISE + "params-of-a-module", EVERYWHERE,
            "the code reads .params, which only the scratch model has",
            "This model is an nn.Module: its weights are registered parameters, listed by model.parameters().",
            "list(self.parameters()) (or net.parameters() on the model)", _raised(r"has no attribute 'params'")),
    ]
