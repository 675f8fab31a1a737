"""Checks for ``sine_model``: what a batch-first recurrent regressor must do, and how well the grader's loop trains it.

The forward checks are properties of any recurrent model, whatever its layers:
each batch row is its own sequence, the outputs depend on ``h0``, and running a
sequence in two halves (the second from the first's returned ``h``) gives the
same outputs as running it whole. The training check runs the lesson's loop
(Adam, batch 1, ``h0 = 0``) for a fixed seeded budget and compares the
one-step-ahead error with the reference model's on the same budget.
"""

from __future__ import annotations

import functools
import math
import random
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from grader import hookimpl, refcache
from grader.compare import FLOAT32_EPS, check_tensor_meta, named_shape
from grader.definitions import Check, Probe
from grader.figures import finite, rounded
from grader.hints import explain_error, hidden_size_mismatch, with_device_hint
from grader.nets import unregistered
from grader.plugins import reference_hooks
from grader.results import ERROR, Verdict
from grader.secret import secret_params
from grader.wire import TensorData

EXERCISE = "sine_wave"
#: forward checks use sizes unlike the lesson's, so nothing hard-coded passes
#: and no two axes of a checked shape are equal, so a message naming a shape shows which axis is wrong
FORWARD = dict(seed=5, input_dim=2, hidden_dim=12, out_dim=4, batch=3, steps=7, split=3)
#: what each axis of y and h is
Y_AXES, H_AXES = ("batch", "time steps", "out_dim"), ("num_layers", "batch", "hidden_dim")
#: the lesson's problem: 20 points of sin on [start, start + 10], start drawn from {0, 1, 2}
NUM_POINTS, SPAN, STARTS = 20, 10.0, (0, 1, 2)
TRAIN = dict(seed=0, input_dim=1, hidden_dim=16, out_dim=1, iterations=250, lr=1e-3)
#: the eval MSE may be at most this multiple of the reference's on the same budget (30 other
#: seeds of a correct model land within 0.55-1.02x of it; a model that does not carry the
#: state from step to step stalls near 0.12, 3.3x)
MSE_FACTOR = 2.0
#: forward values computed two ways by a correct model agree to float32 rounding
RTOL = 64 * FLOAT32_EPS


def eval_starts(seed: int) -> list[float]:
    """Where the eval sequences start: the published STARTS, shifted by a phase the seed picks (none for seed 0),
    so that predictions made for the published inputs are not predictions for a secret seed's."""
    phase = math.fmod(seed * 0.6180339887, 2 * math.pi)
    return [round(start + phase, 6) for start in STARTS]


def sine_sequence(start: float):
    """``(x, y)`` of shape (1, NUM_POINTS - 1, 1): the wave and the wave one step ahead."""
    t = torch.linspace(start, start + SPAN, NUM_POINTS)
    data = torch.sin(t).reshape(1, NUM_POINTS, 1)
    return data[:, :-1], data[:, 1:]


def forward_inputs(seed: int, input_dim: int, hidden_dim: int, batch: int, steps: int, **_: Any) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(batch, steps, input_dim, generator=g),
            "h0": torch.tanh(torch.randn(1, batch, hidden_dim, generator=g))}


# ----------------------------------------------------------------- forward


def probe_sine(ctx, forward: dict, devices: list, train: dict) -> Any:
    """Every check of the exercise reads its part of this one run (one process start instead of three)."""
    sine_model = ctx.student("sine_model")
    out = {"cpu": _forward_runs(ctx, sine_model, device="cpu", **forward)}
    out["devices"] = {device: ctx.attempt(lambda device=device: _forward_runs(ctx, sine_model, device=device, **forward))
                      for device in devices}
    out["train"] = ctx.attempt(lambda: _train_run(sine_model, **train))
    return out


