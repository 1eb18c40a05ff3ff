"""End-effector pose algebra, written once for NumPy, jax.numpy and TensorFlow.

A pose is `[x, y, z, roll, pitch, yaw, gripper]`: position in metres (robot base frame),
orientation as extrinsic-xyz Euler angles in radians (scipy's lowercase "xyz":
`R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`), gripper closedness (0 open, 1 closed); layouts without a
gripper are `[..., 6]`. A V-JEPA 2-AC action is the delta between consecutive poses: the xyz
difference, the relative rotation `R_{t+1} @ R_t^T` read back as Euler angles, and the gripper
difference. Rotations always go through matrices: DROID's roll sits near +-pi, where adding or
subtracting angles wraps by 2*pi.

Every function takes the array namespace `xp`: `numpy` (the default: readers, writers, layouts),
`jax.numpy` (the planner, `vjepa_jax.planning.poses`) or `tf.experimental.numpy` (the tf.data
graph, `vjepa_jax.data.poses`; it needs no `experimental_enable_numpy_behavior`). NumPy and
TensorFlow compute in float64: the stored poses are float32 and consecutive ones differ little.
jax.numpy keeps the input dtype, float32 on device (within ~1e-6 of float64).
"""
import jax
import jax.numpy as jnp
import numpy as np

# Below this |cos(pitch)| roll and yaw are not separable; yaw is set to 0 as scipy does.
_GIMBAL_EPS = 1e-7


def _asfloat(x, xp):
  return xp.asarray(x) if xp is jnp else xp.asarray(x, np.float64)


def _matmul(a, b, xp):
  if xp is jnp:
    # Accelerators default to bf16 passes for float32 matmuls; poses need full precision.
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
  return xp.matmul(a, b)


def euler_xyz_to_matrix(angles, xp=np):
  """Extrinsic-xyz Euler angles `[..., 3]` (roll, pitch, yaw) -> rotations `[..., 3, 3]`."""
  angles = _asfloat(angles, xp)
  cr, sr = xp.cos(angles[..., 0]), xp.sin(angles[..., 0])
  cp, sp = xp.cos(angles[..., 1]), xp.sin(angles[..., 1])
  cy, sy = xp.cos(angles[..., 2]), xp.sin(angles[..., 2])
  rows = ((cp * cy, sr * sp * cy - cr * sy, cr * sp * cy + sr * sy),
          (cp * sy, sr * sp * sy + cr * cy, cr * sp * sy - sr * cy),
          (-sp, sr * cp, cr * cp))
  return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_euler_xyz(matrix, xp=np):
  """Rotations `[..., 3, 3]` -> extrinsic-xyz Euler angles `[..., 3]`.

  Ranges are scipy's: roll and yaw in (-pi, pi], pitch in [-pi/2, pi/2]. At gimbal lock
  (pitch = +-pi/2) yaw is 0 and the whole rotation about the vertical goes into roll.
  """
  m = _asfloat(matrix, xp)
  r00, r01, r10, r11 = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
  r20, r21, r22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
  cos_pitch = xp.sqrt(r00 * r00 + r10 * r10)
  pitch = xp.arctan2(-r20, cos_pitch)
  locked = cos_pitch < _GIMBAL_EPS
  # In the lock r01 = -sign(sin pitch) * sin(roll -+ yaw) and r11 = cos(roll -+ yaw).
  roll = xp.where(locked, xp.arctan2(-xp.sign(r20) * r01, r11), xp.arctan2(r21, r22))
  yaw = xp.where(locked, xp.zeros_like(r00), xp.arctan2(r10, r00))
  return xp.stack([roll, pitch, yaw], axis=-1)


def _check_order(order: str) -> None:
  if order not in ("xyzw", "wxyz"):
    raise ValueError(f"quaternion order must be 'xyzw' or 'wxyz', got {order!r}")


