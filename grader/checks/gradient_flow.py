"""Checks for ``state_jacobian``: one step's Jacobian against autograd, and its product through time.

Back-propagation through time multiplies one Jacobian per step,
``d h_T / d h_0 = J_T ⋯ J_1`` with ``J_t = diag(1 - h_t²) W_hh^T``. Its norm
shrinks or grows geometrically with the scale of ``W_hh``: the reason
gradients vanish or explode, and the reason ``train_epoch`` clips them.
"""

from __future__ import annotations

import functools
import math
from functools import lru_cache
from typing import Any

import numpy as np

import torch

from grader import hookimpl
from grader.compare import FLOAT32_EPS, check_allclose, check_tensor_meta, recurrence_tolerance
from grader.definitions import Check, Probe
from grader.figures import rounded
from grader.hints import explain_error, with_device_hint
from grader.plugins import reference_hooks
from grader.results import ERROR, Verdict
from grader.secret import secret_params
from grader.wire import TensorData

EXERCISE = "gradient_flow"
#: one-step cases: pre-activation scale 0.5 keeps tanh' near 1, scale 3 saturates it
CASES = (
    dict(seed=1, num_hiddens=7, scale=0.5),
    dict(seed=2, num_hiddens=9, scale=3.0),
    dict(seed=3, num_hiddens=1, scale=1.0),
)
#: the product through time, for gains of W_hh that make it vanish, stay level, explode
CHAIN = dict(seed=0, num_hiddens=32, num_steps=40, gains=[0.5, 1.5, 3.0])
GAIN_LABELS = {0.5: "vanishing", 1.5: "roughly stable", 3.0: "exploding"}
#: what each axis of the Jacobian is: row j is h_next[j], column i is h[i]
JACOBIAN_AXES = ("h_next index", "h index")
#: float32 tolerance for one step: a few roundings of 1 - h² and one product
RTOL = 32 * FLOAT32_EPS


def jacobian_case(seed: int, num_hiddens: int, scale: float) -> dict:
    """``h``, the input's contribution ``xw``, ``W_hh`` and ``h_next = tanh(xw + h W_hh)``, float32."""
    g = torch.Generator().manual_seed(seed)
    H = num_hiddens
    h = torch.tanh(torch.randn(H, generator=g))
    W = torch.randn(H, H, generator=g) * scale / math.sqrt(H)
    xw = torch.randn(H, generator=g) * scale
    return {"h": h, "xw": xw, "W": W, "h_next": torch.tanh(xw + h @ W)}


def chain_case(seed: int, num_hiddens: int, num_steps: int, gain: float) -> dict:
    """A trajectory ``h_{t+1} = tanh(xw_t + h_t W)`` from ``h_0 = 0``; W has entries N(0, gain² / H)."""
    g = torch.Generator().manual_seed(seed)
    H = num_hiddens
    W = torch.randn(H, H, generator=g) * gain / math.sqrt(H)
    xw = torch.randn(num_steps, H, generator=g) * 0.5
    states = [torch.zeros(H)]
    for t in range(num_steps):
        states.append(torch.tanh(xw[t] + states[-1] @ W))
    return {"W": W, "xw": xw, "states": states}


def chain_products(jacobian: Any, seed: int, num_hiddens: int, num_steps: int, gains: list) -> dict:
    """For each gain: log10 of the spectral norm of ``J_t ⋯ J_1`` after each step, and the final product."""
    out = {}
    for gain in gains:
        case = chain_case(seed, num_hiddens, num_steps, gain)
        product = torch.eye(num_hiddens)
        norms = []
        for t in range(num_steps):
            J = jacobian(case["states"][t + 1], case["W"])
            if not isinstance(J, torch.Tensor) or tuple(J.shape) != (num_hiddens, num_hiddens):
                got = f"shape {tuple(J.shape)}" if isinstance(J, torch.Tensor) else f"a {type(J).__name__}"
                return {"problem": f"at step {t + 1} of the chain (H = {num_hiddens}) state_jacobian returned {got}, "
                                   f"not ({num_hiddens}, {num_hiddens})"}
            product = J.detach().to(torch.float32) @ product
            # the spectral norm's SVD fails on infinities and NaN; the judge tells those from the product itself
            norm = float(torch.linalg.matrix_norm(product, ord=2)) if bool(torch.isfinite(product).all()) else math.nan
            norms.append(math.log10(norm) if norm > 0 and math.isfinite(norm) else None)
        out[str(gain)] = {"log_norms": norms, "product": product}
    return out


