"""Comparison helpers with a fixed argument order: ``(name, ref, data, ...)``.

Each returns ``None`` when the data is acceptable and otherwise a sentence for a
student saying what differs and where. Tolerances for recurrent computations
grow with the number of time steps: float32 rounding compounds through the
recurrence, so a correct implementation that sums in another order differs
from the reference by more after 50 steps than after 1.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from grader.wire import TensorData

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def recurrence_tolerance(steps: int, base: float = 64 * FLOAT32_EPS) -> float:
    """Relative tolerance for values computed through ``steps`` recurrent steps."""
    return base * max(1, steps)


def describe_index(index: Sequence[int], axes: Optional[Sequence[str]]) -> str:
    if not axes:
        return f"index {tuple(int(i) for i in index)}"
    return ", ".join(f"{axis} {int(i)}" for axis, i in zip(axes, index))


def check_tensor_meta(
    name: str,
    ref_shape: Sequence[int],
    data: Any,
    dtype: str = "float32",
    device: Optional[str] = None,
) -> Optional[str]:
    """Is ``data`` a tensor of the expected shape, dtype and device type?"""
    if not isinstance(data, TensorData):
        return f"{name} should be a tensor but is {_kind(data)}"
    if tuple(data.shape) != tuple(ref_shape):
        return f"{name} has shape {_shape(data.shape)}, expected {_shape(ref_shape)}"
    if dtype and data.dtype != dtype:
        return f"{name} has dtype {data.dtype}, expected {dtype}"
    if device and data.device_type != device:
        return f"{name} is on device '{data.device}', but the device passed in was '{device}'"
    return None


def check_allclose(
    name: str,
    ref: np.ndarray,
    data: Any,
    rtol: float,
    atol: float,
    axes: Optional[Sequence[str]] = None,
    index_of: Any = None,
) -> Optional[str]:
    """Are the values of ``data`` within ``atol + rtol * |ref|`` of ``ref`` everywhere?

    :param axes: names of the axes of ``ref`` for the message ("time step", ...).
    :param index_of: maps a flat-array index tuple to the tuple described by ``axes``
        (e.g. row ``r`` of (T*B, V) outputs to ``(r // B, r % B, v)``).
    """
    problem = check_tensor_meta(name, ref.shape, data, dtype=str(ref.dtype))
    if problem:
        return problem
    got = data.array.astype(np.float64)
    want = ref.astype(np.float64)
    if not np.all(np.isfinite(got)):
        bad = np.unravel_index(int(np.argmax(~np.isfinite(got))), got.shape)
        where = describe_index(index_of(bad) if index_of else bad, axes)
        return f"{name} contains NaN or infinity (first at {where})"
    err = np.abs(got - want)
    allowed = atol + rtol * np.abs(want)
    if np.all(err <= allowed):
        return None
    worst = np.unravel_index(int(np.argmax(err - allowed)), err.shape)
    where = describe_index(index_of(worst) if index_of else worst, axes)
    count = int(np.sum(err > allowed))
    return (
        f"{name} differs from the expected values in {count} of {err.size} entries; "
        f"largest error {float(err[worst]):.3g} at {where} "
        f"(expected {float(want[worst]):.6g}, got {float(got[worst]):.6g}; tolerance {float(allowed[worst]):.2g})"
    )


def first_recurrent_step_off(
    ref: np.ndarray, data: np.ndarray, rtol: float, atol: float, batch: int
) -> Optional[int]:
    """The first time step at which (T*B, V) outputs go wrong, or None."""
    err = np.abs(data.astype(np.float64) - ref) > atol + rtol * np.abs(ref)
    rows = np.nonzero(err.any(axis=1))[0]
    return int(rows[0] // batch) if rows.size else None


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return f"a sequence of {len(value)} items"
    return f"a {type(value).__name__}"
