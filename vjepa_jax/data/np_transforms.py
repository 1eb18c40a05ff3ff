"""NumPy twin of `transforms.py` for decoded frames: the same crop windows and resizes.

`preprocess_clip(frames, ...)` takes uint8 `[T, H, W, 3]` frames of one clip and returns the
same pixels `transforms.preprocess_clip` gives for the same frames: the "ac" centred 1.35:1 window
and the half-pixel bilinear resize (TensorFlow's `ResizeBilinear(half_pixel_centers=True)`:
bit-exact when shrinking, within one level when enlarging), a random-resized-crop window drawn
with a NumPy generator, and the "hub" short-side resize with an antialiasing triangle filter
(within one level of TensorFlow's).
"""
from collections.abc import Sequence

import numpy as np

from vjepa_jax import preprocess

AC_RATIO = preprocess.AC_RATIO
CROPS = ("ac", "hub")


def central_window(height: int, width: int,
                   ratio: Sequence[float] = AC_RATIO) -> tuple[int, int, int, int]:
  """Centred "ac" crop window `(top, left, h, w)` of `preprocess.crop_window`."""
  return preprocess.crop_window(int(height), int(width), "ac", ratio)


def random_resized_window(height: int, width: int, rng: np.random.Generator,
                          scale: Sequence[float], ratio: Sequence[float],
                          attempts: int = 10) -> tuple[int, int, int, int]:
  """Inception-style random window (first of `attempts` draws that fits, else centred)."""
  u = rng.random((attempts, 2))
  area = (scale[0] + u[:, 0] * (scale[1] - scale[0])) * height * width
  log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
  aspect = np.exp(log_lo + u[:, 1] * (log_hi - log_lo))
  cand_w = np.round(np.sqrt(area * aspect))
  cand_h = np.round(np.sqrt(area / aspect))
  fits = (cand_w > 0) & (cand_w <= width) & (cand_h > 0) & (cand_h <= height)
  if not fits.any():
    return central_window(height, width, ratio)
  first = int(np.argmax(fits))
  crop_h, crop_w = int(cand_h[first]), int(cand_w[first])
  pos = rng.random(2)
  top = min(int(np.floor(pos[0] * (height - crop_h + 1))), height - crop_h)
  left = min(int(np.floor(pos[1] * (width - crop_w + 1))), width - crop_w)
  return top, left, crop_h, crop_w


def _bilinear_taps(n_in: int, n_out: int):
  scale = np.float32(n_in / n_out)
  x = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  floor = np.floor(x)
  lower = np.maximum(floor, 0).astype(np.int64)
  upper = np.minimum(np.ceil(x), n_in - 1).astype(np.int64)
  return lower, upper, (x - floor).astype(np.float32)