# ----------------------------------------------------------------- probe


def probe_jacobian(ctx, cases: list, chain: dict, devices: list) -> Any:
    """Every check of the exercise reads its part of this one run (one process start instead of two)."""
    jacobian = ctx.student("state_jacobian")
    out: dict[str, Any] = {"cases": _case_runs(jacobian, cases, "cpu")}
    if all(isinstance(r["J"], torch.Tensor) for r in out["cases"]):
        out["chain"] = ctx.attempt(lambda: chain_products(jacobian, **chain))
    out["devices"] = {device: ctx.attempt(lambda device=device: {"cases": _case_runs(jacobian, cases[:1], device)})
                      for device in devices}
    return out


def _case_runs(jacobian: Any, cases: list, device: str) -> list:
    dev = torch.device(device)
    results = []
    for case in cases:
        data = jacobian_case(**case)
        h_next, W = data["h_next"].clone().to(dev), data["W"].clone().to(dev)
        J = jacobian(h_next, W)
        entry: dict[str, Any] = {"J": J if isinstance(J, torch.Tensor) else None, "kind": type(J).__name__}
        if device != "meta":
            entry["untouched"] = bool(torch.equal(h_next.cpu(), data["h_next"]) and torch.equal(W.cpu(), data["W"]))
        results.append(entry)
    return results


# ----------------------------------------------------------------- reference


def reference_jacobian(seed: int, num_hiddens: int, scale: float) -> np.ndarray:
    """Autograd's Jacobian of ``h -> tanh(xw + h W)`` at the case's ``h``, computed once."""
    return _reference_jacobian(seed, num_hiddens, scale)


@lru_cache(maxsize=16)
def _reference_jacobian(seed: int, num_hiddens: int, scale: float) -> np.ndarray:
    data = jacobian_case(seed, num_hiddens, scale)
    J = torch.autograd.functional.jacobian(lambda h: torch.tanh(data["xw"] + h @ data["W"]), data["h"])
    return J.numpy().astype(np.float32)


@lru_cache(maxsize=4)
def _reference_chain(seed: int, num_hiddens: int, num_steps: int, gains: tuple) -> dict:
    products = chain_products(reference_hooks()["state_jacobian"], seed, num_hiddens, num_steps, list(gains))
    for gain in gains:
        products[str(gain)]["product"] = products[str(gain)]["product"].numpy()
    return products


def autograd_chain(seed: int, num_hiddens: int, num_steps: int, gain: float) -> np.ndarray:
    """Autograd's ``d h_T / d h_0`` through the unrolled recurrence (what the reference's product equals; tests hold it to that)."""
    case = chain_case(seed, num_hiddens, num_steps, gain)

    def unrolled(h0):
        h = h0
        for t in range(num_steps):
            h = torch.tanh(case["xw"][t] + h @ case["W"])
        return h

    return torch.autograd.functional.jacobian(unrolled, torch.zeros(num_hiddens)).numpy()


def reference_chain(seed: int, num_hiddens: int, num_steps: int, gains: list) -> dict:
    return _reference_chain(seed, num_hiddens, num_steps, tuple(gains))


# ----------------------------------------------------------------- judges


def _case_problem(entry: dict, H: int, device: str) -> str | None:
    if entry["J"] is None:
        return f"state_jacobian should return a tensor, but returned a {entry['kind']}"
    problem = check_tensor_meta(f"the Jacobian for H = {H}", (H, H), entry["J"], device=device, axes=JACOBIAN_AXES)
    if problem and tuple(entry["J"].shape) == (H,):
        problem += ("; that is only the diagonal factor 1 - h_next²: the Jacobian is diag(1 - h_next²) @ W_hh.T, "
                    "a full (H, H) matrix")
    return problem


def judge_shape(observed: Any, cases: list, **_: Any) -> Verdict:
    return _shape(observed, cases, "cpu")


