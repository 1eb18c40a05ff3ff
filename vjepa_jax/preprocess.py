"""Camera frames -> model inputs: the one crop / resize / normalise used by training, evaluation
and planning.

Crops (one window per clip or frame):
- `"ac"` (default everywhere): the V-JEPA 2-AC training crop. The official random-resized-crop is
  configured so that it always takes its centred fallback window: full height and width
  `round(1.35 * H)` for frames wider than 1.35:1 (full width and height `round(W / 0.75)` for
  frames narrower than 0.75:1, the whole frame in between). The window is then resized to a
  square, so a 1.35:1 window is squashed horizontally, exactly as in training.
- `"square"`: the centred square of side min(H, W) (the official planning notebook's crop), then
  resized; on a 16:9 camera it shows a 1.35x different horizontal scale than training does.
- `"hub"` (data pipeline only): the hub/evaluation transform, short side resized to
  `int(S * 256 / 224)` with antialiasing, then a centred `S x S` crop.
The resize is bilinear without antialiasing with half-pixel centres (torch
`interpolate(mode="bilinear", align_corners=False)`); normalisation uses the ImageNet statistics.

The window arithmetic is written once for any array library (`Ops`): NumPy on static shapes here,
TensorFlow ops inside the tf.data graph (`vjepa_jax.data.transforms`), so the host pipeline and
the device path cut the same pixels.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CROPS = ("ac", "square", "hub")
DEVICE_CROPS = ("ac", "square")
AC_RATIO = (0.75, 1.35)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Ops(NamedTuple):
  """The few array operations the window arithmetic needs."""
  to_float: Callable[[Any], Any]
  to_int: Callable[[Any], Any]
  minimum: Callable[[Any, Any], Any]
  round: Callable[[Any], Any]
  floor: Callable[[Any], Any]
  where: Callable[[Any, tuple, tuple], Any]


NUMPY_OPS = Ops(np.float64, int, np.minimum, np.round, np.floor,
                lambda cond, a, b: a if cond else b)


def check_crop(crop: str, allowed=CROPS) -> None:
  if crop not in allowed:
    raise ValueError(f"crop must be one of {allowed}, got {crop!r}")


def crop_window(height, width, crop: str = "ac", ratio=AC_RATIO, ops: Ops = NUMPY_OPS):
  """Centred crop window `(top, left, crop_height, crop_width)` of an `H x W` frame.

  Args:
    height, width: frame size (Python ints, or tensors of `ops`' library).
    crop: "ac" (aspect ratio clamped into `ratio`) or "square".
    ratio: (min, max) width / height kept by the "ac" crop.
    ops: the array library's operations.
  """
  check_crop(crop, DEVICE_CROPS)
  h, w = ops.to_float(height), ops.to_float(width)
  if crop == "square":
    side = ops.to_int(ops.minimum(h, w))
    crop_h, crop_w = side, side
  else:
    lo, hi = float(min(ratio)), float(max(ratio))
    # min(W, round(H * hi)) equals the official `round(H * hi) if W / H > hi else W` for
    # integer sizes (and likewise for the height), without a branch.
    crop_h = ops.to_int(ops.minimum(h, ops.round(w / lo)))
    crop_w = ops.to_int(ops.minimum(w, ops.round(h * hi)))
  return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def hub_resize_shape(height, width, image_size: int, ops: Ops = NUMPY_OPS):
  """Size `(h, w)` after resizing the short side to `int(image_size * 256 / 224)` ("hub")."""
  short = image_size * 256 // 224
  h, w = ops.to_float(height), ops.to_float(width)
  long_h = ops.to_int(ops.floor(short * h / w))
  long_w = ops.to_int(ops.floor(short * w / h))
  return ops.where(height <= width, (short, long_w), (long_h, short))


def hub_offsets(height, width, image_size: int, ops: Ops = NUMPY_OPS):
  """`(top, left)` of the centred `image_size` square in a frame resized by `hub_resize_shape`."""
  half = lambda n: ops.to_int(ops.round(ops.to_float(n - image_size) / 2))  # noqa: E731
  return half(height), half(width)


def normalize(frames: jnp.ndarray, dtype=jnp.float32) -> jnp.ndarray:
  """uint8 `[..., 3]` frames -> ImageNet-normalised floats."""
  x = frames.astype(jnp.float32) / 255.0
  x = (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
  return x.astype(dtype)


def resize(frames: jnp.ndarray, size: int) -> jnp.ndarray:
  """Bilinear resize of `[..., H, W, C]` frames to `size x size` without antialiasing."""
  if frames.shape[-3:-1] == (size, size):
    return frames
  shape = frames.shape[:-3] + (size, size, frames.shape[-1])
  return jax.image.resize(frames, shape, method="linear", antialias=False)


def model_input(frames: jnp.ndarray, size: int, crop: str = "ac",
                dtype=jnp.float32) -> jnp.ndarray:
  """uint8 camera frames `[..., H, W, 3]` -> model input `[..., size, size, 3]` on the device.

  Crop window (from the static frame size), ImageNet normalisation, bilinear resize. Frames the
  data pipeline already cut to the "ac" window pass the "ac" crop unchanged, so clips of the
  training pipeline and raw camera frames of a robot give the same model input.
  """
  frames = jnp.asarray(frames)
  if frames.ndim < 3 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [..., H, W, 3] RGB, got shape {tuple(frames.shape)}")
  check_crop(crop, DEVICE_CROPS)
  top, left, ch, cw = crop_window(frames.shape[-3], frames.shape[-2], crop)
  frames = frames[..., top:top + ch, left:left + cw, :]
  return resize(normalize(frames, jnp.float32), size).astype(dtype)
