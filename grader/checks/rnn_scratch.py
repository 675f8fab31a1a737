"""Checks for the scratch RNN: ``get_params``, ``init_rnn_state`` and ``rnn``."""

from __future__ import annotations

import functools
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from grader import hookimpl
from grader.compare import check_allclose, check_tensor_meta, first_recurrent_step_off, named_shape, recurrence_tolerance
from grader.definitions import Check, Probe
from grader.fixtures import first_of, rnn_case
from grader.hints import Hint
from grader.nets import state_record
from grader.plugins import reference_hooks
from grader.results import Verdict
from grader.secret import secret_params
from grader.wire import TensorData

EXERCISE = "rnn_scratch"
PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hq", "b_q")
V, H = 28, 48
CASE = dict(seed=7, vocab_size=V, num_hiddens=H, num_steps=35, batch_size=4)
HINTS = (Hint(r"mat1 and mat2 shapes cannot be multiplied|must have same reduction dim",
              "check the matrix orientation: X (B, V) @ W_xh (V, H), H (B, H) @ W_hh (H, H)"),)


# ----------------------------------------------------------------- get_params


def probe_params(ctx, vocab_size: int, num_hiddens: int, device: str) -> Any:
    torch.manual_seed(0)
    params = ctx.student("get_params")(vocab_size, num_hiddens, torch.device(device))
    if not isinstance(params, (list, tuple)):
        return {"kind": type(params).__name__}
    return {
        "kind": "sequence",
        "params": list(params) if all(isinstance(p, torch.Tensor) for p in params) else [type(p).__name__ for p in params],
        "distinct": len({p.data_ptr() for p in params if isinstance(p, torch.Tensor)}) == len(params)
        if device != "meta" else True,
    }


#: what each axis of each parameter is, in get_params' own words
PARAM_AXES = (("vocab_size", "num_hiddens"), ("num_hiddens", "num_hiddens"), ("num_hiddens",),
              ("num_hiddens", "vocab_size"), ("vocab_size",))


def _param_structure(observed: Any, vocab_size: int, num_hiddens: int, device: str) -> str | None:
    if observed.get("kind") != "sequence":
        return f"get_params should return a list of 5 tensors, but returned a {observed.get('kind')}"
    params = observed["params"]
    if len(params) != 5:
        return f"get_params should return 5 parameters [W_xh, W_hh, b_h, W_hq, b_q], but returned {len(params)}"
    sizes = {"vocab_size": vocab_size, "num_hiddens": num_hiddens}
    shapes = [tuple(sizes[axis] for axis in axes) for axes in PARAM_AXES]
    problem = _param_order(params, shapes)
    if problem:
        return problem
    for name, shape, axes, p in zip(PARAM_NAMES, shapes, PARAM_AXES, params):
        problem = check_tensor_meta(name, shape, p, device=device, axes=axes)
        if problem:
            return problem
        if not p.requires_grad:
            return f"{name} does not require gradients: call requires_grad_(True) on every parameter"
        if not p.is_leaf:
            return (f"{name} is not a leaf tensor (it was computed from another tensor that requires grad), "
                    "so its .grad stays empty: create it first, scale it, then call requires_grad_()")
    if not observed.get("distinct", True):
        return "two of the parameters share the same storage; each must be its own tensor"
    return None


def _param_order(params: list, shapes: list) -> str | None:
    """The parameters in another order than [W_xh, W_hh, b_h, W_hq, b_q], each of the right shape: said as such.

    Otherwise the first shape check would blame a correct line ("b_h has shape (256, 28)").
    """
    got = [tuple(p.shape) if isinstance(p, TensorData) else None for p in params]
    if got == shapes or sorted(map(str, got)) != sorted(map(str, shapes)) or len(set(shapes)) != len(shapes):
        return None
    order = [PARAM_NAMES[shapes.index(shape)] for shape in got]
    return (f"get_params returns the parameters in the order [{', '.join(order)}] (judging by their shapes), but rnn "
            f"unpacks them as W_xh, W_hh, b_h, W_hq, b_q = params: return [W_xh, W_hh, b_h, W_hq, b_q]")


def judge_params_shapes(observed: Any, vocab_size: int, num_hiddens: int, device: str) -> Verdict:
    problem = _param_structure(observed, vocab_size, num_hiddens, device)
    return Verdict.failed(problem) if problem else Verdict.passed("5 float32 leaf tensors of the right shapes, requiring grad")


