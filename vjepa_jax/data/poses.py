"""The pose algebra (`vjepa_jax.poses`) on TensorFlow tensors, for the tf.data graph of
`droid.py`: computed in float64 (consecutive DROID poses differ little), returned in the input's
dtype."""
import tensorflow as tf
from tensorflow.experimental import numpy as tnp

from vjepa_jax import poses as poses_lib


def poses_to_diffs(poses: tf.Tensor) -> tf.Tensor:
  """V-JEPA 2-AC actions `[..., T-1, A]` from pose states `[..., T, A]` (A = 6 or 7)."""
  poses = tf.convert_to_tensor(poses)
  return tf.cast(poses_lib.poses_to_diffs(poses, tnp), poses.dtype)


def orientation_to_euler(values: tf.Tensor, fmt: str) -> tf.Tensor:
  """Orientations `[..., k]` in `fmt` (see `poses_lib.orientation_to_euler`) -> extrinsic-xyz
  Euler angles `[..., 3]`."""
  values = tf.convert_to_tensor(values)
  return tf.cast(poses_lib.orientation_to_euler(values, fmt, tnp), values.dtype)
