"""Pose algebra for DROID end-effector states, in TensorFlow so it runs inside tf.data graphs.

A pose state is `[x, y, z, roll, pitch, yaw, gripper]`: position in metres (robot base frame),
orientation as extrinsic-xyz Euler angles in radians (scipy's lowercase "xyz":
`R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`), and gripper closedness (0 open, 1 closed).

V-JEPA 2-AC actions are the deltas between consecutive states: xyz difference, the relative
rotation `R_{t+1} @ R_t^T` read back as Euler angles, and the gripper difference. Rotations go
through matrices because DROID's roll sits near +-pi, where subtracting angles wraps by 2*pi.
Everything is computed in float64 (the stored poses are float32; the differences are small).
"""
import tensorflow as tf

# Below this |cos(pitch)| the roll/yaw split is undetermined; like scipy, yaw is then set to 0.
_GIMBAL_EPS = 1e-7


def euler_xyz_to_matrix(angles: tf.Tensor) -> tf.Tensor:
  """Extrinsic-xyz Euler angles `[..., 3]` (roll, pitch, yaw) -> rotation matrices `[..., 3, 3]`."""
  angles = tf.convert_to_tensor(angles)
  a, b, c = tf.unstack(angles, axis=-1)
  ca, sa = tf.cos(a), tf.sin(a)
  cb, sb = tf.cos(b), tf.sin(b)
  cc, sc = tf.cos(c), tf.sin(c)
  rows = [
      [cb * cc, sa * sb * cc - ca * sc, ca * sb * cc + sa * sc],
      [cb * sc, sa * sb * sc + ca * cc, ca * sb * sc - sa * cc],
      [-sb, sa * cb, ca * cb],
  ]
  return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_euler_xyz(matrix: tf.Tensor) -> tf.Tensor:
  """Rotation matrices `[..., 3, 3]` -> extrinsic-xyz Euler angles `[..., 3]`.

  Ranges follow scipy: roll, yaw in (-pi, pi], pitch in [-pi/2, pi/2]. At gimbal lock
  (pitch = +-pi/2) yaw is set to 0 and the whole rotation about the vertical goes into roll.
  """
  m = tf.convert_to_tensor(matrix)
  r00, r01 = m[..., 0, 0], m[..., 0, 1]
  r10, r11 = m[..., 1, 0], m[..., 1, 1]
  r20, r21, r22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
  cos_pitch = tf.sqrt(r00 * r00 + r10 * r10)
  pitch = tf.atan2(-r20, cos_pitch)
  locked = cos_pitch < _GIMBAL_EPS
  # In the lock R01 = -sign(sin pitch) * sin(roll -+ yaw) and R11 = cos(roll -+ yaw).
  roll_locked = tf.atan2(-tf.sign(r20) * r01, r11)
  roll = tf.where(locked, roll_locked, tf.atan2(r21, r22))
  yaw = tf.where(locked, tf.zeros_like(r00), tf.atan2(r10, r00))
  return tf.stack([roll, pitch, yaw], axis=-1)


def poses_to_diffs(poses: tf.Tensor) -> tf.Tensor:
  """V-JEPA 2-AC actions from consecutive pose states.

  Args:
    poses: `[..., T, 7]` states `[x, y, z, roll, pitch, yaw, gripper]`, any float dtype.

  Returns:
    `[..., T-1, 7]` actions `[dx, dy, dz, euler_xyz(R_{t+1} R_t^T), dgripper]` in the dtype of
    `poses`, computed in float64.
  """
  poses = tf.convert_to_tensor(poses)
  out_dtype = poses.dtype
  p = tf.cast(poses, tf.float64)
  xyz, euler, grip = p[..., :3], p[..., 3:6], p[..., 6:7]
  rot = euler_xyz_to_matrix(euler)
  relative = tf.linalg.matmul(rot[..., 1:, :, :], rot[..., :-1, :, :], transpose_b=True)
  diffs = tf.concat(
      [xyz[..., 1:, :] - xyz[..., :-1, :], matrix_to_euler_xyz(relative),
       grip[..., 1:, :] - grip[..., :-1, :]],
      axis=-1)
  return tf.cast(diffs, out_dtype)


def quaternion_to_matrix(quat: tf.Tensor, order: str = "xyzw") -> tf.Tensor:
  """Quaternions `[..., 4]` ("xyzw" or "wxyz", any norm > 0) -> rotation matrices `[..., 3, 3]`."""
  q = tf.convert_to_tensor(quat)
  if order == "wxyz":
    q = tf.gather(q, [1, 2, 3, 0], axis=-1)
  elif order != "xyzw":
    raise ValueError(f"quaternion order must be 'xyzw' or 'wxyz', got {order!r}")
  q = q / tf.norm(q, axis=-1, keepdims=True)
  x, y, z, w = tf.unstack(q, axis=-1)
  rows = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
          [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
          [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
  return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)


def orientation_to_euler(values: tf.Tensor, fmt: str) -> tf.Tensor:
  """`[..., k]` orientations (`euler_xyz`, `quat_xyzw`, `quat_wxyz` or row-major `matrix`) ->
  `[..., 3]` extrinsic-xyz Euler angles, in the dtype of `values`."""
  values = tf.convert_to_tensor(values)
  if fmt == "euler_xyz":
    return values
  v = tf.cast(values, tf.float64)
  if fmt in ("quat_xyzw", "quat_wxyz"):
    mats = quaternion_to_matrix(v, fmt[5:])
  elif fmt == "matrix":
    mats = tf.reshape(v, tf.concat([tf.shape(v)[:-1], [3, 3]], axis=0))
  else:
    raise ValueError(f"unknown orientation format {fmt!r}")
  return tf.cast(matrix_to_euler_xyz(mats), values.dtype)