def judge_params_init(observed: Any, vocab_size: int, num_hiddens: int, device: str) -> Verdict:
    problem = _param_structure(observed, vocab_size, num_hiddens, device)
    if problem:
        return Verdict.failed(problem)  # the same words as params.shapes: one cause, told once
    figures = {}
    for name, p in zip(PARAM_NAMES, observed["params"]):
        values = p.array.astype(np.float64)
        if name.startswith("b_"):
            if np.any(values != 0):
                return Verdict.failed(f"{name} should start at zero, but its largest entry is {np.abs(values).max():.3g}")
            continue
        std, mean = float(values.std()), float(values.mean())
        figures[f"std({name})"] = round(std, 5)
        # the sample std of n normal draws is within 5 standard errors of 0.01 with certainty in practice
        slack = 5 * 0.01 / np.sqrt(2 * values.size)
        if not 0.01 - slack <= std <= 0.01 + slack:
            if std == 0:
                hint = " (all entries are equal)"
            elif abs(mean) > 5 * std / np.sqrt(values.size):
                hint = " (torch.rand is uniform on [0, 1); use torch.randn)"
            else:
                hint = " (draw every weight with torch.randn(...) * 0.01)"
            return Verdict.failed(f"{name} should be drawn from N(0, 0.01²), but its entries have standard deviation {std:.4g}{hint}", figures=figures)
        if abs(mean) > 5 * 0.01 / np.sqrt(values.size):
            return Verdict.failed(f"{name} should have mean 0, but its entries average {mean:.3g} (torch.rand is uniform on [0, 1); use torch.randn)", figures=figures)
    return Verdict.passed("weights ~ N(0, 0.01²), biases zero", figures=figures)


# ----------------------------------------------------------------- init_rnn_state


def probe_state(ctx, batch_size: int, num_hiddens: int, device: str) -> Any:
    return state_record(ctx.student("init_rnn_state")(batch_size, num_hiddens, torch.device(device)))


def judge_state(observed: Any, batch_size: int, num_hiddens: int, device: str) -> Verdict:
    if observed["kind"] == "tensor":
        return Verdict.failed("init_rnn_state should return a tuple holding one tensor, (H,), not a bare tensor: write `return (torch.zeros(...),)`")
    if observed["kind"] not in ("tuple", "list"):
        return Verdict.failed(f"init_rnn_state should return a tuple (H,), but returned a {observed['kind']}")
    if len(observed["items"]) != 1:
        return Verdict.failed(f"init_rnn_state should return a tuple of exactly one tensor, but it has {len(observed['items'])} items")
    state = observed["items"][0]
    problem = check_tensor_meta("the state H", (batch_size, num_hiddens), state, device=device,
                                axes=("batch_size", "num_hiddens"))
    if problem:
        return Verdict.failed(problem)
    if state.array is not None and np.any(state.array != 0):
        return Verdict.failed("the initial state should be all zeros")
    return Verdict.passed(f"({batch_size}, {num_hiddens}) zeros" + (f" on {device}" if device != "cpu" else ""))


# ----------------------------------------------------------------- rnn


def probe_rnn(ctx, seed: int, vocab_size: int, num_hiddens: int, num_steps: int, batch_size: int,
              nonzero_state: bool, device: str = "cpu", gradients: bool = False) -> Any:
    case = rnn_case(seed, vocab_size, num_hiddens, num_steps, batch_size, nonzero_state)
    dev = torch.device(device)
    params = [p.to(dev).requires_grad_(True) for p in case["params"]]
    state = case["state"].to(dev).requires_grad_(gradients)
    inputs = case["inputs"].to(dev)
    inputs_before = inputs.detach().clone()  # .to(cpu) returns the same tensor, so compare with a copy
    state_before = state.detach().clone()
    params_before = [p.detach().clone() for p in params]
    outputs, new_state = ctx.student("rnn")(inputs, (state,), params)
    result: dict[str, Any] = {
        "outputs": outputs,
        "state_kind": type(new_state).__name__,
        "state_len": len(new_state) if isinstance(new_state, (tuple, list)) else None,
        "final": first_of(new_state),
    }
    if device != "meta":
        result["inputs_untouched"] = bool(torch.equal(inputs, inputs_before))
        result["state_untouched"] = bool(torch.equal(state.detach(), state_before))
        result["params_untouched"] = all(torch.equal(p.detach(), b) for p, b in zip(params, params_before))
    # gradients of a weighted sum of what rnn returned; only for the right shapes (the judge tells any other
    # shape), and only when autograd can reach it (else the judge says that no gradient reached the parameters)
    if gradients and _shaped(outputs, case["output_weights"]) and _shaped(result["final"], case["state_weights"]):
        loss = (outputs * case["output_weights"]).sum() + (result["final"] * case["state_weights"]).sum()
        if loss.requires_grad:
            loss.backward()
        result["grads"] = [p.grad for p in params]
        result["state_grad"] = state.grad
    return result


