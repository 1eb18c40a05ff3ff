"""3-D rotary position embeddings of V-JEPA 2.

A head of width `hd` is cut into three slices of width s = 2 * ((hd // 3) // 2) that rotate with
the time, row and column index of a token; the last hd - 3s dims are left unrotated.

Inside one slice of width D the released weights were trained with a frequency layout that pairs
elements (2i, 2i+1) but indexes the angles as the D/2 frequencies tiled twice
([w0..w_{D/2-1}, w0..w_{D/2-1}]), so the two members of a pair rotate at different frequencies.
`mode="official"` reproduces it (needed for the released checkpoints); `mode="interleaved"` is the
textbook layout ([w0, w0, w1, w1, ...]) for models trained from scratch.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

MODES = ("official", "interleaved")


def slice_width(head_dim: int) -> int:
  """Width of each of the time / row / column slices for a head of width `head_dim`."""
  return 2 * ((head_dim // 3) // 2)


def check_head_dim(head_dim: int) -> None:
  if slice_width(head_dim) < 2:
    raise ValueError(
        f"head_dim={head_dim} is too small for 3-D RoPE: each of the time/row/column slices needs "
        "at least 2 dims (head_dim >= 6). Check the number of heads against the width.")


def _slice_frequencies(width: int, mode: str, dtype) -> jnp.ndarray:
  """Per-element angular frequency `[width]` of one rotated slice."""
  if mode not in MODES:
    raise ValueError(f"rope mode must be one of {MODES}, got {mode!r}")
  half = width // 2
  omega = 1.0 / 10000.0 ** (jnp.arange(half, dtype=dtype) / jnp.asarray(half, dtype))
  if mode == "official":
    return jnp.concatenate([omega, omega])
  return jnp.repeat(omega, 2)


def angles(positions: tuple[jnp.ndarray, ...], head_dim: int, mode: str = "official",
           dtype=jnp.float32) -> jnp.ndarray:
  """Rotation angle of every element of a head for the given token positions.

  Args:
    positions: up to three arrays `[..., N]` (time, row, column); a missing trailing axis leaves
      its slice unrotated (used for the conditioning tokens of the AC predictor, which only carry
      a time position).
    head_dim: width of one attention head.
    mode: "official" (released weights) or "interleaved".
    dtype: dtype of the angle computation.

  Returns:
    `[..., N, head_dim]` angles; zero on unrotated dims.
  """
  s = slice_width(head_dim)
  freq = _slice_frequencies(s, mode, dtype)
  parts = []
  for pos in positions:
    parts.append(jnp.asarray(pos, dtype)[..., None] * freq)
  lead = parts[0].shape[:-1]
  rest = head_dim - s * len(parts)
  parts.append(jnp.zeros(lead + (rest,), dtype))
  return jnp.concatenate(parts, axis=-1)


def rotate(x: jnp.ndarray, theta: jnp.ndarray) -> jnp.ndarray:
  """Applies pair rotations: out[2i] = x[2i] cos - x[2i+1] sin; out[2i+1] = x[2i+1] cos + x[2i] sin.

  Args:
    x: `[..., D]` queries or keys.
    theta: angles broadcastable to `x`, `[..., D]`.
  """
  pairs = x.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))
  swapped = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  cos = jnp.cos(theta).astype(x.dtype)
  sin = jnp.sin(theta).astype(x.dtype)
  return x * cos + swapped * sin


def grid_positions(t: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Time, row and column index `[t*h*w]` of each token in time-major, row, column order."""
  n = np.arange(t * h * w)
  return n // (h * w), (n % (h * w)) // w, n % w
