"""Checks for ``grad_clipping``: joint norm, direction, the untouched case, both kinds of net."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from grader import hookimpl
from grader.definitions import Check, Probe
from grader.hints import Hint
from grader.results import PASSED, Verdict
from grader.secret import secret_params
from grader.wire import TensorData

EXERCISE = "grad_clipping"
#: name -> (kind of net, theta, joint norm of the gradients as a multiple of theta, equal per-parameter norms)
CASES = {
    "above": ("module", 0.7, 5.0, False),
    "below": ("module", 0.7, 0.6, False),
    "scratch": ("scratch", 1.0, 3.0, False),
    "joint": ("module", 0.5, 1.6, True),
}
SHAPES = [(6, 4), (4,), (4, 3), (3,)]
#: torch.cat of the gradients themselves: a weight's is 2-D and a bias's 1-D, so they cannot be joined unflattened
HINTS = (Hint(r"Tensors must have same number of dimensions|expects each tensor to be equal size",
              "the gradients have different shapes (a weight's is 2-D, a bias's 1-D), so torch.cat or torch.stack "
              "cannot join them as they are: flatten each one first, torch.cat([p.grad.reshape(-1) for p in params]), "
              "or add up the squares tensor by tensor, torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))"),)


def make_grads(case: str, seed: int) -> tuple[list, float]:
    """Gradients with a known joint norm for ``case``, plus theta."""
    _, theta, multiple, equal = CASES[case]
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(*shape, generator=g) for shape in SHAPES]
    if equal:  # each parameter's own norm is below theta, only the joint norm is above
        target = multiple * theta / np.sqrt(len(grads))
        grads = [gr * (target / gr.norm()) for gr in grads]
    else:
        joint = torch.sqrt(sum((gr ** 2).sum() for gr in grads))
        grads = [gr * (multiple * theta / joint) for gr in grads]
    return grads, theta


def make_values(value_seed: int) -> list:
    """The parameters' values (not their gradients), in the layout of :data:`SHAPES`."""
    g = torch.Generator().manual_seed(value_seed)
    return [torch.randn(*shape, generator=g) for shape in SHAPES]


class ScratchModel:
    """A scratch model as the book builds it: no ``nn.Module``, its parameters are the list ``params``."""

    def __init__(self, params: list):
        self.params = params

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"a scratch model has no attribute '{name}'; it is not an nn.Module, "
                             "its parameters are the list net.params")


def probe_clip(ctx, case: str, seed: int, value_seed: int, companion: Optional[dict] = None) -> Any:
    """One call of the student's grad_clipping; ``companion``: one more call on another case, run the same way."""
    if companion is not None:
        return dict(probe_clip(ctx, case, seed, value_seed), companion=probe_clip(ctx, **companion))
    grads, theta = make_grads(case, seed)
    values = make_values(value_seed)
    kind = CASES[case][0]
    if kind == "module":
        net = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
        params = [net[0].weight, net[0].bias, net[2].weight, net[2].bias]
        with torch.no_grad():
            for p, v in zip(params, [values[0].T, values[1], values[2].T, values[3]]):
                p.copy_(v)
        for p, gr in zip(params, [grads[0].T, grads[1], grads[2].T, grads[3]]):
            p.grad = gr.clone()
    else:
        params = [v.clone().requires_grad_(True) for v in values]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        net = ScratchModel(params)
    before = [p.detach().clone() for p in params]
    ctx.student("grad_clipping")(net, theta)
    if kind == "module":
        params = [net[0].weight, net[0].bias, net[2].weight, net[2].bias]
        grads_after = [params[0].grad.T, params[1].grad, params[2].grad.T, params[3].grad]
    else:
        grads_after = [p.grad for p in net.params]
    return {
        "grads": [gr if isinstance(gr, torch.Tensor) else None for gr in grads_after],
        "params_unchanged": all(torch.equal(p.detach(), b) for p, b in zip(params, before)),
    }