def judge_device(observed: Any, cases: list, *, device: str, **_: Any) -> Verdict:
    run = observed["devices"][device]
    if "error" in run:
        return with_device_hint(Verdict(ERROR, explain_error("state_jacobian", run["error"])), device)
    return with_device_hint(_shape(run, cases[:1], device), device)


def _shape(observed: Any, cases: list, device: str) -> Verdict:
    for case, entry in zip(cases, observed["cases"]):
        problem = _case_problem(entry, case["num_hiddens"], device)
        if problem:
            return Verdict.failed(problem)
    sizes = ", ".join(f"({c['num_hiddens']}, {c['num_hiddens']})" for c in cases)
    return Verdict.passed(f"float32 Jacobians of shapes {sizes}" + (f" on {device}" if device != "cpu" else ""))


def _variants(h_next: np.ndarray, W: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """Likely mistakes, each with what to fix."""
    d = 1 - h_next.astype(np.float64) ** 2
    W = W.astype(np.float64)
    return [
        (W @ np.diag(d), "it is the transpose of the Jacobian: J[j, i] = d h_next[j] / d h[i] = (1 - h_next[j]²) W_hh[i, j], "
                         "so rows index h_next: diag(1 - h_next²) @ W_hh.T"),
        (np.diag(d) @ W, "W_hh is not transposed: with row vectors h W_hh, entry (j, i) of the Jacobian is W_hh[i, j], "
                         "so use diag(1 - h_next²) @ W_hh.T"),
        (W.T @ np.diag(d), "the tanh derivative scales the columns; it belongs to the rows (output j): "
                           "diag(1 - h_next²) @ W_hh.T"),
        (W.T, "the tanh derivative is missing: multiply row j by 1 - h_next[j]²"),
        (W, "the tanh derivative is missing and W_hh is not transposed: diag(1 - h_next²) @ W_hh.T"),
        (np.diag(1 - np.tanh(h_next.astype(np.float64)) ** 2) @ W.T,
         "tanh was applied again: h_next is already tanh(...), so its derivative is 1 - h_next², not 1 - tanh(h_next)²"),
        (np.diag(1 - h_next.astype(np.float64)) @ W.T, "the derivative of tanh is 1 - h_next², squared, not 1 - h_next"),
        (np.diag(d ** 2) @ W.T, "the derivative of tanh is 1 - h_next², not (1 - h_next²)²"),
        (np.diag(1 - d) @ W.T, "the derivative of tanh is 1 - h_next², not h_next²"),
    ]


def judge_values(observed: Any, cases: list, **_: Any) -> Verdict:
    for case, entry in zip(cases, observed["cases"]):
        H = case["num_hiddens"]
        problem = _case_problem(entry, H, "cpu")
        if problem:
            return Verdict.failed(problem)
        want = reference_jacobian(**case)
        scale = max(1.0, float(np.abs(want).max()))
        problem = check_allclose(f"the Jacobian for H = {H}", want, entry["J"], RTOL, RTOL * scale,
                                 ("row (h_next index)", "column (h index)"))
        if problem:
            data = jacobian_case(**case)
            got = entry["J"].array.astype(np.float64)
            for variant, hint in _variants(data["h_next"].numpy(), data["W"].numpy()):
                if H > 1 and np.allclose(got, variant, rtol=1e-4, atol=1e-6 * scale):
                    return Verdict.failed(f"{problem}; {hint}")
            return Verdict.failed(problem + "; expected diag(1 - h_next²) @ W_hh.T")
        if not entry.get("untouched", True):
            return Verdict.failed("state_jacobian changed h_next or W_hh in place; compute new tensors instead")
    return Verdict.passed(f"matches autograd's Jacobian for {len(cases)} states, saturated tanh included")


def judge_chain(observed: Any, cases: list, chain: dict, **_: Any) -> Verdict:
    got = observed.get("chain")
    problem = _first_case_problem(observed, cases, "cpu")
    if problem:  # the words of jacobian.shape: one cause, told once
        return Verdict.failed(problem)
    if got is None:
        return Verdict.failed("the product through time could not be formed: state_jacobian did not return tensors")
    if "error" in got:
        return Verdict(ERROR, explain_error("state_jacobian, on the states of the chain,", got["error"],
                                            returned_by="state_jacobian"))
    if "problem" in got:
        return Verdict.failed(got["problem"])
    ref = reference_chain(**chain)
    steps = list(range(1, chain["num_steps"] + 1))
    series = []
    for gain in chain["gains"]:
        series.append({"label": f"gain {gain:g} ({GAIN_LABELS.get(gain, '')})", "x": steps,
                       "y": got[str(gain)]["log_norms"]})
    figure = {"series": series, "title": "norm of the product of your Jacobians, J_t ⋯ J_1, for three scales of W_hh",
              "xlabel": "time steps back-propagated", "ylabel": "log10 of the spectral norm"}
    summary = {f"log10 norm after {chain['num_steps']} steps, gain {gain:g}": rounded(got[str(gain)]["log_norms"][-1], 2)
               for gain in chain["gains"]}
    figures = {"Jacobian products": figure, **summary}
    for gain in chain["gains"]:
        mine, truth = got[str(gain)], ref[str(gain)]
        product = mine["product"]
        if not isinstance(product, TensorData) or product.array is None:
            return Verdict.failed("the product of the Jacobians is not a tensor", figures=figures)
        want = truth["product"].astype(np.float64)
        have = product.array.astype(np.float64)
        # relative to the product's own size, which spans 20 orders of magnitude across the gains
        size = float(np.linalg.norm(want))
        error = float(np.linalg.norm(have - want)) / size if size > 0 else float(np.linalg.norm(have))
        if not math.isfinite(error) or error > recurrence_tolerance(chain["num_steps"]):
            series += [{"label": f"reference, gain {g:g}", "x": steps, "y": ref[str(g)]["log_norms"]} for g in chain["gains"]]
            return Verdict.failed(
                f"with W_hh of gain {gain:g}, multiplying your Jacobians over {chain['num_steps']} steps, "
                f"J_{chain['num_steps']} ⋯ J_1, does not give autograd's d h_{chain['num_steps']} / d h_0 "
                f"(relative error {error:.3g}); each factor must be diag(1 - h_(t+1)²) @ W_hh.T", figures=figures)
    last = {gain: got[str(gain)]["log_norms"][-1] for gain in chain["gains"]}
    trend = ", ".join(f"gain {g:g}: 10^{rounded(v, 2)}" for g, v in last.items())
    return Verdict.passed(f"the product of your Jacobians over {chain['num_steps']} steps equals autograd's "
                          f"d h_T / d h_0 ({trend})", figures=figures)


def _first_case_problem(observed: Any, cases: list, device: str) -> str | None:
    for case, entry in zip(cases, observed["cases"]):
        problem = _case_problem(entry, case["num_hiddens"], device)
        if problem:
            return problem
    return None


# ----------------------------------------------------------------- registration


def _references(cases: list, chain: dict) -> None:
    """Everything the judges compare with, computed once."""
    for case in cases:
        reference_jacobian(**case)
    reference_chain(**chain)


@hookimpl
def grader_checks(config):
    params = secret_params(dict(cases=[dict(c) for c in CASES], chain=dict(CHAIN), devices=list(config.devices)),
                           config.secret)
    # one run for every check: each reads its part of it
    run = Probe("state_jacobian", probe_jacobian, params,
                reference=functools.partial(_references, params["cases"], params["chain"]))

    def check(name, title, points, judge, **kw):
        return Check(EXERCISE, name, title, points, run, judge, **kw)

    checks = [
        check("jacobian.shape", "state_jacobian returns an (H, H) float32 tensor", 2, judge_shape),
        check("jacobian.values", "state_jacobian equals autograd's d h_(t+1) / d h_t", 4, judge_values),
        check("jacobian.chain", "the product of Jacobians over 40 steps equals autograd's d h_T / d h_0", 3, judge_chain,
              explains="Back-propagation through time multiplies one such Jacobian per step; its norm vanishes or "
                       "explodes geometrically with the scale of W_hh, which is why gradients are clipped."),
    ]
    for device in config.devices:
        checks.append(check(f"device.{device}", f"state_jacobian keeps the result on the inputs' device ({device})",
                            1 / len(config.devices), functools.partial(judge_device, device=device)))
    return checks
