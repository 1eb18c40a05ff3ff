"""Frame preprocessing: crop windows, bilinear resize parity and random-resized-crop sampling.

Proves the "ac" crop takes the official centred 1.35:1 window and resizes it like torch
`interpolate(bilinear, align_corners=False)` without antialiasing (checked against an
independent NumPy reference and, when available, torch), that the hub crop has the expected
geometry, and that the optional random-resized-crop really samples windows inside the frame.
"""
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from vjepa_jax import preprocess
from vjepa_jax.data import transforms

FIXTURE_DIR = pathlib.Path(__file__).parent / "fixtures" / "droid_tiny" / "droid" / "1.0.0"


def _fixture_jpegs(n: int = 3) -> np.ndarray:
  shard = sorted(FIXTURE_DIR.glob("*.tfrecord-*"))[0]
  record = next(iter(tf.data.TFRecordDataset(str(shard))))
  key = "steps/observation/exterior_image_1_left"
  spec = {key: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)}
  return tf.io.parse_single_example(record, spec)[key][:n].numpy()


def _bilinear_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """Half-pixel-centred bilinear resize (torch align_corners=False), float64, no antialias."""
  h, w = img.shape[:2]

  def coords(n_out, n_in):
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0

  y0, y1, fy = coords(out_h, h)
  x0, x1, fx = coords(out_w, w)
  img = img.astype(np.float64)
  top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
  bottom = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
  return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


@pytest.mark.parametrize("hw, expected", [
    ((180, 320), [0, 38, 180, 243]),  # DROID: full height, round(1.35 * 180) = 243 wide.
    ((256, 256), [0, 0, 256, 256]),  # Aspect inside [0.75, 1.35]: whole frame.
    ((200, 270), [0, 0, 200, 270]),  # Exactly 1.35: whole frame.
    ((400, 200), [66, 0, 267, 200]),  # Taller than 0.75: full width, round(200 / 0.75) high.
])
def test_central_window_geometry(hw, expected):
  """The official fallback window: clamped aspect, floor-halved offsets."""
  assert transforms.central_window(*hw).numpy().tolist() == expected


def test_ac_crop_matches_numpy_reference():
  """'ac' output = centre 180x243 crop of the decoded frames, bilinear-resized, to rounding."""
  jpegs = _fixture_jpegs()
  video = transforms.preprocess_clip(tf.constant(jpegs), 256, "ac").numpy()
  assert video.shape == (3, 256, 256, 3) and video.dtype == np.uint8
  for t, j in enumerate(jpegs):
    full = tf.io.decode_jpeg(j, channels=3).numpy()
    ref = _bilinear_reference(full[:, 38:38 + 243], 256, 256)
    assert np.abs(video[t].astype(np.float64) - ref).max() <= 0.5 + 1e-3
  # A wrong window (e.g. the whole frame squashed) is far off: the check above can fail.
  squashed = _bilinear_reference(tf.io.decode_jpeg(jpegs[0]).numpy(), 256, 256)
  assert np.abs(video[0].astype(np.float64) - squashed).max() > 20


def test_ac_crop_matches_torch_interpolate():
  """Parity with torch F.interpolate(bilinear, align_corners=False) on the cropped frame."""
  torch = pytest.importorskip("torch")
  jpeg = _fixture_jpegs(1)
  video = transforms.preprocess_clip(tf.constant(jpeg), 224, "ac").numpy()[0]
  full = tf.io.decode_jpeg(jpeg[0], channels=3).numpy()[:, 38:38 + 243]
  x = torch.tensor(full, dtype=torch.float32).permute(2, 0, 1)[None]
  ref = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear",
                                        align_corners=False)[0].permute(1, 2, 0).numpy()
  assert np.abs(video.astype(np.float32) - ref).max() <= 0.5 + 1e-3


def test_decode_and_crop_equals_decode_then_slice():
  """Decoding only the window gives the same pixels as decoding everything and slicing."""
  jpegs = tf.constant(_fixture_jpegs(2))
  window = tf.constant([0, 38, 180, 243])
  cropped = transforms.decode_frames(jpegs, window).numpy()
  full = transforms.decode_frames(jpegs).numpy()
  np.testing.assert_array_equal(cropped, full[:, :, 38:38 + 243])


def test_hub_crop_geometry():
  """'hub': short side to int(S*256/224), centred S crop; equals resize-then-crop reference."""
  jpegs = _fixture_jpegs(1)
  assert preprocess.hub_resize_shape(180, 320, 256) == (292, 519)
  assert preprocess.hub_resize_shape(
      tf.constant(180), tf.constant(320), 256, transforms.TF_OPS).numpy().tolist() == [292, 519]
  video = transforms.preprocess_clip(tf.constant(jpegs), 256, "hub").numpy()
  assert video.shape == (1, 256, 256, 3)
  full = tf.io.decode_jpeg(jpegs[0], channels=3).numpy()
  ref = _bilinear_reference(full, 292, 519)[18:18 + 256, 132:132 + 256]
  assert np.abs(video[0].astype(np.float64) - ref).mean() < 1.0


def test_random_resized_crop_samples_valid_windows():
  """Windows differ across seeds, stay inside the frame and respect the area/aspect ranges."""
  scale, ratio = (0.3, 0.8), (0.75, 1.35)
  windows = np.array([transforms.random_resized_window(180, 320, tf.constant([s, 7], tf.int64),
                                                       scale, ratio).numpy() for s in range(40)])
  top, left, h, w = windows.T
  assert len({tuple(x) for x in windows}) > 30
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= 180).all() and (left + w <= 320).all()
  area = h * w / (180 * 320)
  assert (area > scale[0] - 0.02).all() and (area < scale[1] + 0.02).all()
  assert (w / h > ratio[0] - 0.02).all() and (w / h < ratio[1] + 0.02).all()


def test_official_scale_falls_back_to_ac_window():
  """With the official scale 1.777 no draw fits, so every window is the 'ac' centre window."""
  for s in range(5):
    window = transforms.random_resized_window(180, 320, tf.constant([s, 0], tf.int64),
                                              (1.777, 1.777), (0.75, 1.35))
    assert window.numpy().tolist() == [0, 38, 180, 243]


def test_random_crop_clip_is_resized_uint8():
  """A random-resized-crop clip has the requested shape, dtype and one window for all frames."""
  jpegs = tf.constant(_fixture_jpegs(2))
  seed = tf.constant([3, 4], tf.int64)
  video = transforms.preprocess_clip(jpegs, 64, random_crop=((0.3, 0.6), (0.75, 1.35)),
                                     seed=seed).numpy()
  assert video.shape == (2, 64, 64, 3) and video.dtype == np.uint8
  again = transforms.preprocess_clip(jpegs, 64, random_crop=((0.3, 0.6), (0.75, 1.35)),
                                     seed=seed).numpy()
  np.testing.assert_array_equal(video, again)
  ac = transforms.preprocess_clip(jpegs, 64, "ac").numpy()
  assert np.abs(video.astype(int) - ac.astype(int)).mean() > 1.0
