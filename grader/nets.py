"""Looking inside an ``nn.Module``: which parts are registered, where the output layer is, how to set it.

A module kept in a plain list or dict still runs in ``forward`` but is invisible to
``parameters()``, so an optimizer never trains it and ``.to(device)`` never moves it;
that is worth a sentence of its own rather than a puzzling perplexity.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


def unregistered(model: Any) -> list[str]:
    """Attributes of ``model`` (and its submodules) holding modules or parameters that PyTorch does not see."""
    found = []
    modules = list(model.named_modules()) if isinstance(model, nn.Module) else []
    for prefix, module in modules:
        for name, value in vars(module).items():
            if name.startswith("_"):
                continue
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
            if any(isinstance(v, (nn.Module, nn.Parameter)) for v in items):
                found.append(f"{prefix + '.' if prefix else ''}{name}")
    return found


def uses_layer(model: Any, layer: nn.Module) -> bool:
    return isinstance(model, nn.Module) and any(m is layer for m in model.modules())


def output_layer(model: Any, layer: nn.Module, in_features: int, out_features: int) -> tuple[Optional[dict], Optional[str]]:
    """The read-out after ``layer``: ``({"weight", "bias", "transposed"}, None)`` or ``(None, what is wrong)``.

    Preferably the one ``nn.Linear(in_features, out_features)``; failing that, one parameter
    outside ``layer`` of shape (out, in) or (in, out) and at most one of shape (out,).
    """
    if not isinstance(model, nn.Module):
        return None, f"the model should be an nn.Module, but it is a {type(model).__name__}"
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    fitting = [m for m in linears if (m.in_features, m.out_features) == (in_features, out_features)]
    if len(fitting) == 1:
        return {"weight": fitting[0].weight, "bias": fitting[0].bias, "transposed": False}, None
    if len(fitting) > 1:
        return None, (f"the model holds {len(fitting)} nn.Linear({in_features}, {out_features}) layers; "
                      "it should have exactly one output layer")
    own = {id(p) for p in layer.parameters()}
    rest = [p for p in model.parameters() if id(p) not in own]
    weights = [p for p in rest if tuple(p.shape) in ((out_features, in_features), (in_features, out_features))]
    biases = [p for p in rest if tuple(p.shape) == (out_features,)]
    if len(weights) == 1 and len(biases) <= 1 and in_features != out_features:
        return {"weight": weights[0], "bias": biases[0] if biases else None,
                "transposed": tuple(weights[0].shape) == (in_features, out_features)}, None
    hidden = unregistered(model)
    if hidden:
        return None, (f"the model keeps modules in a plain Python list or dict ({', '.join(hidden)}), so PyTorch does not "
                      "see them: their parameters are missing from model.parameters(), never trained and never moved "
                      "to a device; assign each to an attribute (self.linear = nn.Linear(...)) or use nn.ModuleList")
    shapes = ", ".join(f"nn.Linear({m.in_features}, {m.out_features})" for m in linears) or "none"
    return None, (f"could not find the output layer: the model should hold one nn.Linear({in_features}, {out_features}) "
                  f"(found {shapes})")


def set_output_layer(found: dict, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Give the read-out the weights of ``nn.Linear`` layout (out, in), whatever its own layout."""
    with torch.no_grad():
        found["weight"].copy_(weight.T if found["transposed"] else weight)
        if found["bias"] is not None:
            found["bias"].copy_(bias)


def linear_values(seed: int, in_features: int, out_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded weight (out, in) and bias (out,) on PyTorch's default scale, the same wherever they are drawn."""
    g = torch.Generator().manual_seed(seed)
    bound = 1 / in_features ** 0.5
    weight = (torch.rand(out_features, in_features, generator=g) * 2 - 1) * bound
    bias = (torch.rand(out_features, generator=g) * 2 - 1) * bound
    return weight, bias


def state_record(state: Any) -> dict:
    """A returned recurrent state as plain data: a tensor, or a tuple of tensors (LSTM)."""
    if isinstance(state, torch.Tensor):
        return {"kind": "tensor", "items": [state]}
    if isinstance(state, (tuple, list)):
        return {"kind": type(state).__name__,
                "items": [s if isinstance(s, torch.Tensor) else type(s).__name__ for s in state]}
    return {"kind": type(state).__name__, "items": []}
