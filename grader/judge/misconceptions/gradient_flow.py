"""Mistakes in ``state_jacobian``: the Jacobian of one step built with one mistake, compared with the student's.

``jacobian.values`` compares one Jacobian per seeded case; ``jacobian.chain`` their product over 40
steps of a seeded trajectory. Each recogniser builds the mistaken Jacobian from the same inputs
(:func:`grader.checks.gradient_flow.jacobian_case` and ``chain_case``) and compares: the student's
matrices must equal the mistaken ones wherever the mistake changes anything.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from grader import hookimpl
from grader.checks.gradient_flow import chain_products, jacobian_case
from grader.definitions import Evidence, Misconception
from grader.judge.misconceptions import close_to, values

CHECKS = ("gradient_flow.jacobian.values", "gradient_flow.jacobian.chain")
#: one float32 step: a few roundings; the product over the chain, relative to its own size
STEP_RTOL, CHAIN_RTOL = 1e-4, 1e-3


def _mistaken(mistake: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``state_jacobian`` with ``mistake`` applied ("" is the correct one): diag(1 - h²) @ W_hh.T."""
    def jacobian(h_next: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        d = 1 - h_next ** 2
        if mistake == "W-not-transposed":
            return torch.diag(d) @ W
        if mistake == "one-minus-h":
            return torch.diag(1 - h_next) @ W.T
        if mistake == "no-derivative":
            return W.T.clone()
        if mistake == "transposed-jacobian":
            return W @ torch.diag(d)
        if mistake == "derivative-on-columns":
            return d * W.T  # broadcasting scales column i by 1 - h_next[i]
        if mistake == "sigmoid-derivative":
            return torch.diag(h_next * (1 - h_next)) @ W.T
        if mistake == "elementwise-product":
            return torch.diag(d) * W.T  # * keeps only the diagonal of W_hh.T
        if mistake == "tanh-again":
            return torch.diag(1 - torch.tanh(h_next) ** 2) @ W.T
        return torch.diag(d) @ W.T
    return jacobian


def _step_matches(mistake: str, evidence: Evidence) -> bool:
    shown = False
    for case, entry in zip(evidence.params["cases"], evidence.observed["cases"]):
        data = jacobian_case(**case)
        want = _mistaken(mistake)(data["h_next"], data["W"]).numpy()
        correct = _mistaken("")(data["h_next"], data["W"]).numpy()
        scale = max(1.0, float(np.abs(correct).max()))
        if np.allclose(want, correct, rtol=STEP_RTOL, atol=1e-6 * scale):
            got = values(entry.get("J"))  # this case cannot tell: it must simply be right
            if got is None or got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-5 * scale):
                return False
            continue
        if not close_to(entry.get("J"), want, correct, STEP_RTOL, 1e-6 * scale):
            return False
        shown = True
    return shown


@lru_cache(maxsize=16)
def _mistaken_chain(mistake: str, seed: int, num_hiddens: int, num_steps: int, gains: tuple) -> dict:
    products = chain_products(_mistaken(mistake), seed, num_hiddens, num_steps, list(gains))
    return {gain: products[str(gain)]["product"].numpy().astype(np.float64) for gain in gains}


def _chain_matches(mistake: str, evidence: Evidence) -> bool:
    chain = evidence.params["chain"]
    key = (chain["seed"], chain["num_hiddens"], chain["num_steps"], tuple(chain["gains"]))
    mistaken, correct = _mistaken_chain(mistake, *key), _mistaken_chain("", *key)
    got, shown = evidence.observed["chain"], False
    for gain in chain["gains"]:
        have, want = values(got[str(gain)]["product"]), mistaken[gain]
        if have is None or have.shape != want.shape or not np.all(np.isfinite(want)):
            return False
        size = float(np.linalg.norm(want))
        if size == 0 or float(np.linalg.norm(have - want)) > CHAIN_RTOL * size:
            return False
        shown = shown or float(np.linalg.norm(want - correct[gain])) > 100 * CHAIN_RTOL * size
    return shown


def _recognise(mistake: str) -> Callable[[Evidence], bool]:
    def recognise(evidence: Evidence) -> bool:
        if evidence.check_id.endswith(".chain"):
            return _chain_matches(mistake, evidence)
        return _step_matches(mistake, evidence)
    return recognise


def _entry(key: str, mistake: str, why: str, behaviour: str,
           fix: str = "return torch.diag(1 - h_next ** 2) @ W_hh.T") -> Misconception:
    return Misconception(f"gradient_flow.{key}", CHECKS, mistake, why, fix, _recognise(behaviour))


@hookimpl
def grader_misconceptions(config):
    return [
        _entry("W_hh-not-transposed",
               "W_hh is not transposed in the Jacobian: diag(1 - h_next²) @ W_hh instead of @ W_hh.T",
               "With row vectors, h_next = tanh(x W_xh + h W_hh + b), so h_next[j] depends on h[i] through "
               "W_hh[i, j]: entry (j, i) of d h_next / d h is (1 - h_next[j]²) W_hh[i, j], row j of W_hh.T.",
               "W-not-transposed"),
        _entry("one-minus-h", "the tanh derivative is written 1 - h_next instead of 1 - h_next²",
               "The derivative of tanh(a) is 1 - tanh(a)², and h_next is already tanh(a), so the factor is "
               "1 - h_next ** 2.", "one-minus-h"),
        _entry("no-tanh-derivative", "the tanh derivative is missing from the Jacobian: no diag(1 - h_next²) factor",
               "Back-propagating through h_next = tanh(a) multiplies by tanh'(a) = 1 - h_next² before W_hh.T; "
               "leaving it out ignores saturation, the reason gradients vanish.", "no-derivative"),
        _entry("jacobian-transposed", "the Jacobian is transposed (W_hh @ diag(1 - h_next²))",
               "Row j of d h_next / d h holds the derivatives of h_next[j]; the transpose puts them in column j.",
               "transposed-jacobian"),
        _entry("derivative-on-columns", "the tanh derivative multiplies the columns, (1 - h_next²) * W_hh.T",
               "Broadcasting a vector against a matrix scales its columns; the factor 1 - h_next[j]² belongs to "
               "row j (output j), which is what torch.diag(1 - h_next ** 2) @ W_hh.T does.", "derivative-on-columns",
               fix="return torch.diag(1 - h_next ** 2) @ W_hh.T, or (1 - h_next ** 2)[:, None] * W_hh.T"),
        _entry("sigmoid-derivative", "the derivative is the sigmoid's, h_next * (1 - h_next), instead of tanh's 1 - h_next²",
               "The state is h_next = tanh(a), and tanh'(a) = 1 - tanh(a)² = 1 - h_next²; σ(a)(1 - σ(a)) is the "
               "derivative of the sigmoid, which this RNN does not use.", "sigmoid-derivative"),
        _entry("elementwise-product", "torch.diag(1 - h_next²) and W_hh.T are multiplied elementwise (*), not as matrices (@)",
               "* multiplies entry by entry, and every entry of the diagonal matrix off its diagonal is 0, so only "
               "the diagonal of W_hh.T survives; the Jacobian needs the matrix product.", "elementwise-product"),
        _entry("tanh-applied-again", "tanh is applied again: the derivative is taken as 1 - tanh(h_next)²",
               "h_next is already tanh(a), so tanh'(a) = 1 - h_next²; tanh(h_next) is a different number.",
               "tanh-again"),
    ]
