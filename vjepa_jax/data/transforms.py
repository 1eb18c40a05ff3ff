"""Frame preprocessing in TensorFlow: JPEG decode, crop, resize, optional random-resized-crop.

All functions run inside tf.data graphs and return uint8 frames; normalisation (ImageNet mean/std)
happens on the accelerator so host memory and host-to-device traffic stay 4x smaller.

Crops (one window per clip, shared by all its frames):
- `"ac"`: the V-JEPA 2-AC training transform. Its random-resized-crop is configured with an area
  scale of 1.777, which never fits, so it always takes the centred fallback window: full height and
  width `round(1.35 * H)` for frames wider than 1.35:1 (full width and height `round(W / 0.75)`
  for frames narrower than 0.75:1, the whole frame in between), then a bilinear resize to
  `S x S` without antialiasing and with half-pixel centres (torch `align_corners=False`).
- `"hub"`: the hub/evaluation transform: resize the short side to `int(S * 256 / 224)`, then a
  centred `S x S` crop.
Because the `"ac"` window is known before decoding, only that window is decoded
(`decode_and_crop_jpeg` gives the same pixels as decoding everything and slicing).
"""
from collections.abc import Sequence

import tensorflow as tf

from vjepa_jax import preprocess

AC_RATIO = preprocess.AC_RATIO
CROPS = ("ac", "hub")


def _to_float64(x):
  return tf.cast(x, tf.float64)


def _to_int32(x):
  return tf.cast(x, tf.int32)


def _where(cond, a, b):
  return tf.where(cond, tf.stack(a), tf.stack(b))


# The window arithmetic of `vjepa_jax.preprocess`, evaluated with TensorFlow ops in the graph.
# Named functions: AutoGraph cannot read the source of two lambdas on one line.
TF_OPS = preprocess.Ops(to_float=_to_float64, to_int=_to_int32, minimum=tf.minimum,
                        round=tf.round, floor=tf.floor, where=_where)


def central_window(height: tf.Tensor, width: tf.Tensor,
                   ratio: Sequence[float] = AC_RATIO) -> tf.Tensor:
  """Centred "ac" crop window `[top, left, h, w]` (int32) of `preprocess.crop_window`."""
  height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
  return tf.stack(preprocess.crop_window(height, width, "ac", ratio, TF_OPS))


def random_resized_window(height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor,
                          scale: Sequence[float], ratio: Sequence[float],
                          attempts: int = 10) -> tf.Tensor:
  """Inception-style random crop window `[top, left, h, w]` (int32).

  Draws `attempts` (area fraction uniform in `scale`, aspect log-uniform in `ratio`) candidates
  and takes the first that fits in the frame; if none fits, the centred window of `central_window`.

  Args:
    height, width: frame size (scalars).
    seed: `[2]` int seed for the stateless draws.
    scale: (min, max) fraction of the frame area.
    ratio: (min, max) width / height.
    attempts: number of candidates.
  """
  h = tf.cast(height, tf.float64)
  w = tf.cast(width, tf.float64)
  draw_seed, pos_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  u = tf.random.stateless_uniform([attempts, 2], seed=draw_seed, dtype=tf.float64)
  area = (scale[0] + u[:, 0] * (scale[1] - scale[0])) * h * w
  log_lo, log_hi = tf.math.log(float(ratio[0])), tf.math.log(float(ratio[1]))
  aspect = tf.exp(tf.cast(log_lo, tf.float64) + u[:, 1] * tf.cast(log_hi - log_lo, tf.float64))
  cand_w = tf.round(tf.sqrt(area * aspect))
  cand_h = tf.round(tf.sqrt(area / aspect))
  fits = (cand_w > 0) & (cand_w <= w) & (cand_h > 0) & (cand_h <= h)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  crop_h = tf.cast(cand_h[first], tf.int32)
  crop_w = tf.cast(cand_w[first], tf.int32)
  height = tf.cast(height, tf.int32)
  width = tf.cast(width, tf.int32)
  pos = tf.random.stateless_uniform([2], seed=pos_seed, dtype=tf.float64)
  top = tf.cast(tf.floor(pos[0] * tf.cast(height - crop_h + 1, tf.float64)), tf.int32)
  left = tf.cast(tf.floor(pos[1] * tf.cast(width - crop_w + 1, tf.float64)), tf.int32)
  sampled = tf.stack([tf.minimum(top, height - crop_h), tf.minimum(left, width - crop_w),
                      crop_h, crop_w])
  return tf.cond(tf.reduce_any(fits), lambda: sampled,
                 lambda: central_window(height, width, ratio))