def quaternion_to_matrix(quat, order: str = "xyzw", xp=np):
  """Quaternions `[..., 4]` ("xyzw" or "wxyz", any norm > 0) -> rotations `[..., 3, 3]`."""
  _check_order(order)
  q = _asfloat(quat, xp)
  if order == "wxyz":
    q = xp.take(q, [1, 2, 3, 0], axis=-1)
  q = q / xp.sqrt(xp.sum(q * q, axis=-1, keepdims=True))
  x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  rows = ((1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)),
          (2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)),
          (2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)))
  return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quaternion(matrix, order: str = "xyzw", xp=np):
  """Rotations `[..., 3, 3]` -> unit quaternions `[..., 4]` with w >= 0, in `order`."""
  _check_order(order)
  m = _asfloat(matrix, xp)
  trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
  # Each candidate is accurate where its squared component is the largest (Shepperd).
  cands = xp.stack([
      xp.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                m[..., 1, 0] - m[..., 0, 1], 1 + trace], -1),
      xp.stack([1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
      xp.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
      xp.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], m[..., 1, 0] - m[..., 0, 1]], -1),
  ], axis=-2)
  diag = xp.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
  best = xp.take_along_axis(cands, xp.argmax(diag, -1)[..., None, None], axis=-2)[..., 0, :]
  q = best / xp.sqrt(xp.sum(best * best, axis=-1, keepdims=True))
  q = xp.where(q[..., 3:4] < 0, -q, q)
  return xp.take(q, [3, 0, 1, 2], axis=-1) if order == "wxyz" else q


def orientation_to_euler(values, fmt: str, xp=np):
  """Orientations `[..., k]` in `fmt` -> extrinsic-xyz Euler angles `[..., 3]`.

  `fmt` is "euler_xyz" (k = 3), "quat_xyzw" or "quat_wxyz" (k = 4) or "matrix" (k = 9,
  row-major).
  """
  if fmt == "euler_xyz":
    return _asfloat(values, xp)
  if fmt in ("quat_xyzw", "quat_wxyz"):
    return matrix_to_euler_xyz(quaternion_to_matrix(values, fmt[5:], xp), xp)
  if fmt == "matrix":
    v = _asfloat(values, xp)
    # Rows stacked rather than reshaped: inside tf.data the leading shape is only known at run time.
    return matrix_to_euler_xyz(xp.stack([v[..., 0:3], v[..., 3:6], v[..., 6:9]], axis=-2), xp)
  raise ValueError(f"unknown orientation format {fmt!r}")


def integrate_pose(pose, action, xp=np):
  """Pose after applying an action: the world model's proprioceptive step.

  xyz adds, the rotation composes as `R_new = R_delta @ R_pose`, the gripper adds and is clipped
  to [0, 1].

  Args:
    pose: `[..., A]` poses (A = 6 or 7).
    action: `[..., A]` actions, broadcastable against `pose`.
    xp: the array namespace.

  Returns:
    `[..., A]` new poses.
  """
  pose, action = xp.broadcast_arrays(_asfloat(pose, xp), _asfloat(action, xp))
  rot = _matmul(euler_xyz_to_matrix(action[..., 3:6], xp), euler_xyz_to_matrix(pose[..., 3:6], xp),
                xp)
  return xp.concatenate([pose[..., :3] + action[..., :3], matrix_to_euler_xyz(rot, xp),
                         xp.clip(pose[..., 6:] + action[..., 6:], 0.0, 1.0)], axis=-1)


def poses_to_diffs(poses, xp=np):
  """Actions between consecutive poses (inverse of `integrate_pose` up to the gripper clip).

  Args:
    poses: `[..., T, A]` poses (A = 6 or 7).
    xp: the array namespace.

  Returns:
    `[..., T-1, A]`: `[xyz_{t+1} - xyz_t, euler_xyz(R_{t+1} R_t^T), g_{t+1} - g_t]`.
  """
  p = _asfloat(poses, xp)
  rot = euler_xyz_to_matrix(p[..., 3:6], xp)
  relative = _matmul(rot[..., 1:, :, :], xp.swapaxes(rot[..., :-1, :, :], -1, -2), xp)
  return xp.concatenate([p[..., 1:, :3] - p[..., :-1, :3], matrix_to_euler_xyz(relative, xp),
                         p[..., 1:, 6:] - p[..., :-1, 6:]], axis=-1)
