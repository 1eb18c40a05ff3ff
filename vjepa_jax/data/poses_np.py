"""NumPy twin of `poses.py` (same conventions and results), plus quaternion conversions.

Used where no TensorFlow graph runs: the LeRobot reader, the writers and spec layouts.
Orientation conventions: extrinsic-xyz Euler angles (scipy "xyz", `R = Rz(yaw) Ry(pitch)
Rx(roll)`); quaternions as (x, y, z, w) or (w, x, y, z); matrices row-major `[..., 3, 3]`.
"""
import numpy as np

_GIMBAL_EPS = 1e-7  # As poses.py: below this |cos(pitch)| yaw is set to 0.


def euler_xyz_to_matrix(angles: np.ndarray) -> np.ndarray:
  """Extrinsic-xyz Euler angles `[..., 3]` -> rotation matrices `[..., 3, 3]` (float64)."""
  a, b, c = np.moveaxis(np.asarray(angles, np.float64), -1, 0)
  ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
  rows = [[cb * cc, sa * sb * cc - ca * sc, ca * sb * cc + sa * sc],
          [cb * sc, sa * sb * sc + ca * cc, ca * sb * sc - sa * cc],
          [-sb, sa * cb, ca * cb]]
  return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_euler_xyz(matrix: np.ndarray) -> np.ndarray:
  """Rotation matrices `[..., 3, 3]` -> extrinsic-xyz Euler angles `[..., 3]` (scipy ranges)."""
  m = np.asarray(matrix, np.float64)
  cos_pitch = np.sqrt(m[..., 0, 0] ** 2 + m[..., 1, 0] ** 2)
  pitch = np.arctan2(-m[..., 2, 0], cos_pitch)
  locked = cos_pitch < _GIMBAL_EPS
  roll = np.where(locked, np.arctan2(-np.sign(m[..., 2, 0]) * m[..., 0, 1], m[..., 1, 1]),
                  np.arctan2(m[..., 2, 1], m[..., 2, 2]))
  yaw = np.where(locked, 0.0, np.arctan2(m[..., 1, 0], m[..., 0, 0]))
  return np.stack([roll, pitch, yaw], axis=-1)


def quaternion_to_matrix(quat: np.ndarray, order: str = "xyzw") -> np.ndarray:
  """Quaternions `[..., 4]` ("xyzw" or "wxyz", any norm > 0) -> rotation matrices."""
  q = np.asarray(quat, np.float64)
  if order == "wxyz":
    q = q[..., [1, 2, 3, 0]]
  elif order != "xyzw":
    raise ValueError(f"quaternion order must be 'xyzw' or 'wxyz', got {order!r}")
  q = q / np.linalg.norm(q, axis=-1, keepdims=True)
  x, y, z, w = np.moveaxis(q, -1, 0)
  rows = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
          [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
          [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
  return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quaternion(matrix: np.ndarray, order: str = "xyzw") -> np.ndarray:
  """Rotation matrices `[..., 3, 3]` -> unit quaternions with w >= 0, in `order`."""
  m = np.asarray(matrix, np.float64)
  trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
  # Each candidate is accurate where its squared component is the largest (Shepperd).
  cands = np.stack([
      np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                m[..., 1, 0] - m[..., 0, 1], 1 + trace], -1),
      np.stack([1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
      np.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
      np.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], m[..., 1, 0] - m[..., 0, 1]], -1),
  ], axis=-2)
  diag = np.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
  best = np.take_along_axis(cands, np.argmax(diag, -1)[..., None, None], axis=-2)[..., 0, :]
  q = best / np.linalg.norm(best, axis=-1, keepdims=True)
  q = np.where(q[..., 3:4] < 0, -q, q)
  return q[..., [3, 0, 1, 2]] if order == "wxyz" else q


def poses_to_diffs(poses: np.ndarray) -> np.ndarray:
  """V-JEPA 2-AC actions `[..., T-1, A]` from pose states `[..., T, A]` (A = 6 or 7), float64
  math, returned in the input's float dtype: xyz difference, euler_xyz(R_{t+1} R_t^T), gripper
  difference."""
  poses = np.asarray(poses)
  p = poses.astype(np.float64)
  rot = euler_xyz_to_matrix(p[..., 3:6])
  relative = rot[..., 1:, :, :] @ np.swapaxes(rot[..., :-1, :, :], -1, -2)
  diffs = np.concatenate([p[..., 1:, :3] - p[..., :-1, :3], matrix_to_euler_xyz(relative),
                          p[..., 1:, 6:] - p[..., :-1, 6:]], axis=-1)
  return diffs.astype(poses.dtype if np.issubdtype(poses.dtype, np.floating) else np.float64)
