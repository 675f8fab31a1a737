"""Checks for ``rnn_model``: the concise model equals the scratch one, handles every layer kind, and trains.

How the grader sets the weights: the model must use the ``rnn_layer`` it is
given (the grader writes into that layer) and hold one registered
``nn.Linear(num_directions * num_hiddens, vocab_size)`` as its output layer
(found among ``model.modules()``; a single read-out parameter of shape
(V, D*H) or (D*H, V) plus a (V,) bias is accepted too). With the scratch
reference's parameters copied in (``weight_ih = W_xh.T``, ``weight_hh = W_hh.T``,
``bias_ih = b_h``, ``bias_hh = 0``, ``linear.weight = W_hq.T``,
``linear.bias = b_q``) its outputs must equal the scratch model's.
"""

from __future__ import annotations

import functools
import json
import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from grader import hookimpl, refcache
from grader.book import SeqDataLoader, sgd
from grader.checks.rnn_scratch import reference_rnn
from grader.compare import check_allclose, check_tensor_meta, named_shape, recurrence_tolerance
from grader.corpus import corpus_facts, corpus_spec, vocab_and_ids
from grader.definitions import Check, Probe
from grader.figures import perplexity_chart
from grader.fixtures import rnn_case
from grader.hints import explain_error, hidden_size_mismatch, with_device_hint
from grader.nets import linear_values, output_layer, set_output_layer, state_record, unregistered, uses_layer
from grader.plugins import reference_hooks
from grader.results import ERROR, Verdict
from grader.secret import secret_params
from grader.wire import TensorData

EXERCISE = "rnn_concise"
#: the scratch comparison: rnn_case's saturating parameters and a state that is not zero
SCRATCH = dict(seed=17, vocab_size=28, num_hiddens=32, num_steps=10, batch_size=3, nonzero_state=True)
#: layer kinds beyond a single nn.RNN, each compared with the reference model on the same layer
LAYERS = {
    "deep_bi_rnn": dict(kind="RNN", num_layers=2, bidirectional=True, seed=21),
    "gru": dict(kind="GRU", num_layers=1, bidirectional=False, seed=22),
    "lstm": dict(kind="LSTM", num_layers=2, bidirectional=False, seed=23),
}
# every axis of a checked shape differs (rows 4, 2 or 1; batch 5; hidden 16; steps 9; vocab 28), so a message
# naming a shape shows which axis is wrong
LAYER_CASE = dict(vocab_size=28, num_hiddens=16, num_steps=9, batch_size=5)
LAYER_TITLES = {"deep_bi_rnn": "2-layer bidirectional nn.RNN", "gru": "nn.GRU", "lstm": "2-layer nn.LSTM"}
#: training: the seeded budget and the band around the reference concise model's perplexity
TRAIN = dict(num_hiddens=32, batch_size=16, num_steps=16, lr=2.0, seed=0)
EPOCHS = 4
BAND = 0.05
NUM_PREDS = 12


# ----------------------------------------------------------------- building blocks (runner and judge)


def make_layer(kind: str, vocab_size: int, num_hiddens: int, num_layers: int, bidirectional: bool, seed: int):
    """A time-major torch recurrent layer with seeded parameters (PyTorch's own scale)."""
    layer = getattr(nn, kind)(vocab_size, num_hiddens, num_layers=num_layers, bidirectional=bidirectional)
    g = torch.Generator().manual_seed(seed)
    bound = 1 / math.sqrt(num_hiddens)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
    return layer


def layer_inputs(spec: dict, vocab_size: int, num_hiddens: int, num_steps: int, batch_size: int) -> dict:
    """Seeded tokens (B, T) and a non-zero starting state in the layer kind's format."""
    g = torch.Generator().manual_seed(spec["seed"] + 1000)
    rows = (2 if spec["bidirectional"] else 1) * spec["num_layers"]
    tokens = torch.randint(vocab_size, (batch_size, num_steps), generator=g)

    def state():
        return torch.tanh(torch.randn(rows, batch_size, num_hiddens, generator=g))

    return {"tokens": tokens, "state": (state(), state()) if spec["kind"] == "LSTM" else state()}


