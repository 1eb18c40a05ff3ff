"""End-effector pose algebra in JAX, for planning on device.

A pose is `[x, y, z, roll, pitch, yaw, gripper]`: position in metres, orientation as extrinsic-xyz
Euler angles in radians (scipy's lowercase "xyz": `R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`), gripper
closedness in [0, 1]. An action is the V-JEPA 2-AC delta `[dx, dy, dz, droll, dpitch, dyaw,
dgripper]` whose rotation part is the relative rotation `R_delta = R_next @ R_prev^T` read back
as Euler angles. Rotations always go through matrices: DROID's roll sits near +-pi, where adding or
subtracting angles wraps by 2*pi.

Every function works on arrays of any leading shape and in the input dtype (float32 poses agree
with float64 references to ~1e-6), so the CEM planner integrates the poses of all its samples on
device.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Below this |cos(pitch)| roll and yaw are not separable; yaw is set to 0 as scipy does.
_GIMBAL_EPS = 1e-7


def euler_xyz_to_matrix(angles: jnp.ndarray) -> jnp.ndarray:
  """Extrinsic-xyz Euler angles `[..., 3]` (roll, pitch, yaw) -> rotations `[..., 3, 3]`."""
  angles = jnp.asarray(angles)
  cr, sr = jnp.cos(angles[..., 0]), jnp.sin(angles[..., 0])
  cp, sp = jnp.cos(angles[..., 1]), jnp.sin(angles[..., 1])
  cy, sy = jnp.cos(angles[..., 2]), jnp.sin(angles[..., 2])
  rows = (
      (cp * cy, sr * sp * cy - cr * sy, cr * sp * cy + sr * sy),
      (cp * sy, sr * sp * sy + cr * cy, cr * sp * sy - sr * cy),
      (-sp, sr * cp, cr * cp),
  )
  return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_euler_xyz(matrix: jnp.ndarray) -> jnp.ndarray:
  """Rotations `[..., 3, 3]` -> extrinsic-xyz Euler angles `[..., 3]`.

  Ranges are scipy's: roll and yaw in (-pi, pi], pitch in [-pi/2, pi/2]. At gimbal lock
  (pitch = +-pi/2) yaw is 0 and the whole rotation about the vertical goes into roll.
  """
  m = jnp.asarray(matrix)
  r00, r01, r10, r11 = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
  r20, r21, r22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
  cos_pitch = jnp.sqrt(r00 * r00 + r10 * r10)
  pitch = jnp.arctan2(-r20, cos_pitch)
  locked = cos_pitch < _GIMBAL_EPS
  # In the lock r01 = -sign(sin pitch) * sin(roll -+ yaw) and r11 = cos(roll -+ yaw).
  roll = jnp.where(locked, jnp.arctan2(-jnp.sign(r20) * r01, r11), jnp.arctan2(r21, r22))
  yaw = jnp.where(locked, jnp.zeros_like(r00), jnp.arctan2(r10, r00))
  return jnp.stack([roll, pitch, yaw], axis=-1)


def _matmul(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  # Accelerators default to bf16 passes for float32 matmuls; poses need full precision.
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _check_last_dim(name: str, x: jnp.ndarray, dim: int = 7) -> None:
  if x.ndim == 0 or x.shape[-1] != dim:
    raise ValueError(f"{name} must be [..., {dim}] (x, y, z, roll, pitch, yaw, gripper), "
                     f"got shape {tuple(x.shape)}")


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
  pose, action = jnp.broadcast_arrays(pose, action)
  xyz = pose[..., :3] + action[..., :3]
  rot = _matmul(euler_xyz_to_matrix(action[..., 3:6]), euler_xyz_to_matrix(pose[..., 3:6]))
  grip = jnp.clip(pose[..., 6:] + action[..., 6:], 0.0, 1.0)
  return jnp.concatenate([xyz, matrix_to_euler_xyz(rot), grip], axis=-1)


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
  rot = euler_xyz_to_matrix(poses[..., 3:6])
  relative = _matmul(rot[..., 1:, :, :], jnp.swapaxes(rot[..., :-1, :, :], -1, -2))
  return jnp.concatenate([poses[..., 1:, :3] - poses[..., :-1, :3], matrix_to_euler_xyz(relative),
                          poses[..., 1:, 6:] - poses[..., :-1, 6:]], axis=-1)
