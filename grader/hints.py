"""What well-known error messages usually mean, said to a student.

General hints apply to every hook; each exercise declares its own on its probes
(:attr:`grader.definitions.Probe.hints`), next to the checks that need them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, NamedTuple, Optional


class Hint(NamedTuple):
    #: regular expression searched for in the error message
    pattern: str
    #: what to try, in a few words
    text: str


GENERAL_HINTS = (
    Hint(r"modified by an inplace operation", "a tensor needed for backward was changed in place: build new tensors, "
                                              "and detach the carried state instead of keeping its graph"),
    Hint(r"Expected all tensors to be on the same device", "create every tensor on the device you were given"),
    Hint(r"Torch not compiled with CUDA|no NVIDIA driver|CUDA", "do not hard-code 'cuda'; use the device argument"),
    Hint(r"meta tensors?|on the meta device|device='meta'|Cannot copy out of meta",
         "this check passes device='meta'; create tensors with device=device and avoid .cpu(), .numpy() and .item()"),
)


def hint_for(message: str, hints: Iterable[Hint] = ()) -> str:
    """`` (hint: ...)`` for the first hint whose pattern the message matches (the given ones first), else ``""``."""
    for hint in (*hints, *GENERAL_HINTS):
        if re.search(hint.pattern, message):
            return f" (hint: {hint.text})"
    return ""


def hidden_size_mismatch(error: str) -> Optional[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(expected, got)`` from torch's "Expected hidden size (a, b, c), got [d, e, f]", else None."""
    match = re.search(r"Expected hidden size \(([\d, ]+)\), got \[([\d, ]+)\]", error)
    if not match:
        return None
    return tuple(int(v) for v in match[1].split(",")), tuple(int(v) for v in match[2].split(","))


def with_device_hint(verdict: Any, device: str) -> Any:
    """A failed device check whose message shows a device mix-up, with what usually causes it."""
    message = verdict.message
    if verdict.fraction >= 1 or not re.search(r"device|meta|Cannot copy out", message) or "hint:" in message:
        return verdict
    return dataclasses.replace(verdict, message=message + f" (hint: this check runs on '{device}'; create every tensor "
                               "on the device you were given or that of the inputs, and avoid .cpu(), .numpy() and .item())")