def scratch_layer(seed: int, vocab_size: int, num_hiddens: int, num_steps: int, batch_size: int, nonzero_state: bool):
    """An nn.RNN holding the scratch case's parameters, the read-out's weights, tokens (B, T) and state (1, B, H)."""
    case = rnn_case(seed, vocab_size, num_hiddens, num_steps, batch_size, nonzero_state)
    W_xh, W_hh, b_h, W_hq, b_q = case["params"]
    layer = nn.RNN(vocab_size, num_hiddens)
    with torch.no_grad():
        layer.weight_ih_l0.copy_(W_xh.T)
        layer.weight_hh_l0.copy_(W_hh.T)
        layer.bias_ih_l0.copy_(b_h)
        layer.bias_hh_l0.zero_()
    return {"layer": layer, "linear": (W_hq.T.contiguous(), b_q), "tokens": case["inputs"].argmax(-1).T.contiguous(),
            "state": case["state"].unsqueeze(0)}


def _wire(model: Any, layer: Any, in_features: int, vocab_size: int) -> tuple[Any, str | None]:
    """The model's read-out, or what keeps the grader from setting its weights."""
    if not isinstance(model, nn.Module):
        return None, f"rnn_model should return an nn.Module, but returned a {type(model).__name__}"
    if not uses_layer(model, layer):
        hidden = unregistered(model)
        if hidden:
            return None, (f"the model keeps modules in a plain Python list or dict ({', '.join(hidden)}), so PyTorch does "
                          "not see them; assign the layer to an attribute (self.rnn = rnn_layer)")
        return None, ("the model does not hold the rnn_layer it was given as a submodule: store that very layer "
                      "(self.rnn = rnn_layer) instead of building a new one")
    return output_layer(model, layer, in_features, vocab_size)


def _forward(model: Any, tokens: Any, state: Any) -> dict:
    result = model(tokens, state)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return {"kind": type(result).__name__}
    outputs, new_state = result
    return {"kind": "pair", "outputs": outputs if isinstance(outputs, torch.Tensor) else None,
            "outputs_kind": type(outputs).__name__, "state": state_record(new_state)}


# ----------------------------------------------------------------- probe: one run for every check


def probe_concise(ctx, scratch: dict, layers: dict, case: dict, devices: list, device_layers: list, device_case: dict,
                  train: dict) -> Any:
    """Every check of the exercise reads its part of this one run (one process start instead of five)."""
    rnn_model = ctx.student("rnn_model")
    out = {"cpu": _model_runs(ctx, rnn_model, scratch, layers, case, "cpu")}
    out["devices"] = {device: _model_runs(ctx, rnn_model, None, {k: layers[k] for k in device_layers}, device_case, device)
                      for device in devices}
    out["train"] = ctx.attempt(lambda: train_and_predict(rnn_model, ctx.reference, **train))
    return out


def _model_runs(ctx, rnn_model: Any, scratch: Any, layers: dict, case: dict, device: str) -> dict:
    dev = torch.device(device)
    out: dict[str, Any] = {}
    if scratch:
        built = scratch_layer(**scratch)
        model = rnn_model(built["layer"], scratch["vocab_size"])
        found, problem = _wire(model, built["layer"], scratch["num_hiddens"], scratch["vocab_size"])
        if problem:
            out["scratch"] = {"problem": problem}
        else:
            set_output_layer(found, *built["linear"])
            tokens = built["tokens"].clone()
            with torch.no_grad():
                run = ctx.attempt(lambda: _forward(model, tokens, built["state"].clone()))
            out["scratch"] = dict(run, untouched=bool(torch.equal(tokens, built["tokens"])))
    for name, spec in layers.items():
        V, H, B = case["vocab_size"], case["num_hiddens"], case["batch_size"]
        layer = make_layer(spec["kind"], V, H, spec["num_layers"], spec["bidirectional"], spec["seed"])
        model = rnn_model(layer, V)
        D = 2 if spec["bidirectional"] else 1
        found, problem = _wire(model, layer, D * H, V)
        if found:
            set_output_layer(found, *linear_values(spec["seed"], D * H, V))
        if isinstance(model, torch.nn.Module) and device != "cpu":
            moved = ctx.attempt(lambda: model.to(dev))
            if isinstance(moved, dict) and "error" in moved:
                problem = problem or explain_error(f"model.to('{device}')", moved["error"], returned_by="rnn_model")
        entry: dict[str, Any] = {"problem": problem} if problem else {}
        # begin_state needs no read-out, so it is judged even when the read-out could not be set
        entry["begin"] = ctx.attempt(lambda: state_record(model.begin_state(device=dev, batch_size=B)))
        if problem:
            out[name] = entry
            continue
        inputs = layer_inputs(spec, **case)
        state = tuple(s.to(dev) for s in inputs["state"]) if isinstance(inputs["state"], tuple) else inputs["state"].to(dev)
        with torch.no_grad():
            entry["forward"] = ctx.attempt(lambda: _forward(model, inputs["tokens"].to(dev), state))
        out[name] = entry
    return out


