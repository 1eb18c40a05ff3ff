"""The NumPy frame transforms (LeRobot path) against the TensorFlow ones (RLDS path).

Proves on random frames (the worst case for interpolation): the "ac" window equals
`transforms.central_window` for wide, narrow and in-range aspect ratios; the bilinear resize is
bit-exact with TensorFlow's when shrinking or mixed, and within one level when enlarging (the
swscale path); the hub resize is within one level; a random-resized-crop window fits the frame.
"""
import numpy as np
import pytest
import tensorflow as tf

from vjepa_jax.data import np_transforms
from vjepa_jax.data import transforms


@pytest.mark.parametrize("hw", [(180, 320), (480, 640), (100, 60), (48, 64), (300, 60)])
def test_central_window_matches(hw):
  assert np_transforms.central_window(*hw) == tuple(
      int(v) for v in transforms.central_window(*hw).numpy())


@pytest.mark.parametrize("hw, size, exact", [((180, 243), 256, False), ((48, 64), 64, False),
                                             ((480, 648), 256, True), ((120, 300), 256, True),
                                             ((300, 40), 96, True)])
def test_bilinear_resize_matches_tensorflow(hw, size, exact):
  frames = np.random.default_rng(0).integers(0, 256, (3, *hw, 3), dtype=np.uint8)
  ours = np_transforms.resize_bilinear_uint8(frames, (size, size)).astype(int)
  theirs = transforms.resize_bilinear_uint8(tf.constant(frames), (size, size)).numpy()
  assert ours.shape == theirs.shape
  assert np.abs(ours - theirs).max() <= (0 if exact else 1)


def test_hub_crop_and_random_window():
  frames = np.random.default_rng(1).integers(0, 256, (2, 90, 160, 3), dtype=np.uint8)
  pngs = tf.constant([tf.io.encode_png(f).numpy() for f in frames])
  ours = np_transforms.preprocess_clip(frames, 64, "hub").astype(int)
  theirs = transforms.preprocess_clip(pngs, 64, "hub", encoding="png").numpy()
  assert ours.shape == (2, 64, 64, 3) and np.abs(ours - theirs).max() <= 1
  rng = np.random.default_rng(2)
  for _ in range(20):
    top, left, h, w = np_transforms.random_resized_window(90, 160, rng, (0.3, 1.0), (0.75, 1.35))
    assert 0 <= top and top + h <= 90 and 0 <= left and left + w <= 160 and h > 0 and w > 0
