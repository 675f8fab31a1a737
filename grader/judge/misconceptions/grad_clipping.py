"""Mistakes in ``grad_clipping``, recognised from the gradients its failing checks saw.

Every check knows the gradients it handed in (:func:`grader.checks.grad_clipping.make_grads`, same
seed) and sees what they became. When every gradient was multiplied by one factor ``s``, clipping
``θ / norm`` means the student's norm was ``θ / s``: :func:`norm_used` works that number back and
names which norm it is (the sum of absolute values, the sum of squares, one parameter's norm...).
The other entries match a mistake's exact result: each parameter clipped on its own, values clamped
to [-θ, θ], only the first few gradients rescaled, rescaling by norm / θ, rescaling below θ, or
clipping by the norm of the parameters' values (:func:`grader.checks.grad_clipping.make_values`).
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import numpy as np

from grader import hookimpl
from grader.checks.grad_clipping import make_grads, make_values
from grader.definitions import Evidence, Misconception
from grader.wire import TensorData

ABOVE, BELOW, SCRATCH, JOINT = (f"grad_clipping.{case}" for case in ("above", "below", "scratch", "joint"))
#: the checks whose gradients show a wrong norm; "above" first, where the gradients are largest
NUMERIC = (ABOVE, SCRATCH, JOINT, BELOW)
#: how closely the norm worked back must equal a candidate (the student computes in float32)
NORM_RTOL = 2e-4
#: how far apart two candidates must be for the match to say which one it was
DISTINCT = 2e-3


def _cat(grads: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([g.ravel() for g in grads])


#: the norms a student may compute, by name; "l2" is the right one
NORMS: dict[str, Callable[[list[np.ndarray]], float]] = {
    "l2": lambda g: float(np.sqrt(np.sum(_cat(g) ** 2))),
    "l1": lambda g: float(np.sum(np.abs(_cat(g)))),
    "sum-of-squares": lambda g: float(np.sum(_cat(g) ** 2)),
    "max-abs": lambda g: float(np.max(np.abs(_cat(g)))),
    # torch.mean in place of torch.sum: over all entries at once, or per parameter then summed
    "mean": lambda g: float(np.sqrt(np.mean(_cat(g) ** 2))),
    "mean-per-parameter": lambda g: float(np.sqrt(sum(np.mean(x ** 2) for x in g))),
    "sum-of-norms": lambda g: float(sum(np.linalg.norm(x) for x in g)),
}


def _candidates(given: list[np.ndarray]) -> dict[str, float]:
    """Every candidate norm of ``given``; ``param-k``: parameter k's norm alone."""
    found = {name: f(given) for name, f in NORMS.items()}
    found.update({f"param-{k + 1}": float(np.linalg.norm(g)) for k, g in enumerate(given)})
    return found


def inputs(evidence: Evidence) -> tuple[list[np.ndarray], float]:
    """The gradients the check handed in (float64) and θ, rebuilt from its seed."""
    grads, theta = make_grads(evidence.params["case"], evidence.params["seed"])
    return [g.numpy().astype(np.float64) for g in grads], float(theta)


def returned(observed, given: list[np.ndarray]) -> Optional[list[np.ndarray]]:
    """The gradients after the student's call, when every one came back with its shape and the parameters kept theirs."""
    if not isinstance(observed, dict) or not observed.get("params_unchanged"):
        return None
    got = observed.get("grads")
    if not isinstance(got, list) or len(got) != len(given):
        return None
    if not all(isinstance(g, TensorData) and g.array is not None and g.array.shape == w.shape for g, w in zip(got, given)):
        return None
    return [g.array.astype(np.float64) for g in got]


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(b).max(initial=0.0)))))


def common_scale(given: list[np.ndarray], got: list[np.ndarray]) -> Optional[float]:
    """The one factor every gradient was multiplied by, or None when they were not all scaled alike."""
    flat_given, flat_got = _cat(given), _cat(got)
    scale = float(flat_given @ flat_got / (flat_given @ flat_given))
    return scale if scale > 0 and _close(flat_got, scale * flat_given) else None


