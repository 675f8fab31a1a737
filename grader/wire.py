"""Plain data between runner and judge: JSON with tensors as typed byte arrays.

Nothing is pickled. The runner encodes what student code returned; the judge
decodes it strictly, so a malformed or oversized result is an error, never an
object with behaviour.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

TENSOR_KEY = "__tensor__"
FLOAT_KEY = "__float__"
#: dtypes whose bytes may cross the wire; anything else is described but not sent
DTYPES = {
    "float16": np.float16, "bfloat16": None, "float32": np.float32, "float64": np.float64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "bool": np.bool_,
}


class WireError(ValueError):
    """The runner sent something that is not well-formed plain data."""


@dataclass(frozen=True)
class TensorData:
    """A tensor as the judge sees it: metadata plus (unless on 'meta') its values."""

    dtype: str
    shape: tuple[int, ...]
    device: str
    requires_grad: bool
    is_leaf: bool
    has_grad_fn: bool
    array: Optional[np.ndarray]

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]


# ---------------------------------------------------------------- runner side


def encode(value: Any) -> Any:
    """Turn a result made of tensors, arrays, numbers, strings, lists and dicts into JSON data."""
    import torch  # the judge never needs torch to decode

    if isinstance(value, torch.Tensor):
        return {TENSOR_KEY: _encode_tensor(value)}
    if isinstance(value, np.ndarray):
        return {TENSOR_KEY: _encode_array(value, "cpu", False, True, False)}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {FLOAT_KEY: repr(float(value))}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    raise TypeError(f"cannot send a {type(value).__name__} as plain data")


def _encode_tensor(t: Any) -> dict:
    import torch

    plain = torch.Tensor.detach(t)
    if type(plain) is not torch.Tensor:
        plain = plain.as_subclass(torch.Tensor)
    device = str(plain.device)
    meta = dict(
        device=device,
        requires_grad=bool(t.requires_grad),
        is_leaf=bool(t.is_leaf),
        has_grad_fn=t.grad_fn is not None,
    )
    dtype = str(plain.dtype).replace("torch.", "")
    if plain.device.type == "meta" or DTYPES.get(dtype) is None:
        return dict(dtype=dtype, shape=list(plain.shape), data=None, **meta)
    array = plain.to("cpu").contiguous().numpy()
    return _encode_array(array, **meta)


def _encode_array(array: np.ndarray, device: str, requires_grad: bool, is_leaf: bool, has_grad_fn: bool) -> dict:
    array = np.ascontiguousarray(array)
    return dict(
        dtype=str(array.dtype),
        shape=list(array.shape),
        device=device,
        requires_grad=requires_grad,
        is_leaf=is_leaf,
        has_grad_fn=has_grad_fn,
        data=base64.b64encode(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()).decode("ascii"),
    )


def dumps(value: Any) -> bytes:
    return json.dumps(encode(value), allow_nan=False, separators=(",", ":")).encode("utf-8")


# ----------------------------------------------------------------- judge side


def loads(raw: bytes, max_bytes: int) -> Any:
    if len(raw) > max_bytes:
        raise WireError(f"result of {len(raw)} bytes is over the {max_bytes}-byte limit")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"result is not valid JSON: {exc}") from None
    return decode(data)


def _reject_constant(name: str) -> Any:
    raise WireError(f"bare {name} in result")


def decode(data: Any, depth: int = 0) -> Any:
    if depth > 64:
        raise WireError("result nested too deeply")
    if isinstance(data, dict):
        if TENSOR_KEY in data:
            return _decode_tensor(data[TENSOR_KEY])
        if FLOAT_KEY in data:
            text = data[FLOAT_KEY]
            if text not in ("nan", "inf", "-inf"):
                raise WireError(f"bad special float {text!r}")
            return float(text)
        return {k: decode(v, depth + 1) for k, v in data.items()}
    if isinstance(data, list):
        return [decode(v, depth + 1) for v in data]
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    raise WireError(f"unexpected {type(data).__name__} in result")


def _decode_tensor(d: Any) -> TensorData:
    if not isinstance(d, dict):
        raise WireError("tensor record is not an object")
    try:
        dtype, shape, device = str(d["dtype"]), tuple(int(s) for s in d["shape"]), str(d["device"])
        flags = [bool(d[k]) for k in ("requires_grad", "is_leaf", "has_grad_fn")]
        data = d["data"]
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed tensor record: {exc}") from None
    if any(s < 0 for s in shape):
        raise WireError("negative tensor dimension")
    array = None
    if data is not None:
        np_dtype = DTYPES.get(dtype)
        if np_dtype is None or not isinstance(data, str):
            raise WireError(f"tensor data of dtype {dtype!r} cannot be decoded")
        raw = base64.b64decode(data.encode("ascii"), validate=True)
        expected = math.prod(shape) * np.dtype(np_dtype).itemsize
        if len(raw) != expected:
            raise WireError(f"tensor of shape {shape} has {len(raw)} bytes, expected {expected}")
        array = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<")).reshape(shape).astype(np_dtype)
    return TensorData(dtype, shape, device, *flags, array=array)
