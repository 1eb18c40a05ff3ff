"""Pose algebra of the planner against the official goldens (compute_new_pose, poses_to_diff).

Goldens come from the official NumPy/SciPy planner code (tests/fixtures/vjepa2_tiny): rotation
deltas are non-zero, gripper deltas leave [0, 1], and rolls sit near +-pi where naive Euler
arithmetic wraps. Tolerance 1e-5 (float32 poses).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vjepa2_tiny as fx
from vjepa_jax import poses as poses_lib
from vjepa_jax.planning import integrate_pose
from vjepa_jax.planning import poses
from vjepa_jax.planning import poses_to_diffs


def test_integrate_pose_matches_official_compute_new_pose():
  g = fx.goldens()
  out = integrate_pose(g["newpose_pose"], g["newpose_action"])
  assert out.shape == g["newpose_out"].shape
  np.testing.assert_allclose(out, g["newpose_out"], atol=1e-5, rtol=0)


def test_poses_to_diffs_matches_official():
  g = fx.goldens()
  np.testing.assert_allclose(poses_to_diffs(g["pose_seq"]), g["pose_diffs"], atol=1e-5, rtol=0)


def test_integrate_inverts_diffs():
  """Integrating the recorded actions reproduces the recorded poses (gripper inside [0, 1])."""
  g = fx.goldens()
  seq = g["pose_seq"]
  rebuilt = integrate_pose(seq[:, :-1], poses_to_diffs(seq))
  r_true = poses.euler_xyz_to_matrix(seq[:, 1:, 3:6])
  r_back = poses.euler_xyz_to_matrix(rebuilt[..., 3:6])
  np.testing.assert_allclose(rebuilt[..., :3], seq[:, 1:, :3], atol=1e-6)
  np.testing.assert_allclose(r_back, r_true, atol=1e-5)
  np.testing.assert_allclose(rebuilt[..., 6], seq[:, 1:, 6], atol=1e-6)


def test_euler_convention_is_extrinsic_xyz():
  """R = Rz(yaw) Ry(pitch) Rx(roll), and the round trip keeps angles in scipy's ranges."""
  roll, pitch, yaw = 0.3, -0.4, 2.5
  c, s = np.cos, np.sin
  rx = np.array([[1, 0, 0], [0, c(roll), -s(roll)], [0, s(roll), c(roll)]])
  ry = np.array([[c(pitch), 0, s(pitch)], [0, 1, 0], [-s(pitch), 0, c(pitch)]])
  rz = np.array([[c(yaw), -s(yaw), 0], [s(yaw), c(yaw), 0], [0, 0, 1]])
  m = poses.euler_xyz_to_matrix(jnp.array([roll, pitch, yaw]))
  np.testing.assert_allclose(m, rz @ ry @ rx, atol=1e-6)
  np.testing.assert_allclose(poses_lib.matrix_to_euler_xyz(m, jnp), [roll, pitch, yaw], atol=1e-6)


def test_broadcasting_and_jit():
  """One pose against a batch of actions (the planner's use), inside jit."""
  g = fx.goldens()
  pose = g["newpose_pose"][0, 0]
  actions = g["newpose_action"][:, 0]
  out = jax.jit(integrate_pose)(pose, actions)
  ref = integrate_pose(np.broadcast_to(pose, actions.shape), actions)
  np.testing.assert_allclose(out, ref, atol=1e-7)


def test_bad_shapes_are_errors():
  with pytest.raises(ValueError, match="pose must be"):
    integrate_pose(np.zeros(6), np.zeros(7))
  with pytest.raises(ValueError, match="T >= 2"):
    poses_to_diffs(np.zeros((1, 7)))