def _forward_runs(ctx, sine_model: Any, seed: int, input_dim: int, hidden_dim: int, out_dim: int, batch: int, steps: int,
                  split: int, device: str) -> dict:
    torch.manual_seed(seed)
    model = sine_model(input_dim, hidden_dim, out_dim)
    if not isinstance(model, torch.nn.Module):
        return {"kind": type(model).__name__}
    dev = torch.device(device)
    moved = ctx.attempt(lambda: model.to(dev))
    if isinstance(moved, dict) and "error" in moved:
        return {"kind": "module", "full": {"error": moved["error"], "during": f"model.to('{device}')"}}
    data = forward_inputs(seed, input_dim, hidden_dim, batch, steps)
    x, h0 = data["x"].clone().to(dev), data["h0"].clone().to(dev)
    out: dict[str, Any] = {"kind": "module", "unregistered": unregistered(model)}

    def run(*args):
        result = model(*args)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            return {"kind": type(result).__name__, "len": len(result) if isinstance(result, (tuple, list)) else None}
        y, h = result
        return {"y": y if isinstance(y, torch.Tensor) else None, "h": h if isinstance(h, torch.Tensor) else None,
                "kind": "pair", "y_kind": type(y).__name__, "h_kind": type(h).__name__}

    with torch.no_grad():
        out["full"] = ctx.attempt(lambda: run(x, h0))
        if device != "meta":
            out["untouched"] = bool(torch.equal(x, data["x"]) and torch.equal(h0, data["h0"]))
            out["rows"] = [ctx.attempt(lambda b=b: run(x[b:b + 1], h0[:, b:b + 1])) for b in range(batch)]
            out["zero_h0"] = ctx.attempt(lambda: run(x, torch.zeros_like(h0)))
            first = ctx.attempt(lambda: run(x[:, :split], h0))
            out["first"] = first
            if isinstance(first.get("h"), torch.Tensor):
                out["second"] = ctx.attempt(lambda: run(x[:, split:], first["h"]))
    return out


def _shape_problem(observed: Any, batch: int, steps: int, hidden_dim: int, out_dim: int, device: str) -> str | None:
    if "error" in observed:
        return explain_error("sine_model", observed["error"], sizes=dict(batch=batch, steps=steps, hidden_dim=hidden_dim,
                                                                         out_dim=out_dim))
    if observed.get("kind") != "module":
        return f"sine_model should return an nn.Module, but returned a {observed.get('kind')}"
    full = observed["full"]
    if "error" in full:
        return explain_error(full.get("during") or "model(x, h0)", full["error"], hint=_layer_hint(full["error"], hidden_dim),
                             returned_by="sine_model",
                             sizes=dict(batch=batch, steps=steps, hidden_dim=hidden_dim, out_dim=out_dim))
    if full["kind"] != "pair":
        return f"forward should return a pair (y, h), but returned a {full['kind']}"
    problem = check_tensor_meta("y", (batch, steps, out_dim), full["y"], device=device, axes=Y_AXES) \
        if full["y"] is not None else f"y should be a tensor but is a {full['y_kind']}"
    if problem and isinstance(full["y"], TensorData) and tuple(full["y"].shape) == (batch, steps, hidden_dim):
        problem += "; that is the hidden state's size: apply the linear read-out to every time step"
    if problem and isinstance(full["y"], TensorData) and tuple(full["y"].shape) == (batch, out_dim):
        problem += "; that is one prediction per sequence: apply the read-out to every time step's output, not only the last"
    if problem:
        return problem
    if full["h"] is None:
        return f"h should be a tensor but is a {full['h_kind']}"
    return check_tensor_meta("h", (1, batch, hidden_dim), full["h"], device=device, axes=H_AXES)


def _layer_hint(error: str, hidden_dim: int) -> str:
    """What an error raised by the recurrent layer inside forward usually means here, or ""."""
    sizes = hidden_size_mismatch(error)
    if sizes and sizes[0][1:2] != sizes[1][1:2]:
        return ("x is batch first, (B, T, input_dim): create the layer with nn.RNN(..., batch_first=True) "
                "(h0 stays (1, B, H) either way)")
    if sizes and sizes[0][-1:] != sizes[1][-1:]:
        return f"the layer's hidden size must be the hidden_dim passed in ({hidden_dim}), not a fixed number"
    return ""