def norm_used(given: list[np.ndarray], got: list[np.ndarray], theta: float) -> Optional[tuple[str, ...]]:
    """The candidate norms the student's clipping used (``θ / scale``), or None when that cannot be told.

    Only a real rescaling says anything (unchanged gradients fit every norm at most θ), and the
    norm worked back must fit these candidates and no other (e.g. several parameters with one norm).
    """
    scale = common_scale(given, got)
    if scale is None or abs(scale - 1) < 1e-5:
        return None
    implied = theta / scale
    norms = _candidates(given)
    fits = tuple(name for name, n in norms.items() if abs(implied - n) <= NORM_RTOL * n)
    near = [name for name, n in norms.items() if abs(implied - n) <= DISTINCT * n]
    if not fits or set(near) != set(fits):
        return None
    return fits


def _clipped_by(given: list[np.ndarray], norm: float, theta: float) -> list[np.ndarray]:
    return [g * min(1.0, theta / norm) for g in given]


def _differs_from_correct(given: list[np.ndarray], mistaken: list[np.ndarray], theta: float) -> bool:
    correct = _clipped_by(given, NORMS["l2"](given), theta)
    return not all(_close(a, b) for a, b in zip(mistaken, correct))


def _matches(given: list[np.ndarray], got: list[np.ndarray], mistaken: list[np.ndarray], theta: float) -> bool:
    return _differs_from_correct(given, mistaken, theta) and all(_close(a, b) for a, b in zip(got, mistaken))


def _run(evidence: Evidence):
    given, theta = inputs(evidence)
    return given, returned(evidence.observed, given), theta


# --- recognisers ------------------------------------------------------------------------------------------------------

def _wrong_norm(*names: str) -> Callable[[Evidence], bool]:
    """The gradients were rescaled to θ over one of these norms (``param-*``: any single parameter's)."""
    def recognise(evidence: Evidence) -> bool:
        given, got, theta = _run(evidence)
        if got is None:
            return False
        fits = norm_used(given, got, theta)
        if not fits or "l2" in fits:
            return False
        return all(any(f == n or n.endswith("*") and f.startswith(n[:-1]) for n in names) for f in fits) \
            and _matches(given, got, _clipped_by(given, _candidates(given)[fits[0]], theta), theta)
    return recognise


def _per_parameter(evidence: Evidence) -> bool:
    given, got, theta = _run(evidence)
    if got is None or all(_close(a, b) for a, b in zip(got, given)):
        return False  # nothing was rescaled: that also fits a function that never clips
    mistaken = [g * min(1.0, theta / float(np.linalg.norm(g))) for g in given]
    return _matches(given, got, mistaken, theta)


def _norm_of_values(evidence: Evidence) -> bool:
    """Clipped by θ over the joint norm of the parameters' values (p.data or p itself), not of their gradients."""
    given, got, theta = _run(evidence)
    if got is None:
        return False
    weights = [v.numpy().astype(np.float64) for v in make_values(evidence.params["value_seed"])]
    return _matches(given, got, _clipped_by(given, NORMS["l2"](weights), theta), theta)


def _clamped(evidence: Evidence) -> bool:
    given, got, theta = _run(evidence)
    if got is None:
        return False
    mistaken = [np.clip(g, -theta, theta) for g in given]
    return not all(_close(a, b) for a, b in zip(mistaken, given)) and _matches(given, got, mistaken, theta)


def _some_rescaled(evidence: Evidence) -> bool:
    """The first few gradients rescaled by θ / norm and the rest left alone (a return or break inside the loop)."""
    given, got, theta = _run(evidence)
    norm = NORMS["l2"](given)
    if got is None or norm <= theta:
        return False
    scaled = [_close(a, b * theta / norm) for a, b in zip(got, given)]
    kept = [_close(a, b) for a, b in zip(got, given)]
    if not all(s or k for s, k in zip(scaled, kept)):
        return False
    done = [s and not k for s, k in zip(scaled, kept)]
    return any(done) and not all(done) and all(k for s, k in zip(scaled, kept) if not s)


