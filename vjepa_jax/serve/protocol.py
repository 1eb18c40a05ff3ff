"""The planner server's wire format: msgpack maps with NumPy arrays, shared by server and client.

Every message is one binary websocket message holding a msgpack map with a `type` key. A NumPy
array travels as the map `{"__ndarray__": True, "dtype": "<f4", "shape": [7], "data": <bytes>}`
(C order; any language with a msgpack library can read and write it). Only boolean, integer and
floating-point dtypes are accepted.

Requests (client -> server):
  {"type": "metadata"}
  {"type": "set_goal", "goal": uint8 [H, W, 3]}
  {"type": "set_goal", "schedule": [[uint8 [H, W, 3], steps], ...], "start_step": 0}
  {"type": "plan", "frame": uint8 [H, W, 3], "pose": float [A]}
  {"type": "reset"}

Replies carry the request's `type`, or `"type": "error"` with a `code` (one of `ERROR_CODES`)
and a `message` saying what was wrong and how to fix it.

This module imports only NumPy and msgpack, so that robot computers can use the client without
JAX.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
REQUESTS = ("metadata", "plan", "reset", "set_goal")
ERROR_CODES = ("bad_message", "unknown_request", "bad_request", "no_goal", "schedule_done",
               "busy", "internal")
# Handshake response header with the server's message size limit, so that a client can refuse
# an oversize message itself instead of losing its connection to the server's hard limit.
MAX_MESSAGE_HEADER = "X-Vjepa-Jax-Max-Message-Bytes"
TOKEN_ENV = "VJEPA_JAX_SERVE_TOKEN"

_ARRAY = "__ndarray__"
_KINDS = "biuf"


class ProtocolError(ValueError):
  """A message that is not valid msgpack or holds a malformed array."""


def _encode(obj: Any) -> Any:
  if isinstance(obj, np.ndarray):
    if obj.dtype.kind not in _KINDS:
      raise TypeError(f"cannot send a {obj.dtype} array; only bool, int and float arrays travel")
    obj = np.ascontiguousarray(obj)
    return {_ARRAY: True, "dtype": obj.dtype.str, "shape": list(obj.shape),
            "data": obj.reshape(-1).view(np.uint8).data}
  if isinstance(obj, np.generic):
    return obj.item()
  raise TypeError(f"cannot send a {type(obj).__name__}")


def _decode(obj: dict) -> Any:
  if obj.get(_ARRAY) is not True:
    return obj
  dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
  try:
    dtype = np.dtype(dtype)
  except TypeError as e:
    raise ProtocolError(f"array has an unreadable dtype {dtype!r}") from e
  if dtype.kind not in _KINDS:
    raise ProtocolError(f"array dtype {dtype} is not allowed; send bool, int or float arrays")
  if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
      or not isinstance(data, bytes)):
    raise ProtocolError("an array needs `shape` (a list of non-negative ints) and `data` (bytes)")
  count = math.prod(shape)
  if count * dtype.itemsize != len(data):
    raise ProtocolError(f"array of shape {shape} and dtype {dtype} needs "
                        f"{count * dtype.itemsize} bytes of data, got {len(data)}")
  return np.frombuffer(data, dtype).reshape(shape)


def pack(message: dict) -> bytes:
  """A message (dict of Python values and NumPy arrays) -> msgpack bytes."""
  return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(data: bytes | str) -> dict:
  """msgpack bytes -> a message dict (arrays come back read-only).

  Raises:
    ProtocolError: for text frames, invalid msgpack, a non-map message or a malformed array.
  """
  if isinstance(data, str):
    raise ProtocolError("got a text message; send binary msgpack messages")
  try:
    message = msgpack.unpackb(data, object_hook=_decode, raw=False)
  except ProtocolError:
    raise
  except Exception as e:  # msgpack raises several unrelated types for corrupt input
    raise ProtocolError(f"message is not valid msgpack ({type(e).__name__}: {e})") from e
  if not isinstance(message, dict):
    raise ProtocolError(f"a message must be a msgpack map, got {type(message).__name__}")
  return message
