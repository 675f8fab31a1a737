"""An example check pack: one hidden check of ``grad_clipping`` on a deeper network, and the mistake
it is built to catch, named for students (a misconception).

Load it with ``grade --plugins examples/check_pack`` or install it (``pip install
examples/check_pack``: it registers under the ``rnn_grader`` entry point). Its check is hidden:
it runs only with ``--hidden``, in ``--batch`` and in the Gradescope autograder, and students
see it only once the instructor releases it. ``docs/check-packs.md`` walks through it.

The module is self-contained on the runner's side: the runner builds it from its source for
the runs of its own probe, so it imports only the grader, torch, numpy and the standard library.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from grader import hookimpl
from grader.definitions import Check, Evidence, Misconception, Probe
from grader.results import Verdict
from grader.secret import secret_params
from grader.wire import TensorData

#: layer widths of the network: eight parameters whose gradients are clipped together
WIDTHS = (5, 7, 6, 3)
#: the clipping threshold; a course may change it: [checks."grad_clipping.deep_network"] theta = ...
THETA = 0.25


def gradients(seed: int) -> list[torch.Tensor]:
    """Seeded gradients, one per parameter, each with its own scale (so a per-parameter norm is wrong)."""
    g = torch.Generator().manual_seed(seed)
    shapes = []
    for fan_in, fan_out in zip(WIDTHS, WIDTHS[1:]):
        shapes += [(fan_out, fan_in), (fan_out,)]
    return [torch.randn(*shape, generator=g) * (i + 1) for i, shape in enumerate(shapes)]


def probe_deep_clip(ctx: Any, seed: int, theta: float) -> dict:
    """Runs in the runner: give a three-layer network seeded gradients, call the student's grad_clipping."""
    layers = []
    for fan_in, fan_out in zip(WIDTHS, WIDTHS[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    net = nn.Sequential(*layers)
    for param, grad in zip(net.parameters(), gradients(seed)):
        param.grad = grad.clone()
    ctx.student("grad_clipping")(net, theta)
    return {"grads": [p.grad for p in net.parameters()]}


def judge_deep_clip(observed: Any, seed: int, theta: float) -> Verdict:
    """Runs in the judge: every gradient must be scaled by θ / (joint norm of all of them)."""
    given = [g.numpy().astype(np.float64) for g in gradients(seed)]
    got = observed.get("grads") if isinstance(observed, dict) else None
    if not isinstance(got, list) or len(got) != len(given) or not all(
            isinstance(g, TensorData) and g.array is not None and g.array.shape == w.shape for g, w in zip(got, given)):
        return Verdict.failed("after grad_clipping the network's gradients are missing or changed shape")
    norm = float(np.sqrt(sum((g ** 2).sum() for g in given)))
    expected = [g * min(1.0, theta / norm) for g in given]
    if all(np.allclose(g.array, w, rtol=1e-5, atol=1e-7 * norm) for g, w in zip(got, expected)):
        return Verdict.passed(f"eight gradients of joint norm {norm:.3g} rescaled together to θ = {theta:g}")
    return Verdict.failed(f"on a three-layer network (eight parameters, joint gradient norm {norm:.3g}) the gradients "
                          f"are not all scaled by θ / norm = {theta / norm:.3g}; take the norm over every parameter "
                          "together, then scale each gradient by the same factor")


@hookimpl
def grader_checks(config: Any) -> list[Check]:
    theta = config.setting("grad_clipping.deep_network", "theta", THETA)
    params = secret_params({"seed": 41, "theta": theta}, config.secret)  # a secret seed draws new gradients
    probe = Probe("grad_clipping", probe_deep_clip, params)
    return [Check("grad_clipping", "deep_network", "clips the gradients of a deeper network together", 2, probe,
                  judge_deep_clip, visibility="hidden", settings={"theta": float(theta)},
                  explains="Eight parameters of a three-layer network, each gradient at its own scale, clipped to "
                           f"θ = {theta:g}: only the joint L2 norm over all of them gives the expected gradients.")]


def clipped_per_layer(seed: int, theta: float) -> list[np.ndarray]:
    """The gradients as a loop over layers would clip them: each layer's weight and bias by their own norm."""
    given = [g.numpy().astype(np.float64) for g in gradients(seed)]
    clipped = []
    for weight, bias in zip(given[::2], given[1::2]):
        norm = float(np.sqrt((weight ** 2).sum() + (bias ** 2).sum()))
        clipped += [weight * min(1.0, theta / norm), bias * min(1.0, theta / norm)]
    return clipped


def recognise_per_layer(evidence: Evidence) -> bool:
    """Runs in the judge, on a failing run only: are the gradients exactly those of per-layer clipping?"""
    got = evidence.observed.get("grads")
    expected = clipped_per_layer(evidence.params["seed"], evidence.params["theta"])
    return len(got) == len(expected) and all(
        isinstance(g, TensorData) and g.array is not None and np.allclose(g.array, w, rtol=1e-5, atol=1e-8)
        for g, w in zip(got, expected))


@hookimpl
def grader_misconceptions(config: Any) -> list[Misconception]:
    return [Misconception(
        "course.clip-per-layer", ("grad_clipping.deep_network",),
        "the gradients are clipped one layer at a time",
        "Clipping bounds the norm of the whole gradient, every parameter together; a norm per layer lets the "
        "layers' gradients add up to more than θ.",
        "compute one norm over all parameters' gradients, then scale every gradient by θ / norm",
        recognise_per_layer)]
