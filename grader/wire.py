"""Plain data between runner and judge: JSON with tensors as typed byte arrays.

Nothing is pickled. The runner encodes what student code returned; the judge
decodes it strictly, so a malformed or oversized result is an error, never an
object with behaviour.
"""

from __future__ import annotations

import base64
import json
import math
import re
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
#: the name each of those numpy dtypes is sent under (``str(dtype)`` is slow Python code in numpy)
_WIRE_NAMES = {np.dtype(t): name for name, t in DTYPES.items() if t is not None}
#: the byte order each is sent in
_LITTLE_ENDIAN = {name: np.dtype(t).newbyteorder("<") for name, t in DTYPES.items() if t is not None}


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
        dtype=_WIRE_NAMES.get(array.dtype) or str(array.dtype),
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


#: longest integer literal a result may hold; int() of a long digit string is slow, and torch ints are 64-bit
MAX_INT_DIGITS = 64
#: longest float literal; repr() of any float is far shorter
MAX_FLOAT_CHARS = 64
#: most items in one list, or keys in one dict, of a result
MAX_ITEMS = 1 << 20
#: deepest nesting of lists and dicts in a result
MAX_DEPTH = 64

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates (from ``\\ud800`` escapes) shown as ``\\ud800``.

    Such strings cannot be written as UTF-8, so one would break results.json or report.html.
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def loads(raw: bytes, max_bytes: int) -> Any:
    """Decode a result strictly: anything that is not small, well-formed plain data is a :class:`WireError`."""
    if len(raw) > max_bytes:
        raise WireError(f"result of {len(raw)} bytes is over the {max_bytes}-byte limit")
    try:
        data = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant,
                          parse_int=_parse_int, parse_float=_parse_float)
        return decode(data)
    except WireError:
        raise
    except RecursionError:
        raise WireError("result nested too deeply") from None
    except MemoryError:  # the half-built result is freed on the way out
        raise WireError("result too large to decode") from None
    except (ValueError, OverflowError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError among them
        raise WireError(f"result is not valid JSON: {valid_text(str(exc))[:300]}") from None


def _reject_constant(name: str) -> Any:
    raise WireError(f"bare {name} in result")


def _parse_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise WireError(f"integer too long ({digits} digits) in result")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_FLOAT_CHARS:
        raise WireError(f"number literal too long ({len(literal)} characters) in result")
    value = float(literal)
    if not math.isfinite(value):  # e.g. 1e999: the runner sends inf and nan as FLOAT_KEY records
        raise WireError(f"number {literal[:20]} out of range in result")
    return value


def decode(data: Any, depth: int = 0) -> Any:
    """JSON data from :func:`json.loads` as plain values and :class:`TensorData`; every string valid Unicode."""
    if depth > MAX_DEPTH:
        raise WireError("result nested too deeply")
    if isinstance(data, str):
        return valid_text(data)
    if isinstance(data, dict):
        if len(data) > MAX_ITEMS:
            raise WireError(f"an object of {len(data)} keys in result (at most {MAX_ITEMS})")
        if TENSOR_KEY in data:
            return _decode_tensor(data[TENSOR_KEY])
        if FLOAT_KEY in data:
            text = data[FLOAT_KEY]
            if not isinstance(text, str) or text not in ("nan", "inf", "-inf"):
                raise WireError(f"bad special float {valid_text(repr(text))[:50]}")
            return float(text)
        return {valid_text(k): decode(v, depth + 1) for k, v in data.items()}
    if isinstance(data, list):
        if len(data) > MAX_ITEMS:
            raise WireError(f"a list of {len(data)} items in result (at most {MAX_ITEMS})")
        return [decode(v, depth + 1) for v in data]
    if data is None or isinstance(data, (bool, int, float)):
        return data
    raise WireError(f"unexpected {type(data).__name__} in result")


def _decode_tensor(d: Any) -> TensorData:
    if not isinstance(d, dict):
        raise WireError("tensor record is not an object")
    try:
        return _tensor_from_record(d)
    except WireError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, MemoryError) as exc:  # binascii.Error is a ValueError
        raise WireError(f"malformed tensor record: {valid_text(str(exc))[:300]}") from None


def _tensor_from_record(d: dict) -> TensorData:
    dtype, device = valid_text(str(d["dtype"]))[:50], valid_text(str(d["device"]))[:50]
    shape = d["shape"]
    if not isinstance(shape, list) or len(shape) > MAX_DEPTH or not all(type(s) is int for s in shape):
        raise WireError("tensor shape is not a short list of whole numbers")
    shape = tuple(shape)
    flags = [bool(d[k]) for k in ("requires_grad", "is_leaf", "has_grad_fn")]
    data = d["data"]
    if any(s < 0 for s in shape):
        raise WireError("negative tensor dimension")
    array = None
    if data is not None:
        sent_as = _LITTLE_ENDIAN.get(dtype)
        if sent_as is None or not isinstance(data, str):
            raise WireError(f"tensor data of dtype {dtype!r} cannot be decoded")
        raw = base64.b64decode(data.encode("ascii"), validate=True)
        expected = math.prod(shape) * sent_as.itemsize
        if len(raw) != expected:
            raise WireError(f"tensor of shape {shape} has {len(raw)} bytes, expected {expected}")
        array = np.frombuffer(raw, dtype=sent_as).reshape(shape).astype(DTYPES[dtype])
    return TensorData(dtype, shape, device, *flags, array=array)
