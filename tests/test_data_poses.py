"""Pose algebra parity: V-JEPA 2-AC pose deltas in the tf.data graph, Euler/matrix conversions
on NumPy and TensorFlow.

Proves numeric parity with the official `poses_to_diffs` goldens (computed by the official code in
float64), with the DROID fixture's ground-truth stride-4 deltas, and with scipy's extrinsic "xyz"
convention, including roll wrapping through +-pi and gimbal lock.
"""
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from vjepa_jax import poses as poses_lib
from vjepa_jax.data import poses

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
NAMESPACES = pytest.mark.parametrize("xp", [np, tf.experimental.numpy], ids=["numpy", "tf"])


def test_pose_diffs_match_official_goldens():
  """pose_seq -> pose_diffs equals the official output (float32 in, float32 out, atol 1e-5)."""
  golden = np.load(FIXTURES / "droid_pose_goldens.npz")
  out = poses.poses_to_diffs(golden["pose_seq"]).numpy()
  assert out.dtype == np.float32
  assert out.shape == golden["pose_diffs"].shape
  np.testing.assert_allclose(out, golden["pose_diffs"], rtol=0, atol=1e-5)


def test_pose_diffs_wrap_where_naive_subtraction_fails():
  """The goldens cross roll = +-pi: naive angle subtraction is off by ~2*pi there, ours is not."""
  seq = np.load(FIXTURES / "droid_pose_goldens.npz")["pose_seq"].astype(np.float64)
  naive = seq[:, 1:, 3] - seq[:, :-1, 3]
  ours = poses.poses_to_diffs(seq).numpy()[..., 3]
  assert np.abs(naive).max() > 6.0
  assert np.abs(ours).max() < 0.5


def test_pose_diffs_match_fixture_ground_truth():
  """States every 4th step of each fixture episode give the fixture's pose_diff_stride4."""
  gt = np.load(FIXTURES / "droid_tiny" / "ground_truth.npz")
  for i in range(int(gt["num_episodes"])):
    states = np.concatenate([gt[f"ep{i:03d}/cartesian_position"],
                             gt[f"ep{i:03d}/gripper_position"]], axis=1)[::4]
    np.testing.assert_allclose(poses.poses_to_diffs(states).numpy(),
                               gt[f"ep{i:03d}/pose_diff_stride4"], rtol=0, atol=1e-9)


@NAMESPACES
def test_euler_matrix_round_trip_matches_scipy(xp):
  """euler -> matrix and matrix -> euler equal scipy's extrinsic 'xyz' to 1e-12."""
  rotation = pytest.importorskip("scipy.spatial.transform").Rotation
  rng = np.random.default_rng(0)
  angles = rng.uniform(-np.pi, np.pi, (500, 3)) * np.array([1.0, 0.5, 1.0])
  np.testing.assert_allclose(poses_lib.euler_xyz_to_matrix(angles, xp),
                             rotation.from_euler("xyz", angles).as_matrix(), atol=1e-12)
  mats = rotation.random(500, random_state=1).as_matrix()
  np.testing.assert_allclose(poses_lib.matrix_to_euler_xyz(mats, xp),
                             rotation.from_matrix(mats).as_euler("xyz"), atol=1e-10)


@NAMESPACES
def test_gimbal_lock_follows_scipy(xp):
  """At pitch = +-pi/2, yaw is 0 and the vertical rotation goes into roll, as in scipy."""
  rotation = pytest.importorskip("scipy.spatial.transform").Rotation
  angles = np.array([[0.3, np.pi / 2, 0.5], [0.3, -np.pi / 2, 0.5], [3.1, np.pi / 2, -2.0]])
  mats = rotation.from_euler("xyz", angles).as_matrix()
  with pytest.warns(UserWarning):
    expected = rotation.from_matrix(mats).as_euler("xyz")
  np.testing.assert_allclose(poses_lib.matrix_to_euler_xyz(mats, xp), expected, atol=1e-9)