def judge_clip(observed: Any, case: str, seed: int, value_seed: int, companion: Optional[dict] = None) -> Verdict:
    verdict = _judge_one(observed, case, seed, value_seed)
    if companion is None or verdict.status != PASSED:
        return verdict
    # gradients below θ are left alone by a function that does nothing at all, which earns nothing
    above = companion["case"]
    grads, theta = make_grads(above, companion["seed"])
    got = observed["companion"]["grads"]
    if all(isinstance(g, TensorData) and g.array is not None and g.array.shape == tuple(w.shape) and
           np.array_equal(g.array, w.numpy()) for g, w in zip(got, grads)):
        norm = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))
        return Verdict.failed(f"gradients below θ were left alone, but so were gradients of joint norm {norm:.3g} "
                              f"> θ = {theta}: grad_clipping does not clip yet")
    return verdict


def _judge_one(observed: Any, case: str, seed: int, value_seed: int) -> Verdict:
    grads, theta = make_grads(case, seed)
    given = [gr.numpy().astype(np.float64) for gr in grads]
    norm = float(np.sqrt(sum((gr ** 2).sum() for gr in given)))
    scale = min(1.0, theta / norm)
    if not observed["params_unchanged"]:
        return Verdict.failed("grad_clipping changed the parameters themselves; it should only rescale their .grad")
    got = observed["grads"]
    if any(gr is None or not isinstance(gr, TensorData) or gr.array is None for gr in got):
        return Verdict.failed("after grad_clipping some parameter has no .grad tensor left")
    got = [gr.array.astype(np.float64) for gr in got]
    if any(a.shape != b.shape for a, b in zip(got, given)):
        return Verdict.failed("grad_clipping changed the shape of a gradient")
    new_norm = float(np.sqrt(sum((gr ** 2).sum() for gr in got)))
    expected = [gr * scale for gr in given]
    if all(np.allclose(a, b, rtol=1e-5, atol=1e-7 * max(1.0, norm)) for a, b in zip(got, expected)):
        what = f"joint norm {norm:.3g} > θ = {theta}: rescaled to {new_norm:.4g}" if scale < 1 else f"joint norm {norm:.3g} ≤ θ = {theta}: left alone"
        return Verdict.passed(what, figures={"norm before": round(norm, 5), "norm after": round(new_norm, 5), "theta": theta})
    figures = {"norm before": round(norm, 5), "norm after": round(new_norm, 5), "theta": theta}
    return Verdict.failed(_diagnose(given, got, norm, new_norm, theta), figures=figures)