def decode_frames(jpegs: tf.Tensor, window: tf.Tensor | None = None,
                  encoding: str = "jpeg") -> tf.Tensor:
  """Decodes `jpegs` `[T]` (strings) to uint8 `[T, h, w, 3]`, only inside `window` if given.

  `encoding="png"` decodes PNG strings (whole frames, then the window is sliced out).
  """
  if encoding == "png":
    def fn(j):
      frame = tf.io.decode_png(j, channels=3)
      if window is None:
        return frame
      return frame[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
  elif window is None:
    fn = lambda j: tf.io.decode_jpeg(j, channels=3)
  else:
    fn = lambda j: tf.io.decode_and_crop_jpeg(j, window, channels=3)
  return tf.map_fn(fn, jpegs, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def image_shape(encoded: tf.Tensor, encoding: str = "jpeg") -> tf.Tensor:
  """`[height, width, channels]` of one encoded frame (JPEG: from its header, no decode)."""
  if encoding == "png":
    return tf.shape(tf.io.decode_png(encoded, channels=3))
  return tf.io.extract_jpeg_shape(encoded)


def resize_bilinear_uint8(frames: tf.Tensor, size: Sequence[int],
                          antialias: bool = False) -> tf.Tensor:
  """Bilinear resize of uint8 `[T, h, w, 3]` to `[T, *size, 3]`, rounded back to uint8.

  Without antialiasing this is half-pixel-centred bilinear sampling (torch `interpolate(mode=
  "bilinear", align_corners=False)`).
  """
  if antialias:
    resized = tf.image.resize(frames, size, method="bilinear", antialias=True)
  else:
    resized = tf.raw_ops.ResizeBilinear(images=frames, size=tf.constant(size, tf.int32),
                                        align_corners=False, half_pixel_centers=True)
  # Bilinear weights are convex, so the result already lies in [0, 255]; +0.5 rounds half up.
  return tf.cast(resized + 0.5, tf.uint8)


def preprocess_clip(jpegs: tf.Tensor, image_size: int | None, crop: str = "ac",
                    random_crop: tuple[Sequence[float], Sequence[float]] | None = None,
                    seed: tf.Tensor | None = None, encoding: str = "jpeg") -> tf.Tensor:
  """JPEG strings `[T]` of one clip -> uint8 video `[T, S, S, 3]`.

  Args:
    jpegs: `[T]` JPEG-encoded frames of one camera (all of the same size).
    image_size: output side S; None keeps the crop window's native size (no resize), for
      consumers that resize on the accelerator (not available with the "hub" crop).
    crop: `"ac"` or `"hub"` (see module docstring).
    random_crop: `(scale, ratio)` ranges to draw one random-resized-crop window per clip instead
      of the deterministic crop; then the window is resized to S x S like `"ac"`.
    seed: `[2]` int seed, required with `random_crop`.
    encoding: "jpeg" or "png" (the frames' image encoding).
  """
  if crop not in CROPS:
    raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
  if image_size is None and (crop != "ac" or random_crop is not None):
    raise ValueError("image_size=None (no resize) needs crop='ac' without random_crop")
  shape = image_shape(jpegs[0], encoding)
  height, width = shape[0], shape[1]
  size = (image_size, image_size)
  if random_crop is not None:
    if seed is None:
      raise ValueError("random_crop needs a seed")
    window = random_resized_window(height, width, seed, *random_crop)
    return resize_bilinear_uint8(decode_frames(jpegs, window, encoding), size)
  if crop == "ac":
    frames = decode_frames(jpegs, central_window(height, width), encoding)
    return frames if image_size is None else resize_bilinear_uint8(frames, size)
  shape = preprocess.hub_resize_shape(height, width, image_size, TF_OPS)
  resized = resize_bilinear_uint8(decode_frames(jpegs, encoding=encoding), shape, antialias=True)
  top, left = preprocess.hub_offsets(tf.shape(resized)[1], tf.shape(resized)[2], image_size,
                                     TF_OPS)
  return resized[:, top:top + image_size, left:left + image_size, :]