# ----------------------------------------------------------------- reference (judge)


@lru_cache(maxsize=8)
def _reference_layer(name: str, spec_json: str, case_json: str) -> dict:
    spec, case = json.loads(spec_json), json.loads(case_json)
    V, H = case["vocab_size"], case["num_hiddens"]
    D = 2 if spec["bidirectional"] else 1
    layer = make_layer(spec["kind"], V, H, spec["num_layers"], spec["bidirectional"], spec["seed"])
    model = reference_hooks()["rnn_model"](layer, V)
    found, _ = output_layer(model, layer, D * H, V)
    set_output_layer(found, *linear_values(spec["seed"], D * H, V))
    inputs = layer_inputs(spec, **case)
    with torch.no_grad():
        outputs, state = model(inputs["tokens"], inputs["state"])
    states = list(state) if isinstance(state, tuple) else [state]
    return {"outputs": outputs.numpy().copy(), "states": [s.numpy().copy() for s in states],
            "magnitude": float(outputs.abs().max()), "rows": D * spec["num_layers"]}


def reference_layer(name: str, spec: dict, case: dict) -> dict:
    return _reference_layer(name, json.dumps(spec, sort_keys=True), json.dumps(case, sort_keys=True))


# ----------------------------------------------------------------- judges


def _layer_hint(error: str) -> str:
    """What an error raised by the recurrent layer inside forward usually means here, or ""."""
    sizes = hidden_size_mismatch(error)
    if sizes and len(sizes[0]) == len(sizes[1]) == 3 and sizes[1][:2] == sizes[0][1::-1] and sizes[0][0] != sizes[0][1]:
        return ("the state's first two axes are swapped: begin_state should return zeros of shape "
                "(num_directions * num_layers, batch_size, num_hiddens)")
    if sizes and sizes[0][1:2] != sizes[1][1:2]:
        return ("the inputs arrive as (B, T) token indices and torch's recurrent layers are time-major: "
                "one-hot encode inputs.T to get (T, B, V)")
    if "input.size(-1) must be equal to input_size" in error:
        return "one-hot encode the tokens with vocab_size classes: F.one_hot(inputs.T, vocab_size)"
    if "expected scalar type" in error or "dtype" in error.lower():
        return "one-hot vectors are int64: convert them with .to(torch.float32) before the layer"
    return ""


#: what each axis of a checked tensor is
OUTPUT_AXES = ("num_steps * batch_size", "vocab_size")
STATE_AXES = ("num_directions * num_layers", "batch_size", "num_hiddens")


def _outputs_problem(run: dict, T: int, B: int, V: int, device: str, what: str) -> str | None:
    if "problem" in run:
        return run["problem"]
    if "error" in run:
        return f"{what}: " + explain_error("forward", run["error"], hint=_layer_hint(run["error"]), returned_by="rnn_model",
                                           sizes=dict(vocab_size=V, batch_size=B, num_steps=T))
    if run.get("kind") != "pair":
        return f"{what}: forward should return (outputs, state), but returned a {run.get('kind')}"
    if run["outputs"] is None:
        return f"{what}: the outputs should be a tensor, but are a {run['outputs_kind']}"
    got = run["outputs"]
    problem = check_tensor_meta(f"{what}: the output", (T * B, V), got, device=device, axes=OUTPUT_AXES)
    if problem and isinstance(got, TensorData) and tuple(got.shape) == (T, B, V):
        problem += "; reshape the layer's (T, B, D*H) output to (T*B, D*H) before the linear layer"
    return problem