def judge_shapes(observed: Any, forward: dict, **_: Any) -> Verdict:
    return _shapes(observed["cpu"], "cpu", **forward)


def judge_device(observed: Any, forward: dict, *, device: str, **_: Any) -> Verdict:
    return with_device_hint(_shapes(observed["devices"][device], device, **forward), device)


def _shapes(observed: Any, device: str, seed, input_dim, hidden_dim, out_dim, batch, steps, split) -> Verdict:
    problem = _shape_problem(observed, batch, steps, hidden_dim, out_dim, device)
    if problem:
        return Verdict.failed(problem)
    if not observed.get("untouched", True):
        return Verdict.failed("forward changed x or h0 in place; compute new tensors instead")
    return Verdict.passed(f"y ({batch}, {steps}, {out_dim}) and h (1, {batch}, {hidden_dim})"
                          + (f" on {device}" if device != "cpu" else ""))


def _cpu_run(observed: Any, forward: dict) -> tuple[dict, str | None]:
    run = observed["cpu"]
    return run, _shape_problem(run, forward["batch"], forward["steps"], forward["hidden_dim"], forward["out_dim"], "cpu")


def _close(a: Any, b: Any) -> bool:
    if not isinstance(a, TensorData) or not isinstance(b, TensorData) or a.array is None or b.array is None:
        return False
    if a.array.shape != b.array.shape:
        return False
    x, y = a.array.astype(np.float64), b.array.astype(np.float64)
    return bool(np.all(np.isfinite(x)) and np.allclose(x, y, rtol=RTOL, atol=RTOL * max(1.0, float(np.abs(y).max(initial=0)))))


def _run_problem(run: dict, what: str) -> str | None:
    if "error" in run:
        return explain_error(what, run["error"], returned_by="sine_model")
    if run.get("kind") != "pair" or run.get("y") is None or run.get("h") is None:
        return f"{what} did not return a pair of tensors (y, h)"
    return None


def judge_batch_first(observed: Any, forward: dict, **_: Any) -> Verdict:
    observed, problem = _cpu_run(observed, forward)
    if problem:
        return Verdict.failed(problem)  # the words of forward.shapes: one cause, told once
    batch = forward["batch"]
    full = observed["full"]
    for b, row in enumerate(observed["rows"]):
        problem = _run_problem(row, f"the model on batch row {b} alone")
        if problem:
            return Verdict.failed(problem)
        if not _close(row["y"], _slice(full["y"], b)):
            return Verdict.failed(
                f"row {b} of the batch gives different outputs than the same sequence run on its own: rows must be "
                "independent sequences. x is batch first, (B, T, input_dim): use nn.RNN(..., batch_first=True), or "
                "transpose to (T, B, input_dim) and back")
    return Verdict.passed(f"each of {batch} batch rows is its own sequence (batch first)")


def judge_uses_h0(observed: Any, forward: dict, **_: Any) -> Verdict:
    observed, problem = _cpu_run(observed, forward)
    if problem:
        return Verdict.failed(problem)  # the words of forward.shapes: one cause, told once
    problem = _run_problem(observed["zero_h0"], "the model with h0 = 0")
    if problem:
        return Verdict.failed(problem)
    if _close(observed["zero_h0"]["y"], observed["full"]["y"]):
        return Verdict.failed("the outputs are the same for h0 = 0 and for another h0: the model ignores h0; "
                              "pass it to the recurrent layer (self.rnn(x, h0))")
    return Verdict.passed("the outputs start from the h0 passed in")


