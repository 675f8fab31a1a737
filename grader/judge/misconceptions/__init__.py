"""The built-in misconception catalogue: one module per exercise, each a plugin implementing
``grader_misconceptions`` (see :class:`grader.definitions.Misconception`).

A recogniser matches a mistake's exact behaviour on the check's own seeded inputs: it re-runs
the reference with the mistake applied (:func:`close_to`), or tests a signature the mistake
leaves (a shift by one step, an offset equal to a bias). It never claims a match on data that
fits the reference too: :func:`close_to` refuses when the mistaken and the correct answers agree.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from grader.wire import TensorData


def values(observed: Any) -> Optional[np.ndarray]:
    """The float64 values of a returned tensor, or None when it is not one (or has no data)."""
    if isinstance(observed, TensorData) and observed.array is not None:
        return observed.array.astype(np.float64)
    return None


def close_to(got: Any, mistaken: np.ndarray, correct: Optional[np.ndarray], rtol: float, atol: float) -> bool:
    """Whether ``got`` equals the mistake's result (within tolerance) and that result differs from the correct one."""
    array = values(got) if not isinstance(got, np.ndarray) else got.astype(np.float64)
    mistaken = np.asarray(mistaken, dtype=np.float64)
    if array is None or array.shape != mistaken.shape:
        return False
    if correct is not None and np.shape(correct) == mistaken.shape and np.allclose(mistaken, correct, rtol, atol):
        return False  # this input cannot tell the mistake from the right answer
    return bool(np.allclose(array, mistaken, rtol=rtol, atol=atol))
