"""The wire codec: msgpack with numpy arrays as openpi encodes them, bounded, no pickle.

An array travels as the map `{b"__ndarray__": True, b"data": <bytes>, b"dtype": "<f4",
b"shape": [..]}` and a numpy scalar as `{b"__npgeneric__": True, b"data": x, b"dtype": ..}`:
openpi-client's `msgpack_numpy` reads and writes exactly this, so either side may be
openpi's. Decoding trusts nothing:

- msgpack runs with `raw=False` (strings are str, binaries bytes), string-or-bytes map keys
  only, an `ext_hook` that refuses every extension type (msgpack's way to smuggle objects),
  and per-object length limits under the message size;
- an array's dtype must be a plain little-endian bool, integer or float (no object, void or
  structured dtypes, so nothing is ever unpickled), its shape at most `MAX_DIMS` non-negative
  ints, its element count within `Limits.max_elements`, and its bytes exactly shape × itemsize.

Anything else raises `WireError`, which the server answers with an error reply. Nothing here
imports pickle, and numpy never loads with `allow_pickle`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

MAX_DIMS = 8
# little-endian (or byte-order-free) bool, unsigned, signed and float dtypes; nothing else
DTYPES = frozenset(
    {"|b1", "|u1", "|i1", "<u2", "<u4", "<u8", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8"}
)
_ND = b"__ndarray__"
_NG = b"__npgeneric__"


class WireError(ValueError):
    """A message that is not a well-formed, bounded aloe/openpi message."""


@dataclass(frozen=True)
class Limits:
    """What one message may hold (the server refuses more before decoding it)."""

    max_message_bytes: int = 16 * 2**20
    """Bytes of one websocket message; larger ones close that connection (code 1009)."""
    max_elements: int = 4 * 2**20
    """Elements of one array (three 224x224 RGB cameras are 0.45 M)."""
    max_items: int = 4096
    """Entries of one msgpack map or list."""
    max_text: int = 64 * 2**10
    """Characters of one string (an instruction, a failure reason; the metadata's run config,
    a JSON string of a few KiB, is the longest an honest peer sends)."""


DEFAULT_LIMITS = Limits()


def pack(obj: Any) -> bytes:
    """`obj` (dicts, lists, str, bytes, numbers, None, numpy arrays and scalars) as msgpack."""
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.str not in DTYPES:
            raise TypeError(f"cannot send a {obj.dtype} array: plain numeric dtypes only")
        return {
            _ND: True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": list(obj.shape),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__}")


def unpack(data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """One message: a map with string keys at the top. Raises WireError on anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("a message must be a binary websocket frame of msgpack")
    if len(data) > limits.max_message_bytes:
        raise WireError(f"message of {len(data)} bytes: at most {limits.max_message_bytes}")
    try:
        msg = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            object_hook=lambda m: _decode_map(m, limits),
            ext_hook=_refuse_ext,
            max_str_len=limits.max_text,
            max_bin_len=limits.max_message_bytes,
            max_array_len=limits.max_items,
            max_map_len=limits.max_items,
            max_ext_len=0,
        )
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        # msgpack's own errors: truncated data, extra bytes, over-long objects, deep nesting
        raise WireError(f"not a msgpack message ({type(e).__name__}: {e})"[:300]) from None
    if not isinstance(msg, dict) or not all(isinstance(k, str) for k in msg):
        raise WireError("a message must be a msgpack map with string keys")
    return msg


def _refuse_ext(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} is not accepted")


def _decode_map(m: dict[Any, Any], limits: Limits) -> Any:
    marker = _ND if _ND in m else ("__ndarray__" if "__ndarray__" in m else None)
    if marker is not None:
        return _decode_array(_field(m, "data"), _field(m, "dtype"), _field(m, "shape"), limits)
    if _NG in m or "__npgeneric__" in m:
        return _decode_scalar(_field(m, "data"), _field(m, "dtype"))
    if any(isinstance(k, bytes) for k in m):
        raise WireError("map keys must be strings (bytes keys only mark numpy arrays)")
    return m


def _field(m: dict[Any, Any], name: str) -> Any:
    for key in (name.encode(), name):
        if key in m:
            return m[key]
    raise WireError(f"numpy array without {name!r}")


def _dtype(dtype: Any) -> np.dtype[Any]:
    text = dtype.decode(errors="replace") if isinstance(dtype, bytes) else dtype
    if not isinstance(text, str) or text not in DTYPES:
        raise WireError(f"array dtype {str(text)[:40]!r}: one of {', '.join(sorted(DTYPES))}")
    return np.dtype(text)


def _decode_array(data: Any, dtype: Any, shape: Any, limits: Limits) -> np.ndarray:
    dt = _dtype(dtype)
    ok = isinstance(shape, list | tuple) and len(shape) <= MAX_DIMS
    if not ok or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise WireError(f"array shape must be a list of at most {MAX_DIMS} ints >= 0")
    count = math.prod(shape)
    if count > limits.max_elements:
        raise WireError(f"array of {count} elements: at most {limits.max_elements}")
    if not isinstance(data, bytes) or len(data) != count * dt.itemsize:
        raise WireError(f"array data must be {count * dt.itemsize} bytes for {dt.str} {shape}")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()


def _decode_scalar(data: Any, dtype: Any) -> Any:
    dt = _dtype(dtype)
    if not isinstance(data, bool | int | float):
        raise WireError("numpy scalar data must be a number")
    try:
        return dt.type(data)
    except (OverflowError, ValueError) as e:
        raise WireError(f"numpy scalar {data!r} is not a {dt.str}: {e}") from None