def judge_returns_h(observed: Any, forward: dict, **_: Any) -> Verdict:
    observed, problem = _cpu_run(observed, forward)
    if problem:
        return Verdict.failed(problem)  # the words of forward.shapes: one cause, told once
    steps, split = forward["steps"], forward["split"]
    first = observed["first"]
    problem = _run_problem(first, f"the model on the first {split} time steps")
    if problem:
        return Verdict.failed(problem)
    second = observed.get("second") or {"error": "no second half was run"}
    problem = _run_problem(second, f"the model on the last {steps - split} time steps")
    if problem:
        return Verdict.failed(problem)
    full = observed["full"]
    parts, whole = [first["y"].array, second["y"].array], full["y"].array
    # joined along the time axis when the halves have the whole's other axes (else they cannot give the whole)
    joined = np.concatenate(parts, axis=1) if all(
        a is not None and a.ndim == whole.ndim >= 2 and a.shape[:1] + a.shape[2:] == whole.shape[:1] + whole.shape[2:]
        for a in parts) else None
    if joined is None or joined.shape != whole.shape or not np.allclose(
            joined, whole, rtol=RTOL, atol=RTOL * max(1.0, float(np.abs(whole).max()))):
        return Verdict.failed(
            f"running the first {split} steps, then the remaining {steps - split} from the h it returned, does not "
            "give the outputs of running all steps at once: h must be the hidden state after the LAST time step "
            "(the layer's second output), not h0 or another tensor")
    if not _close(second["h"], full["h"]):
        return Verdict.failed("the h returned after the second half differs from the h of the whole sequence; "
                              "return the layer's final hidden state")
    return Verdict.passed(f"h carries the sequence on: {split} + {steps - split} steps give the outputs of {steps}")


def _slice(t: TensorData, b: int) -> TensorData:
    array = t.array[b:b + 1]
    return TensorData(t.dtype, tuple(array.shape), t.device, t.requires_grad, t.is_leaf, t.has_grad_fn, array)


# ----------------------------------------------------------------- training


