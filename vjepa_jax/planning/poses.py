"""The pose algebra (`vjepa_jax.poses`) on jax.numpy, for the planner: shapes checked, the input
dtype kept, so the CEM planner integrates the poses of all its samples on device in float32."""
from __future__ import annotations

import jax.numpy as jnp

from vjepa_jax import poses as poses_lib


def _check_last_dim(name: str, x: jnp.ndarray, dim: int = 7) -> None:
  if x.ndim == 0 or x.shape[-1] != dim:
    raise ValueError(f"{name} must be [..., {dim}] (x, y, z, roll, pitch, yaw, gripper), "
                     f"got shape {tuple(x.shape)}")


def euler_xyz_to_matrix(angles: jnp.ndarray) -> jnp.ndarray:
  """Extrinsic-xyz Euler angles `[..., 3]` (roll, pitch, yaw) -> rotations `[..., 3, 3]`."""
  return poses_lib.euler_xyz_to_matrix(angles, jnp)


def integrate_pose(pose: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
  """Pose after applying an action: the world model's proprioceptive step.

  xyz adds, the rotation composes as `R_new = R_delta @ R_pose`, the gripper adds and is clipped
  to [0, 1].

  Args:
    pose: `[..., 7]` poses.
    action: `[..., 7]` actions, broadcastable against `pose`.

  Returns:
    `[..., 7]` new poses.
  """
  pose, action = jnp.asarray(pose), jnp.asarray(action)
  _check_last_dim("pose", pose)
  _check_last_dim("action", action)
  return poses_lib.integrate_pose(pose, action, jnp)


def poses_to_diffs(poses: jnp.ndarray) -> jnp.ndarray:
  """Actions between consecutive poses (inverse of `integrate_pose` up to the gripper clip).

  Args:
    poses: `[..., T, 7]`.

  Returns:
    `[..., T-1, 7]`: `[xyz_{t+1} - xyz_t, euler(R_{t+1} R_t^T), g_{t+1} - g_t]`.
  """
  poses = jnp.asarray(poses)
  _check_last_dim("poses", poses)
  if poses.ndim < 2 or poses.shape[-2] < 2:
    raise ValueError(f"poses must be [..., T >= 2, 7], got shape {tuple(poses.shape)}")
  return poses_lib.poses_to_diffs(poses, jnp)