def _diagnose(given: list, got: list, norm: float, new_norm: float, theta: float) -> str:
    unchanged = all(np.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(got, given))
    flat_given, flat_got = np.concatenate([g.ravel() for g in given]), np.concatenate([g.ravel() for g in got])
    cosine = float(flat_given @ flat_got / (np.linalg.norm(flat_given) * np.linalg.norm(flat_got) + 1e-30))
    if norm <= theta:
        if unchanged:
            return "gradients changed"  # unreachable: unchanged gradients pass
        if abs(new_norm - theta) < 1e-3 * theta:
            return (f"the joint norm {norm:.3g} was already below θ = {theta}, yet the gradients were rescaled to norm θ; "
                    "only rescale when the norm is larger than θ")
        return f"the joint norm {norm:.3g} was already below θ = {theta}, so the gradients should be left unchanged, but they changed"
    if unchanged:
        per_param = [float(np.linalg.norm(g)) for g in given]
        if max(per_param) <= theta:
            return (f"no gradient was changed: each parameter's own gradient norm is below θ = {theta}, but their JOINT "
                    f"norm is {norm:.3g}; clip the norm of all gradients together")
        sqrt = " (is the norm square-rooted? the sum of squares is below θ)" if norm ** 2 <= theta else ""
        return f"the joint gradient norm is {norm:.3g} > θ = {theta}, but the gradients were left unchanged{sqrt}"
    own = [float(np.linalg.norm(g)) for g in given]
    clipped_alone = [g * min(1.0, theta / n) for g, n in zip(given, own)]
    if all(np.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(got, clipped_alone)):
        return (f"the gradients were clipped one parameter at a time (joint norm now {new_norm:.4g} > θ = {theta}); "
                "compute one norm over all parameters and scale them all by θ / norm")
    if all(np.allclose(a, np.clip(b, -theta, theta), rtol=1e-5, atol=1e-7) for a, b in zip(got, given)):
        return (f"the gradient values were clamped to [-θ, θ] one by one (joint norm now {new_norm:.4g}); that changes the "
                "gradients' direction: multiply every gradient by the same factor θ / norm instead")
    factor = theta / norm
    left = [k + 1 for k, (a, b) in enumerate(zip(got, given)) if np.allclose(a, b, rtol=1e-6, atol=0)]
    if left and all(np.allclose(a, b * factor, rtol=1e-4, atol=1e-7) or k + 1 in left
                    for k, (a, b) in enumerate(zip(got, given))):
        return (f"only some gradients were rescaled by θ / norm; those of parameters {', '.join(map(str, left))} "
                f"(of {len(got)}) were left unchanged: scale every parameter's gradient (is there a return or break "
                "inside the loop?)")
    if cosine < 1 - 1e-4:
        return (f"the gradients' direction changed (cosine {cosine:.4f} with the original); clipping must multiply every "
                "gradient by the same factor θ / norm (clamping values elementwise changes the direction)")
    # every gradient scaled by one factor, the wrong one
    if abs(new_norm - theta / norm) <= 1e-3 * theta / norm:
        return (f"after clipping the joint norm should be θ = {theta}, but it is {new_norm:.4g} = θ / norm: the gradients "
                "were scaled by θ / norm², so the square root is missing: norm = sqrt(sum of p.grad ** 2)")
    for k, n in enumerate(own):
        if len(own) > 1 and abs(new_norm - theta * norm / n) <= 1e-3 * new_norm:
            return (f"after clipping the joint norm should be θ = {theta}, but it is {new_norm:.4g}: the norm was taken "
                    f"over parameter {k + 1}'s gradient only; take it over all parameters' gradients jointly")
    # one common factor s: clipping by θ / n means the norm used was n = θ / s; name that number
    scale = new_norm / norm
    if abs(scale - norm / theta) <= 1e-3 * scale:
        return (f"every gradient was multiplied by {scale:.4g} = norm / θ, which makes it longer: after clipping the "
                f"joint norm should be θ = {theta}, but it is {new_norm:.4g}; multiply by θ / norm")
    return (f"every gradient was multiplied by {scale:.4g} = θ / {theta / scale:.4g}, so the norm used was "
            f"{theta / scale:.4g}, but the joint norm sqrt(sum of every p.grad ** 2) is {norm:.4g}: after clipping "
            f"it should be θ = {theta}, and it is {new_norm:.4g}")


@hookimpl
def grader_checks(config):
    def clip(name: str, title: str, points: float) -> Check:
        params = dict(case=name, seed=sorted(CASES).index(name) + 3, value_seed=99)
        if name == "below":
            params["companion"] = dict(case="above", seed=sorted(CASES).index("above") + 3, value_seed=99)
        params = secret_params(params, config.secret)
        return Check(EXERCISE, name, title, points, Probe("grad_clipping", probe_clip, params, hints=HINTS), judge_clip)

    return [
        clip("above", "gradients above θ are rescaled to norm θ, direction kept (nn.Module)", 3),
        clip("below", "gradients already below θ are left alone", 2),
        clip("scratch", "works on a scratch model through net.params", 2),
        clip("joint", "the norm is taken over all parameters jointly", 3),
    ]