def _state_problem(record: dict, shape: tuple, lstm: bool, device: str, what: str, sequence: tuple = ()) -> str | None:
    """What is wrong with a state record (``sequence``: the shape of the layer's output sequence, for a returned state)."""
    problem = _state_record_problem(record, shape, lstm, device, what)
    got = next((i for i in record.get("items", []) if isinstance(i, TensorData)), None)
    if problem and sequence and got is not None and tuple(got.shape) == tuple(sequence):
        return (f"{what} has the shape of the layer's output sequence Y, "
                f"{named_shape(sequence, ('num_steps', 'batch_size', 'num_directions * num_hiddens'))}, but should be "
                f"{named_shape(shape, STATE_AXES)}: return the state the layer returns (Y, state = self.rnn(X, state))")
    return problem


def _state_record_problem(record: dict, shape: tuple, lstm: bool, device: str, what: str) -> str | None:
    items = record.get("items", [])
    if lstm:
        if record["kind"] not in ("tuple", "list") or len(items) != 2:
            return (f"{what} should be a tuple (H, C) of two tensors for an LSTM, but is "
                    + (f"a {record['kind']} of {len(items)} items" if record["kind"] in ("tuple", "list") else f"a {record['kind']}"))
        for label, item in zip(("H", "C"), items):
            problem = check_tensor_meta(f"{what}'s {label}", shape, item, device=device, axes=STATE_AXES)
            if problem:
                return problem
        return None
    if record["kind"] != "tensor":
        inner = f" of {len(items)} items" if record["kind"] in ("tuple", "list") else ""
        return (f"{what} should be one tensor for nn.RNN and nn.GRU (the layer takes and returns a bare tensor), "
                f"but is a {record['kind']}{inner}; only an LSTM's state is a tuple (H, C)")
    return check_tensor_meta(what, shape, items[0], device=device, axes=STATE_AXES)


def _batch_major(ref: np.ndarray, T: int, B: int) -> np.ndarray:
    V = ref.shape[-1]
    return ref.reshape(T, B, V).transpose(1, 0, 2).reshape(T * B, V)


def _close(ref: np.ndarray, got: TensorData, rtol: float, atol: float) -> bool:
    return got.array is not None and got.array.shape == ref.shape and bool(
        np.allclose(got.array.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol))