def resize_bilinear_uint8(frames: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Half-pixel bilinear resize of uint8 `[T, h, w, 3]` to `[T, *size, 3]` (no antialias),
  rounded half up, as `transforms.resize_bilinear_uint8`.

  Enlarging (the "ac" window of 180x320 frames to 256) goes through FFmpeg's swscale bilinear
  filter, ~9x faster and within one level of TensorFlow's pixels; shrinking, where swscale
  would antialias, is computed here exactly as TensorFlow does.
  """
  t, h, w, c = frames.shape
  if h <= size[0] and w <= size[1] and c == 3:
    return _swscale_bilinear(frames, size)
  return _bilinear_exact(frames, size)


def _swscale_bilinear(frames: np.ndarray, size: Sequence[int]) -> np.ndarray:
  import av
  out = np.empty((len(frames), size[0], size[1], 3), np.uint8)
  for i, frame in enumerate(frames):
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    out[i] = vf.reformat(width=size[1], height=size[0], interpolation="BILINEAR").to_ndarray()
  return out


def _bilinear_exact(frames: np.ndarray, size: Sequence[int]) -> np.ndarray:
  t, h, w, c = frames.shape
  y0, y1, wy = _bilinear_taps(h, size[0])
  x0, x1, wx = _bilinear_taps(w, size[1])
  # Gather whole pixels (c bytes each) before converting: 4x less memory traffic than floats.
  pixels = np.ascontiguousarray(frames).view(np.dtype((np.void, c)))[..., 0]  # [T, h, w]
  rows = (pixels[:, y0], pixels[:, y1])

  def taps(r, x):
    return np.take(r, x, axis=2)[..., None].view(np.uint8).reshape(
        t, size[0], size[1], c).astype(np.float32)

  wx = wx[None, None, :, None]
  # TensorFlow interpolates along x on both source rows, then along y.
  top_l = taps(rows[0], x0)
  top = top_l + (taps(rows[0], x1) - top_l) * wx
  bot_l = taps(rows[1], x0)
  bottom = bot_l + (taps(rows[1], x1) - bot_l) * wx
  out = top + (bottom - top) * wy[None, :, None, None]
  return (out + np.float32(0.5)).astype(np.uint8)


def _triangle_weights(n_in: int, n_out: int) -> np.ndarray:
  """`[n_out, n_in]` antialiased bilinear weights (triangle kernel widened when shrinking)."""
  scale = n_in / n_out
  support = max(scale, 1.0)
  centres = (np.arange(n_out) + 0.5) * scale
  src = np.arange(n_in) + 0.5
  weights = np.maximum(0.0, 1.0 - np.abs(src[None, :] - centres[:, None]) / support)
  return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def resize_antialias_uint8(frames: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Antialiased bilinear resize of uint8 `[T, h, w, 3]` to `[T, *size, 3]`."""
  t, h, w, c = frames.shape
  wy = _triangle_weights(h, size[0])
  wx = _triangle_weights(w, size[1])
  f = frames.astype(np.float32)
  # Two matrix products (BLAS) over the separable weights: rows, then columns.
  rows = np.matmul(wy, f.reshape(t, h, w * c)).reshape(t, size[0], w, c)
  cols = rows.transpose(0, 1, 3, 2).reshape(-1, w) @ wx.T  # [T * S0 * c, S1]
  out = cols.reshape(t, size[0], c, size[1]).transpose(0, 1, 3, 2)
  return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def clip_window(height: int, width: int, crop: str = "ac",
                random_crop: tuple[Sequence[float], Sequence[float]] | None = None,
                rng: np.random.Generator | None = None) -> tuple[int, int, int, int] | None:
  """The window `preprocess_clip` takes from `height x width` frames, known before decoding
  ("ac" or a random-resized-crop draw); None for "hub", which resizes whole frames."""
  if random_crop is not None:
    if rng is None:
      raise ValueError("random_crop needs a rng")
    return random_resized_window(height, width, rng, *random_crop)
  if crop == "ac":
    return central_window(height, width)
  return None


def finish_clip(window_frames: np.ndarray, image_size: int | None, crop: str = "ac",
                random_crop=None) -> np.ndarray:
  """`preprocess_clip` after the window: frames already cut to `clip_window` (or whole frames
  for "hub") -> `[T, S, S, 3]` (the window itself with `image_size=None`)."""
  if random_crop is None and crop == "hub":
    return _hub(window_frames, image_size)
  if image_size is None:
    return window_frames
  return resize_bilinear_uint8(window_frames, (image_size, image_size))


def _hub(frames: np.ndarray, image_size: int) -> np.ndarray:
  _, height, width, _ = frames.shape
  resized = resize_antialias_uint8(frames, preprocess.hub_resize_shape(height, width, image_size))
  top, left = preprocess.hub_offsets(resized.shape[1], resized.shape[2], image_size)
  return resized[:, top:top + image_size, left:left + image_size]


def preprocess_clip(frames: np.ndarray, image_size: int | None, crop: str = "ac",
                    random_crop: tuple[Sequence[float], Sequence[float]] | None = None,
                    rng: np.random.Generator | None = None) -> np.ndarray:
  """uint8 frames `[T, H, W, 3]` of one clip -> `[T, S, S, 3]` (see `transforms.preprocess_clip`;
  `image_size=None` keeps the "ac" window's native size)."""
  if crop not in CROPS:
    raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
  if image_size is None and (crop != "ac" or random_crop is not None):
    raise ValueError("image_size=None (no resize) needs crop='ac' without random_crop")
  _, height, width, _ = frames.shape
  window = clip_window(height, width, crop, random_crop, rng)
  if window is not None:
    top, left, h, w = window
    frames = frames[:, top:top + h, left:left + w]
  return finish_clip(np.ascontiguousarray(frames), image_size, crop, random_crop)