def _inverted(evidence: Evidence) -> bool:
    """Rescaled by norm / θ instead of θ / norm (only when norm > θ)."""
    given, got, theta = _run(evidence)
    norm = NORMS["l2"](given)
    if got is None or norm <= theta:
        return False
    scale = common_scale(given, got)
    return scale is not None and abs(scale - norm / theta) <= NORM_RTOL * scale


def _below(evidence: Evidence) -> Optional[tuple[bool, Optional[bool]]]:
    """On the "below" check: (rescaled to norm θ although below θ, gradients above θ clipped right / left alone / unknown)."""
    if evidence.params.get("case") != "below":
        return None
    given, got, theta = _run(evidence)
    norm = NORMS["l2"](given)
    if got is None or norm >= theta or not all(_close(a, b * theta / norm) for a, b in zip(got, given)):
        return False, None
    companion = evidence.params.get("companion")
    if not companion or not isinstance(evidence.observed.get("companion"), dict):
        return True, None
    grads, above_theta = make_grads(companion["case"], companion["seed"])
    above = [g.numpy().astype(np.float64) for g in grads]
    after = returned(evidence.observed["companion"], above)
    if after is None:
        return True, None
    above_norm = NORMS["l2"](above)
    if above_norm <= above_theta:
        return True, None
    if all(_close(a, b) for a, b in zip(after, above)):
        return True, False
    return True, all(_close(a, b * above_theta / above_norm) for a, b in zip(after, above))


def _always_rescales(evidence: Evidence) -> bool:
    seen = _below(evidence)
    return bool(seen and seen[0] and seen[1] is not False)


def _comparison_flipped(evidence: Evidence) -> bool:
    seen = _below(evidence)
    return bool(seen and seen[0] and seen[1] is False)


def _raised(pattern: str) -> Callable[[Evidence], bool]:
    def recognise(evidence: Evidence) -> bool:
        return evidence.observed is None and re.search(pattern, evidence.message or "") is not None
    return recognise


# --- the catalogue ----------------------------------------------------------------------------------------------------

FIX = "norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params)), then, if norm > θ, p.grad[:] *= θ / norm for every p"
JOINT_NORM = ("Clipping rescales the gradients so that their joint norm, the square root of the sum of every "
              "squared entry of every p.grad, is at most θ.")


def _norm_entry(key: str, mistake: str, why: str, *names: str) -> Misconception:
    return Misconception(f"clip.{key}", NUMERIC, mistake, f"{JOINT_NORM} {why}", f"{FIX}.", _wrong_norm(*names))