def judge_scratch(observed: Any, scratch: dict, **_: Any) -> Verdict:
    run = observed["cpu"]["scratch"]
    T, B, V, H = scratch["num_steps"], scratch["batch_size"], scratch["vocab_size"], scratch["num_hiddens"]
    problem = _outputs_problem(run, T, B, V, "cpu", "with a single nn.RNN layer")
    if problem:
        return Verdict.failed(problem)
    ref = reference_rnn(**scratch)
    rtol = recurrence_tolerance(T)
    atol = rtol * max(1.0, ref["magnitude"])
    problem = check_allclose("the output", ref["outputs"], run["outputs"], rtol, atol,
                             ("time step", "batch row", "vocabulary index"), lambda ix: (ix[0] // B, ix[0] % B, ix[1]),
                             shape_axes=OUTPUT_AXES)
    if problem:
        if _close(_batch_major(ref["outputs"], T, B), run["outputs"], rtol, atol):
            return Verdict.failed(problem + "; your rows are batch-major (row b*T + t): the layer runs over inputs.T, "
                                            "so its output is (T, B, H) and reshaping it directly gives row t*B + b")
        free = reference_rnn(**dict(scratch, nonzero_state=False))
        if _close(free["outputs"], run["outputs"], rtol, atol):
            return Verdict.failed(problem + "; these are the outputs from a zero state: pass the state given to forward "
                                            "on to the layer (self.rnn(X, state))")
        return Verdict.failed(problem + "; with the scratch parameters copied in (weight_ih = W_xh.T, weight_hh = W_hh.T, "
                                        "bias_ih = b_h, linear = (W_hq.T, b_q)) the outputs must equal the scratch model's: "
                                        "one-hot(inputs.T) -> layer -> reshape to (T*B, H) -> linear")
    problem = _state_problem(run["state"], (1, B, H), False, "cpu", "the returned state", sequence=(T, B, H))
    if problem:
        return Verdict.failed(problem)
    problem = check_allclose("the returned state", ref["final"][None], run["state"]["items"][0], rtol, rtol,
                             ("layer", "batch row", "hidden unit"), shape_axes=STATE_AXES)
    if problem:
        return Verdict.failed(problem + "; return the state the layer returns")
    if not run.get("untouched", True):
        return Verdict.failed("forward changed the inputs tensor in place")
    return Verdict.passed(f"with the scratch parameters copied in, outputs and state equal the scratch model's "
                          f"over {T} steps")


def judge_begin_state(observed: Any, layers: dict, case: dict, **_: Any) -> Verdict:
    return _begin_state(observed["cpu"], layers, case, "cpu")


def _begin_state(observed: dict, layers: dict, case: dict, device: str) -> Verdict:
    B, H = case["batch_size"], case["num_hiddens"]
    for name, spec in layers.items():
        entry = observed[name]
        title = LAYER_TITLES.get(name, name)
        begin = entry["begin"]
        if "error" in begin and "nn.Module" in entry.get("problem", ""):
            return Verdict.failed(f"{title}: {entry['problem']}")
        if "error" in begin:
            hint = "the grader calls it as begin_state(device=..., batch_size=...)" if "argument" in begin["error"] else ""
            return Verdict.failed(f"{title}: " + explain_error("begin_state", begin["error"], hint=hint,
                                                               returned_by="rnn_model"))
        rows = (2 if spec["bidirectional"] else 1) * spec["num_layers"]
        shape = (rows, B, H)
        problem = _state_problem(begin, shape, spec["kind"] == "LSTM", device, f"{title}: begin_state(batch_size={B})")
        if problem:
            got = next((i for i in begin.get("items", []) if isinstance(i, TensorData)), None)
            if got is not None and len(got.shape) == 3 and got.shape[0] != rows and tuple(got.shape[1:]) == (B, H):
                directions, layers = 2 if spec["bidirectional"] else 1, spec["num_layers"]
                problem += (f"; this layer has {directions} direction{'s' * (directions > 1)} and {layers} "
                            f"layer{'s' * (layers > 1)}: take them from rnn_layer.bidirectional and rnn_layer.num_layers")
            return Verdict.failed(problem)
        for item in begin["items"]:
            if item.array is not None and np.any(item.array != 0):
                return Verdict.failed(f"{title}: begin_state should return zeros")
    kinds = ", ".join(LAYER_TITLES.get(n, n) for n in layers)
    return Verdict.passed(f"zeros of shape (num_directions * num_layers, B, H), a tuple (H, C) for the LSTM ({kinds})"
                          + (f", on {device}" if device != "cpu" else ""))


def judge_layers(observed: Any, layers: dict, case: dict, **_: Any) -> Verdict:
    return _layers(observed["cpu"], layers, case, "cpu")


def _layers(observed: dict, layers: dict, case: dict, device: str) -> Verdict:
    T, B, V, H = case["num_steps"], case["batch_size"], case["vocab_size"], case["num_hiddens"]
    for name, spec in layers.items():
        entry = observed[name]
        title = LAYER_TITLES.get(name, name)
        if "problem" in entry:
            hint = ""
            if spec["bidirectional"] and "could not find the output layer" in entry["problem"]:
                hint = (f"; a bidirectional layer outputs num_directions * num_hiddens = {2 * H} features per step, "
                        "so the linear layer takes that many inputs")
            return Verdict.failed(f"{title}: {entry['problem']}{hint}")
        run = entry["forward"]
        problem = _outputs_problem(run, T, B, V, device, title)
        if problem:
            if spec["bidirectional"] and "mat1 and mat2" in problem:
                problem += "; a bidirectional layer outputs 2 * num_hiddens features per step: size the linear layer for them"
            return Verdict.failed(problem)
        ref = reference_layer(name, spec, case)
        lstm = spec["kind"] == "LSTM"
        directions = 2 if spec["bidirectional"] else 1
        problem = _state_problem(run["state"], (ref["rows"], B, H), lstm, device, f"{title}: the returned state",
                                 sequence=(T, B, directions * H))
        if problem:
            return Verdict.failed(problem)
        if device != "cpu":  # values are compared on the CPU; other devices' kernels (cuDNN, TF32) round differently
            continue
        rtol = recurrence_tolerance(T * spec["num_layers"])
        atol = rtol * max(1.0, ref["magnitude"])
        problem = check_allclose(f"{title}: the output", ref["outputs"], run["outputs"], rtol, atol,
                                 ("time step", "batch row", "vocabulary index"), lambda ix: (ix[0] // B, ix[0] % B, ix[1]),
                                 shape_axes=OUTPUT_AXES)
        if problem:
            if _close(_batch_major(ref["outputs"], T, B), run["outputs"], rtol, atol):
                problem += "; your rows are batch-major (row b*T + t); they must go time step by time step (row t*B + b)"
            return Verdict.failed(problem)
        for label, want, got in zip(("H", "C"), ref["states"], run["state"]["items"]):
            problem = check_allclose(f"{title}: the returned state" + (f"'s {label}" if lstm else ""), want, got,
                                     rtol, rtol, ("layer and direction", "batch row", "hidden unit"), shape_axes=STATE_AXES)
            if problem:
                return Verdict.failed(problem + "; return the state the layer returns")
    kinds = ", ".join(LAYER_TITLES.get(n, n) for n in layers)
    if device != "cpu":
        return Verdict.passed(f"forward and begin_state stay on {device} ({kinds})")
    return Verdict.passed(f"outputs and states equal the reference model's for {kinds}")


def judge_device(observed: Any, layers: dict, device_layers: list, device_case: dict, *, device: str, **_: Any) -> Verdict:
    chosen = {k: layers[k] for k in device_layers}
    verdict = _begin_state(observed["devices"][device], chosen, device_case, device)
    if verdict.status == "passed":
        verdict = _layers(observed["devices"][device], chosen, device_case, device)
    return with_device_hint(verdict, device)


# ----------------------------------------------------------------- training and prediction


def train_and_predict(rnn_model: Any, hooks: dict, setup: dict, epochs: int, num_preds: int) -> dict:
    """Train a model around a seeded nn.RNN with the reference's loop, then generate with the reference's predict."""
    vocab, ids = vocab_and_ids(setup["corpus"])
    V, H = len(vocab), setup["num_hiddens"]
    layer = make_layer("RNN", V, H, 1, False, setup["seed"])
    model = rnn_model(layer, V)
    found, problem = _wire(model, layer, H, V)
    if problem:
        return {"problem": problem}
    set_output_layer(found, *linear_values(setup["seed"], H, V))
    loader = SeqDataLoader(ids, setup["batch_size"], setup["num_steps"], False, seed=setup["seed"])
    params = list(model.parameters())

    def updater(batch_size: int = 1) -> None:  # the book's scratch updater: no torch.optim, whose first use costs seconds
        sgd(params, setup["lr"], batch_size)

    loss = nn.CrossEntropyLoss()
    torch.manual_seed(setup["seed"])
    perplexities = []
    for _ in range(epochs):
        ppl, _ = hooks["train_epoch"](model, loader, loss, updater, torch.device("cpu"), False)
        perplexities.append(float(ppl))
    letters = [t for t in vocab.idx_to_token if len(t) == 1 and t != " "]
    prefix = "".join(letters[:3])
    text = hooks["predict"](prefix, num_preds, model, vocab, torch.device("cpu"))
    return {"perplexities": perplexities, "prefix": prefix, "text": text if isinstance(text, str) else None}


@lru_cache(maxsize=4)
def _reference_training(setup_json: str, epochs: int, num_preds: int) -> dict:
    torch.set_num_threads(1)  # as in the runner, so the reference's floats are reproducible
    return _trained(setup_json, epochs, num_preds)


@refcache.cached()
def _trained(setup_json: str, epochs: int, num_preds: int) -> dict:
    hooks = reference_hooks()
    return train_and_predict(hooks["rnn_model"], hooks, json.loads(setup_json), epochs, num_preds)


def reference_training(setup: dict, epochs: int, num_preds: int) -> dict:
    """The reference model trained by the reference's loop, its perplexities and its text, computed once."""
    return _reference_training(json.dumps(setup, sort_keys=True), epochs, num_preds)


def judge_train(observed: Any, train: dict, band: float = BAND, **_: Any) -> Verdict:
    setup, epochs, num_preds = train["setup"], train["epochs"], train["num_preds"]
    observed = observed["train"]
    if "error" in observed:
        return Verdict(ERROR, explain_error("training with the grader's train_epoch", observed["error"],
                                            hint=_layer_hint(observed["error"]), returned_by="your model"))
    if "problem" in observed:
        return Verdict.failed(observed["problem"])
    ref = reference_training(setup, epochs, num_preds)
    got, want = observed["perplexities"], ref["perplexities"]
    figures = {"perplexity": perplexity_chart(got, want, corpus_facts(setup["corpus"])["min_perplexity"],
                                              "perplexity per epoch: the grader's training loop on your model",
                                              xlabel="epoch", ylabel="perplexity")}
    final, target = got[-1], want[-1]
    low, high = target * (1 - band), target * (1 + band)
    if not math.isfinite(final) or not low <= final <= high:
        return Verdict.failed(
            f"after {epochs} epochs of the grader's training loop your model's perplexity is {final:.4g}, outside "
            f"{low:.4g}-{high:.4g} around the reference model's {target:.4g} on the same seeded budget; every parameter "
            "must be registered (model.parameters()) and the state must flow through the layer", figures=figures)
    text, prefix = observed["text"], observed["prefix"]
    if text is None or not text.startswith(prefix) or len(text) != len(prefix) + num_preds:
        return Verdict.failed(f"the grader's predict on your trained model gave {text!r}, not {prefix!r} followed by "
                              f"{num_preds} characters", figures=figures)
    return Verdict.passed(f"trains to perplexity {final:.3g} (reference {target:.3g}) and generates with predict",
                          details=f"{prefix!r} → {text!r} (reference: {ref['text']!r})", figures=figures)


# ----------------------------------------------------------------- registration


def _references(params: dict) -> None:
    """Everything the judges compare with, computed once."""
    reference_rnn(**params["scratch"])
    for name, spec in params["layers"].items():
        reference_layer(name, spec, params["case"])
        if name in params["device_layers"]:
            reference_layer(name, spec, params["device_case"])
    reference_training(**params["train"])


@hookimpl
def grader_checks(config):
    band = config.setting(f"{EXERCISE}.train", "band", BAND)
    epochs = config.setting(f"{EXERCISE}.train", "epochs", EPOCHS)
    params = secret_params(dict(
        scratch=dict(SCRATCH), layers={k: dict(v) for k, v in LAYERS.items()}, case=dict(LAYER_CASE),
        # on 'meta' torch runs recurrent layers step by step in Python, so the device runs are kept short
        devices=list(config.devices), device_layers=["deep_bi_rnn", "lstm"], device_case=dict(LAYER_CASE, num_steps=3),
        train=dict(setup=dict(TRAIN, corpus=corpus_spec(config)), epochs=epochs, num_preds=NUM_PREDS),
    ), config.secret)
    # one run for every check: each reads its part of it
    run = Probe("rnn_model", probe_concise, params, timeout=20.0, reference=functools.partial(_references, params))
    checks = [
        Check(EXERCISE, "forward.scratch", "with the scratch parameters copied in, outputs and state equal the scratch "
                                           "model's", 3, run, judge_scratch),
        Check(EXERCISE, "begin_state", "begin_state gives zeros (num_directions * num_layers, B, H); (H, C) for an LSTM",
              2, run, judge_begin_state),
        Check(EXERCISE, "layers", "deep, bidirectional, GRU and LSTM layers give the reference model's outputs and "
                                  "states", 2, run, judge_layers),
        Check(EXERCISE, "train", f"the grader's train_epoch and predict run on it; perplexity after {epochs} epochs "
                                 f"within {band:.0%} of the reference's", 2, run, functools.partial(judge_train, band=band),
              settings=dict(band=float(band), epochs=int(epochs)),
              explains="The grader's own training loop trains the student's model on the seeded corpus; its perplexity "
                       "must land in the band around the reference model's on the same budget."),
    ]
    for device in config.devices:
        checks.append(Check(EXERCISE, f"device.{device}", f"begin_state and forward stay on the device ({device})",
                            1 / len(config.devices), run, functools.partial(judge_device, device=device)))
    return checks
