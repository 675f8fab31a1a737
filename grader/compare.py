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


#: names of compared values that take a plural verb ("outputs differ")
PLURALS = frozenset({"outputs", "gradients", "predictions", "the outputs", "the gradients"})

def recurrence_tolerance(steps: int, base: float = 64 * FLOAT32_EPS) -> float:
    """Relative tolerance for values computed through ``steps`` recurrent steps."""
    return base * max(1, steps)


def describe_index(index: Sequence[int], axes: Optional[Sequence[str]]) -> str:
    if not axes:
        return f"index {tuple(int(i) for i in index)}"
    return ", ".join(f"{axis} {int(i)}" for axis, i in zip(axes, index))


class UnexpectedForm(ValueError):
    """Raised by a judge that cannot read what a hook returned; ``expected`` says what it should have been."""

    def __init__(self, expected: str, got: str = ""):
        super().__init__(f"expected {expected}" + (f", got {got}" if got else ""))
        self.expected, self.got = expected, got


def check_tensor_meta(
    name: str,
    ref_shape: Sequence[int],
    data: Any,
    dtype: str = "float32",
    device: Optional[str] = None,
    axes: Optional[Sequence[str]] = None,
) -> Optional[str]:
    """Is ``data`` a tensor of the expected shape, dtype and device type?

    :param axes: what each axis of ``ref_shape`` is ("batch", "hidden", ...): a wrong shape is then
        told with its axes named, and which of them is off, so that equal sizes cannot be mistaken.
    """
    if not isinstance(data, TensorData):
        return f"{name} should be a tensor but is {_kind(data)}"
    if tuple(data.shape) != tuple(ref_shape):
        if axes and len(axes) == len(ref_shape):
            return f"{name} has shape {_shape(data.shape)} but should be {named_shape(ref_shape, axes)}" \
                + _which_axes(tuple(data.shape), tuple(ref_shape), tuple(axes))
        return f"{name} has shape {_shape(data.shape)}, expected {_shape(ref_shape)}"
    if dtype and data.dtype != dtype:
        return f"{name} has dtype {data.dtype}, expected {dtype}"
    if device and data.device_type != device:
        return f"{name} is on device '{data.device}', but the device passed in was '{device}'"
    return None


def named_shape(shape: Sequence[int], axes: Sequence[str]) -> str:
    """``(batch = 5, hidden = 16)``: a shape with what each axis is."""
    return "(" + ", ".join(f"{axis} = {int(size)}" for axis, size in zip(axes, shape)) + ")"


def _which_axes(got: tuple, want: tuple, axes: tuple) -> str:
    """What is off in ``got``: its axes in another order, an axis of size 1 too many or too few, or which differ."""
    if len(got) == len(want):
        if sorted(got) == sorted(want) and len(set(want)) == len(want):
            order = tuple(axes[want.index(size)] for size in got)
            return f": its axes are in the order ({', '.join(order)})"
        return ": " + "; ".join(f"{axis} is {g}, not {w}" for axis, g, w in zip(axes, got, want) if g != w)
    count = f"{len(got)} {'axis' if len(got) == 1 else 'axes'} instead of {len(want)}"
    missing = [axis for i, axis in enumerate(axes) if want[i] == 1 and want[:i] + want[i + 1:] == got]
    if missing:
        return f": the {missing[0]} axis (of size 1) is missing"
    if any(got[i] == 1 and got[:i] + got[i + 1:] == want for i in range(len(got))):
        return f": it has an extra axis of size 1 ({count})"
    return f": it has {count}"


def check_allclose(
    name: str,
    ref: np.ndarray,
    data: Any,
    rtol: float,
    atol: float,
    axes: Optional[Sequence[str]] = None,
    index_of: Any = None,
    shape_axes: Optional[Sequence[str]] = None,
) -> Optional[str]:
    """Are the values of ``data`` within ``atol + rtol * |ref|`` of ``ref`` everywhere?

    :param axes: names of the axes of ``ref`` for the message ("time step", ...).
    :param index_of: maps a flat-array index tuple to the tuple described by ``axes``
        (e.g. row ``r`` of (T*B, V) outputs to ``(r // B, r % B, v)``).
    :param shape_axes: names of the axes of ``ref`` itself, for a wrong shape; by default ``axes``
        when they describe ``ref`` directly (no ``index_of``).
    """
    if shape_axes is None and index_of is None and axes is not None and len(axes) == ref.ndim:
        shape_axes = axes
    problem = check_tensor_meta(name, ref.shape, data, dtype=str(ref.dtype), axes=shape_axes)
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
        f"{name} {'differ' if name in PLURALS else 'differs'} from the expected values in {count} of {err.size} entries; "
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