@hookimpl
def grader_misconceptions(config):
    return [
        Misconception(
            "clip.modules-only", (SCRATCH,),
            "grad_clipping only handles an nn.Module: it calls net.parameters(), which a scratch model does not have",
            "The book's scratch model is not an nn.Module; its parameters are the list net.params.",
            "params = [p for p in net.parameters() if p.requires_grad] if isinstance(net, nn.Module) else net.params",
            _raised(r"has no attribute '(named_)?parameters'")),
        Misconception(
            "clip.params-only", (ABOVE, JOINT, BELOW),
            "grad_clipping only handles a scratch model: it reads net.params, which an nn.Module does not have",
            "A model built from torch.nn keeps its parameters in net.parameters(); only the scratch model has net.params.",
            "params = [p for p in net.parameters() if p.requires_grad] if isinstance(net, nn.Module) else net.params",
            _raised(r"has no attribute 'params'")),
        Misconception(
            "clip.per-parameter", (JOINT, ABOVE, SCRATCH, BELOW),
            "each parameter's gradient is clipped by its own norm, not by the joint norm of all of them",
            "Clipping one parameter at a time changes the direction of the whole gradient and lets its joint norm stay "
            "above θ (each part can be below θ while all together are not).",
            "compute one norm over all parameters' gradients together, then scale every gradient by θ / norm",
            _per_parameter),
        Misconception(
            "clip.norm-of-values", NUMERIC,
            "the norm is computed from the parameters' values (p.data or p) instead of their gradients (p.grad)",
            "Clipping limits the size of the update step, so the norm compared with θ is the joint norm of the "
            "gradients; the weights' own size says nothing about how large this step is.",
            f"{FIX}.", _norm_of_values),
        Misconception(
            "clip.by-value", NUMERIC,
            "the gradient values were clamped to [-θ, θ] one by one (torch.clamp or clip_grad_value_)",
            "Clamping entries changes the gradient's direction, and its norm can stay far above θ; clipping by norm "
            "multiplies every gradient by the same factor θ / norm, which keeps the direction.",
            f"{FIX}.", _clamped),
        Misconception(
            "clip.some-parameters", NUMERIC,
            "only some gradients were rescaled by θ / norm and the rest left unchanged (a return or break inside "
            "the loop over the parameters?)",
            "Every parameter's gradient has to be multiplied by the same factor, or the clipped gradient points in "
            "another direction.",
            "let the loop `for p in params: p.grad[:] *= θ / norm` run over every parameter, and return after it",
            _some_rescaled),
        Misconception(
            "clip.norm-over-theta", NUMERIC,
            "the gradients are multiplied by norm / θ instead of θ / norm",
            "When the norm is above θ, norm / θ is larger than 1, so the gradients grow instead of shrinking to norm θ.",
            "p.grad[:] *= theta / norm", _inverted),
        Misconception(
            "clip.always-rescales", (BELOW,),
            "the gradients are rescaled to norm θ even when their norm is already below θ",
            "Clipping only caps the norm: gradients whose joint norm is at most θ must be left as they are, "
            "otherwise small gradients are blown up to norm θ. Only rescale when norm > θ.",
            "if norm > theta: for p in params: p.grad[:] *= theta / norm", _always_rescales),
        Misconception(
            "clip.comparison-flipped", (BELOW, ABOVE, SCRATCH, JOINT),
            "the comparison with θ is the wrong way round: gradients below θ are blown up to norm θ and gradients "
            "above θ are left alone",
            "Clipping only rescales when the joint norm is larger than θ, and then shrinks it to θ.",
            "if norm > theta: for p in params: p.grad[:] *= theta / norm", _comparison_flipped),
        _norm_entry("no-sqrt", "the norm is the sum of the squared gradients, without the square root",
                    "Without the square root the norm is squared, so gradients are scaled by θ / norm² and end up "
                    "much shorter than θ (or are not clipped at all when the sum of squares is below θ).",
                    "sum-of-squares"),
        _norm_entry("l1-norm", "the norm is the sum of the gradients' absolute values (an L1 norm, or norm_type=1), not the joint L2 norm",
                    "The sum of absolute values is larger than the L2 norm, so the clipped gradients end up shorter "
                    "than θ, and gradients already below θ get clipped too.", "l1"),
        _norm_entry("max-norm", "the norm is the largest absolute gradient value (a max norm, or norm_type=inf), not the joint L2 norm",
                    "The largest entry is smaller than the L2 norm, so clipped gradients stay longer than θ.", "max-abs"),
        _norm_entry("one-parameter-norm", "the norm was taken over only one parameter's gradient (e.g. the first, or the "
                    "last one a loop left in `norm`), not over all of them",
                    "The clipping factor must come from all parameters' gradients together; one parameter's norm "
                    "gives the wrong factor for all of them.", "param-*"),
        _norm_entry("mean-not-sum", "the norm uses a mean (torch.mean) where it needs a sum of the squared gradients",
                    "Averaging divides by the number of entries, so the norm is too small and the clipped gradients "
                    "stay longer than θ.", "mean", "mean-per-parameter"),
        _norm_entry("sum-of-norms", "the norm adds up the parameters' own norms instead of their squares",
                    "The joint norm is sqrt(n₁² + n₂² + ...) over the parameters' norms nᵢ, not n₁ + n₂ + ...; the sum "
                    "is larger, so the clipped gradients end up shorter than θ.", "sum-of-norms"),
    ]