def _shaped(value: Any, like: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == like.shape and value.is_floating_point()


def reference_rnn(seed: int, vocab_size: int, num_hiddens: int, num_steps: int, batch_size: int, nonzero_state: bool) -> dict:
    """The reference's outputs, final state and gradients on :func:`grader.fixtures.rnn_case`, computed once."""
    return _reference_rnn(seed, vocab_size, num_hiddens, num_steps, batch_size, nonzero_state)


@lru_cache(maxsize=8)
def _reference_rnn(seed: int, vocab_size: int, num_hiddens: int, num_steps: int, batch_size: int, nonzero_state: bool) -> dict:
    case = rnn_case(seed, vocab_size, num_hiddens, num_steps, batch_size, nonzero_state)
    params = [p.clone().requires_grad_(True) for p in case["params"]]
    state = case["state"].clone().requires_grad_(True)
    outputs, (final,) = reference_hooks()["rnn"](case["inputs"], (state,), params)
    loss = (outputs * case["output_weights"]).sum() + (final * case["state_weights"]).sum()
    loss.backward()
    to_np = lambda t: t.detach().numpy().copy()  # noqa: E731
    return {
        "outputs": to_np(outputs),
        "final": to_np(final),
        "grads": [to_np(p.grad) for p in params],
        "state_grad": to_np(state.grad),
        "magnitude": float(outputs.detach().abs().max()),
    }


def _structure(observed: Any, batch_size: int, num_hiddens: int, num_steps: int, vocab_size: int, device: str) -> str | None:
    outputs = observed.get("outputs")
    out_axes = ("num_steps * batch_size", "vocab_size")
    if isinstance(outputs, TensorData) and tuple(outputs.shape) == (num_steps, batch_size, vocab_size):
        return (f"outputs have shape {named_shape(outputs.shape, ('num_steps', 'batch_size', 'vocab_size'))}, one "
                f"(B, V) block per time step; concatenate the time steps along dimension 0 (torch.cat(outputs, dim=0)) "
                f"to get {named_shape((num_steps * batch_size, vocab_size), out_axes)}")
    problem = check_tensor_meta("outputs", (num_steps * batch_size, vocab_size), outputs, device=device, axes=out_axes)
    if problem:
        return problem
    if observed["state_kind"] not in ("tuple", "list"):
        return f"rnn should return (outputs, (H,)), but the state it returned is a {observed['state_kind']}, not a tuple"
    if observed["state_len"] != 1:
        return f"the returned state should be a tuple of one tensor (H,), but it has {observed['state_len']} items"
    return check_tensor_meta("the returned state H", (batch_size, num_hiddens), observed["final"], device=device,
                             axes=("batch_size", "num_hiddens"))


def judge_rnn_shapes(observed: Any, seed, vocab_size, num_hiddens, num_steps, batch_size, nonzero_state, device="cpu", gradients=False) -> Verdict:
    problem = _structure(observed, batch_size, num_hiddens, num_steps, vocab_size, device)
    if problem:
        return Verdict.failed(problem)
    return Verdict.passed(f"outputs ({num_steps * batch_size}, {vocab_size}) and state ({batch_size}, {num_hiddens}) on {device}")


def judge_rnn_values(observed: Any, seed, vocab_size, num_hiddens, num_steps, batch_size, nonzero_state, device="cpu", gradients=False) -> Verdict:
    problem = _structure(observed, batch_size, num_hiddens, num_steps, vocab_size, device)
    if problem:
        return Verdict.failed(problem)
    ref = reference_rnn(seed, vocab_size, num_hiddens, num_steps, batch_size, nonzero_state)
    rtol = recurrence_tolerance(num_steps)
    atol = rtol * max(1.0, ref["magnitude"])

    def out_index(ix):
        r, v = ix
        return (r // batch_size, r % batch_size, v)

    out_axes = ("time step", "batch row", "vocabulary index")
    problem = check_allclose("outputs", ref["outputs"], observed["outputs"], rtol, atol, out_axes, out_index)
    if problem:
        step = first_recurrent_step_off(ref["outputs"], observed["outputs"].array, rtol, atol, batch_size)
        hint = _rnn_hint(step, nonzero_state)
        return Verdict.failed(problem + hint)
    problem = check_allclose("the final state H_T", ref["final"], observed["final"], rtol, rtol, ("batch row", "hidden unit"))
    if problem:
        return Verdict.failed(problem + "; the outputs are right, so check which H you return")
    if not observed.get("inputs_untouched", True) or not observed.get("params_untouched", True):
        return Verdict.failed("rnn changed its inputs or parameters in place; compute new tensors instead")
    if not observed.get("state_untouched", True):
        return Verdict.failed("rnn overwrote the state tensor it was given; build the new H as a new tensor")
    if not gradients:
        return Verdict.passed(f"outputs and final state match over {num_steps} time steps (largest value {ref['magnitude']:.3g})")
    for name, ref_grad, got in zip(PARAM_NAMES, ref["grads"], observed.get("grads") or [None] * 5):
        if got is None:
            return Verdict.failed(f"no gradient reached {name}: the outputs must be computed from the parameters with differentiable torch operations")
        scale = max(1.0, float(np.abs(ref_grad).max()))
        problem = check_allclose(f"the gradient of {name}", ref_grad, got, rtol * 4, rtol * 4 * scale)
        if problem:
            return Verdict.failed(problem)
    got = observed.get("state_grad")
    if got is None:
        return Verdict.failed("no gradient reached the initial state: the recurrence must start from the state passed in")
    scale = max(1.0, float(np.abs(ref["state_grad"]).max()))
    problem = check_allclose("the gradient of the initial state", ref["state_grad"], got, rtol * 4, rtol * 4 * scale, ("batch row", "hidden unit"))
    if problem:
        return Verdict.failed(problem)
    return Verdict.passed(f"gradients of all 5 parameters and the initial state match through {num_steps} steps")


def _rnn_hint(step: int | None, nonzero_state: bool) -> str:
    if step == 0 and nonzero_state:
        return ("; already the first time step is off: check that the recurrence starts from the state passed in, "
                "and H = tanh(X W_xh + H W_hh + b_h), O = H W_hq + b_q")
    if step == 0:
        return "; already the first time step is off: check H = tanh(X W_xh + H W_hh + b_h) and O = H W_hq + b_q"
    if step is not None:
        return f"; time steps before {step} are right, so check how H is carried from one step to the next"
    return ""


# ----------------------------------------------------------------- registration


def _rnn_probe(case: dict) -> Probe:
    """A run of rnn on :func:`rnn_case`; values (and so the reference) are compared on the CPU only."""
    on_cpu = case.get("device", "cpu") == "cpu"
    reference = functools.partial(reference_rnn, **{k: case[k] for k in (*CASE, "nonzero_state")}) if on_cpu else None
    return Probe("rnn", probe_rnn, case, reference=reference, hints=HINTS)


@hookimpl
def grader_checks(config):
    def inputs(params: dict) -> dict:
        return secret_params(params, config.secret)

    size = dict(vocab_size=V, num_hiddens=256)
    params = Probe("get_params", probe_params, inputs(dict(size, device="cpu")), hints=HINTS)
    state = Probe("init_rnn_state", probe_state, inputs(dict(batch_size=5, num_hiddens=H, device="cpu")), hints=HINTS)
    forward = _rnn_probe(inputs(dict(CASE, nonzero_state=False)))
    checks = [
        Check(EXERCISE, "params.shapes", "get_params returns five leaf tensors of the right shapes", 3,
              params, judge_params_shapes),
        Check(EXERCISE, "params.init", "get_params draws weights from N(0, 0.01²) and zeroes biases", 3,
              params, judge_params_init),
        Check(EXERCISE, "state.shape", "init_rnn_state returns a tuple with a zero (B, H) state", 2, state, judge_state),
        Check(EXERCISE, "rnn.shapes", "rnn returns (T*B, V) outputs and a (B, H) state tuple", 2,
              forward, judge_rnn_shapes),
        Check(EXERCISE, "rnn.forward", "rnn computes the reference's outputs and final state", 7,
              forward, judge_rnn_values),
        Check(EXERCISE, "rnn.carries_state", "rnn starts from the state it is given", 3,
              _rnn_probe(inputs(dict(CASE, seed=11, nonzero_state=True))), judge_rnn_values),
        Check(EXERCISE, "rnn.gradients", "gradients through rnn match the reference's", 5,
              _rnn_probe(inputs(dict(CASE, seed=13, nonzero_state=True, gradients=True))), judge_rnn_values),
    ]
    share = 1.0 / len(config.devices)
    for device in config.devices:
        checks += [
            Check(EXERCISE, f"params.device.{device}", f"get_params creates every tensor on the device it is given ({device})",
                  2 * share, Probe("get_params", probe_params, inputs(dict(size, device=device)), hints=HINTS),
                  judge_params_shapes),
            Check(EXERCISE, f"state.device.{device}", f"init_rnn_state creates the state on the device it is given ({device})",
                  1 * share, Probe("init_rnn_state", probe_state, inputs(dict(batch_size=5, num_hiddens=H, device=device)),
                                   hints=HINTS), judge_state),
            Check(EXERCISE, f"rnn.device.{device}", f"rnn keeps every tensor on the inputs' device ({device})",
                  2 * share, _rnn_probe(inputs(dict(CASE, nonzero_state=False, device=device))), judge_rnn_shapes),
        ]
    return checks