class Adam:
    """Adam (Kingma and Ba; torch.optim.Adam's defaults and single-tensor arithmetic), written out.

    The judge trains the reference model with it too, and its first use of
    torch.optim would import torch._dynamo: about two seconds, every grading.
    """

    def __init__(self, params: list, lr: float, betas: tuple = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.steps = params, lr, betas, eps, 0
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        step_size = self.lr / (1 - beta1 ** self.steps)
        root = (1 - beta2 ** self.steps) ** 0.5
        with torch.no_grad():
            for p, (m, v) in zip(self.params, self.moments):
                if p.grad is None:
                    continue
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.addcdiv_(m, (v.sqrt() / root).add_(self.eps), value=-step_size)


def train_sine(model: Any, seed: int, hidden_dim: int, iterations: int, lr: float) -> dict:
    """The lesson's loop: Adam, one sequence per step from h0 = 0; then the eval MSE over every start."""
    rng = random.Random(seed)
    optimizer = Adam(list(model.parameters()), lr=lr)
    losses = []
    for _ in range(iterations):
        x, y = sine_sequence(rng.choice(STARTS))
        out, _ = model(x, torch.zeros(1, 1, hidden_dim))
        loss = torch.mean((out - y) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    errors, predictions = [], []
    with torch.no_grad():
        for start in eval_starts(seed):
            x, y = sine_sequence(start)
            out, _ = model(x, torch.zeros(1, 1, hidden_dim))
            errors.append(float(torch.mean((out - y) ** 2)))
            predictions.append(out.reshape(-1).tolist())
    every = max(1, iterations // 25)
    curve = [sum(losses[i:i + every]) / len(losses[i:i + every]) for i in range(0, iterations, every)]
    return {"mse": sum(errors) / len(errors), "mse_per_start": errors, "predictions": predictions,
            "loss_curve": curve, "every": every}


def _train_run(sine_model: Any, seed: int, input_dim: int, hidden_dim: int, out_dim: int, iterations: int, lr: float) -> dict:
    torch.manual_seed(seed)
    model = sine_model(input_dim, hidden_dim, out_dim)
    if not isinstance(model, torch.nn.Module):
        return {"kind": type(model).__name__}
    hidden = unregistered(model)
    if not list(model.parameters()):
        return {"kind": "module", "no_parameters": True, "unregistered": hidden}
    x, y = sine_sequence(STARTS[0])
    with torch.no_grad():
        out = model(x, torch.zeros(1, 1, hidden_dim))
    shape = list(out[0].shape) if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) else None
    if shape != list(y.shape):
        return {"kind": "module", "bad_shape": shape, "unregistered": hidden}
    return dict(train_sine(model, seed, hidden_dim, iterations, lr), kind="module", unregistered=hidden)


def reference_training(seed: int, input_dim: int, hidden_dim: int, out_dim: int, iterations: int, lr: float) -> dict:
    """The reference model trained by :func:`train_sine` on the same budget, computed once."""
    return _reference_training(seed, input_dim, hidden_dim, out_dim, iterations, lr)


@lru_cache(maxsize=2)
def _reference_training(seed: int, input_dim: int, hidden_dim: int, out_dim: int, iterations: int, lr: float) -> dict:
    torch.set_num_threads(1)  # as in the runner, so the reference's floats are reproducible
    return _trained(seed, input_dim, hidden_dim, out_dim, iterations, lr)


@refcache.cached()
def _trained(seed: int, input_dim: int, hidden_dim: int, out_dim: int, iterations: int, lr: float) -> dict:
    torch.manual_seed(seed)
    model = reference_hooks()["sine_model"](input_dim, hidden_dim, out_dim)
    return train_sine(model, seed, hidden_dim, iterations, lr)


def judge_training(observed: Any, train: dict, mse_factor: float = MSE_FACTOR, **_: Any) -> Verdict:
    iterations, out_dim = train["iterations"], train["out_dim"]
    observed = observed["train"]
    if "error" in observed:
        return Verdict(ERROR, explain_error("your model, in the grader's training loop,", observed["error"],
                                            hint=_layer_hint(observed["error"], train["hidden_dim"]), returned_by="sine_model"))
    if observed.get("kind") != "module":
        return Verdict.failed(f"sine_model should return an nn.Module, but returned a {observed.get('kind')}")
    hidden = observed.get("unregistered") or []
    if observed.get("no_parameters"):
        return Verdict.failed("the model has no parameters for the optimizer to train" + _unregistered_note(hidden))
    if "bad_shape" in observed:
        got = observed["bad_shape"]
        return Verdict.failed(f"cannot train: on one sequence of {NUM_POINTS - 1} steps the model's y has shape "
                              f"{tuple(got) if got else 'unknown'}, but should be "
                              f"{named_shape((1, NUM_POINTS - 1, out_dim), Y_AXES)}")
    ref = reference_training(**train)
    mse, want = eval_mse(observed["predictions"], train["seed"]), ref["mse"]
    limit = mse_factor * want
    first = eval_starts(train["seed"])[0]
    x = [round(v, 4) for v in np.linspace(first, first + SPAN, NUM_POINTS)[1:].tolist()]
    truth = [round(math.sin(v), 5) for v in np.linspace(first, first + SPAN, NUM_POINTS)[1:].tolist()]
    steps = [ref["every"] * (i + 1) for i in range(len(ref["loss_curve"]))]
    figures = {
        "prediction": {"series": [
            {"label": "sin(t + Δt)", "x": x, "y": truth},
            {"label": "yours", "x": x, "y": [finite(v) for v in observed["predictions"][0]]},
            {"label": "reference", "x": x, "y": ref["predictions"][0]},
        ], "title": f"one-step-ahead prediction after {iterations} Adam steps (start 0)", "xlabel": "t", "ylabel": "value"},
        "training loss": {"series": [
            {"label": "yours", "x": steps, "y": [finite(v) for v in observed["loss_curve"]]},
            {"label": "reference", "x": steps, "y": ref["loss_curve"]},
        ], "title": "training MSE (mean over each stretch of steps)", "xlabel": "Adam step", "ylabel": "MSE"},
        "your eval MSE": rounded(mse, 5), "reference eval MSE": rounded(want, 5), "pass below": rounded(limit, 5),
    }
    if not (isinstance(mse, float) and math.isfinite(mse)):
        return Verdict.failed("training diverged: the eval MSE is not finite", figures=figures)
    if hidden:  # whatever the MSE: those layers keep their random initial weights
        return Verdict.failed(f"eval MSE {mse:.4g}, but" + _unregistered_note(hidden)[1:], figures=figures)
    if mse > limit:
        return Verdict.failed(
            f"after {iterations} Adam steps the one-step-ahead MSE (mean over starts {', '.join(map(str, eval_starts(train['seed'])))}) is "
            f"{mse:.4g}, above {limit:.4g} ({mse_factor:g}x the reference's {want:.4g} on the same budget)"
            + _training_hint(mse, hidden), figures=figures)
    return Verdict.passed(f"eval MSE {mse:.4g} after {iterations} Adam steps (reference {want:.4g}, pass below {limit:.4g})",
                          figures=figures)


def eval_mse(predictions: Any, seed: int) -> float:
    """The eval MSE of the predictions the run sent, against the wave the judge knows (the run's own figure is not used)."""
    errors = []
    for start, predicted in zip(eval_starts(seed), predictions):
        _, y = sine_sequence(start)
        got = np.asarray(predicted, dtype=np.float64).reshape(-1)
        if got.shape != (NUM_POINTS - 1,):
            return math.nan
        errors.append(float(np.mean((got - y.reshape(-1).numpy().astype(np.float64)) ** 2)))
    return sum(errors) / len(errors) if len(errors) == len(STARTS) else math.nan


def _training_hint(mse: float, hidden: list) -> str:
    if hidden:
        return _unregistered_note(hidden)
    if mse > 0.1:
        return ("; a model that predicts each step from its own input alone stalls near 0.12: check that the state "
                "flows from step to step (batch_first=True, one sequence of T steps) and that nothing after the "
                "linear read-out squashes the prediction")
    return "; check that every layer's parameters reach model.parameters() and that nothing is detached in forward"


def _unregistered_note(hidden: list) -> str:
    return (f"; the model keeps modules in a plain list or dict ({', '.join(hidden)}), so their parameters are not in "
            "model.parameters() and the optimizer never trains them: assign them to attributes or use nn.ModuleList")


# ----------------------------------------------------------------- registration


@hookimpl
def grader_checks(config):
    mse_factor = config.setting(f"{EXERCISE}.training", "mse_factor", MSE_FACTOR)
    iterations = config.setting(f"{EXERCISE}.training", "iterations", TRAIN["iterations"])
    params = secret_params(dict(forward=dict(FORWARD), devices=list(config.devices),
                                train=dict(TRAIN, iterations=iterations)), config.secret)
    # one run for every check: each reads its part of it
    run = Probe("sine_model", probe_sine, params, reference=functools.partial(reference_training, **params["train"]))

    def check(name, title, points, judge, **kw):
        return Check(EXERCISE, name, title, points, run, judge, **kw)

    checks = [
        check("forward.shapes", "forward(x, h0) returns y (B, T, out_dim) and h (1, B, H)", 2, judge_shapes),
        check("forward.batch_first", "x is batch first: each row is its own sequence", 1, judge_batch_first),
        check("forward.uses_h0", "the outputs start from the h0 passed in", 1, judge_uses_h0),
        check("forward.returns_h", "the returned h is the final state: two halves give the whole", 1, judge_returns_h),
        check("training", f"the grader's Adam loop brings the eval MSE within {mse_factor:g}x of the reference's", 4,
              functools.partial(judge_training, mse_factor=mse_factor),
              settings=dict(mse_factor=float(mse_factor), iterations=int(iterations)), explains="The lesson's loop: Adam (lr 1e-3), one sequence per step from h0 = 0, "
                                       "a fixed seeded budget."),
    ]
    for device in config.devices:
        checks.append(check(f"device.{device}", f"the model runs on the device it is moved to ({device})",
                            1 / len(config.devices), functools.partial(judge_device, device=device)))
    return checks
