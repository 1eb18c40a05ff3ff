"""A spec's state and action layout in NumPy: raw features <-> model states, clip actions.

`assemble_states` turns a dataset's raw per-step features into the states the model sees
(`[n, A]` float32, see `specs`); `split_states` is its inverse, used by the writers;
`clip_actions` gives the `[T-1, A]` actions of a clip from the episode's states (or its stored
actions). The RLDS reader does the same inside its TensorFlow graph (`droid.py`).
"""
from collections.abc import Mapping

import numpy as np

from vjepa_jax import poses
from vjepa_jax.data import specs as specs_lib


def _select(arrays: Mapping[str, np.ndarray], key: specs_lib.KeyRef) -> np.ndarray:
  x = np.asarray(arrays[key.name])
  if x.ndim == 1:
    x = x[:, None]
  return x[:, slice(key.start, key.stop)] if key.sliced else x


def gripper_closedness(raw: np.ndarray, gripper_range) -> np.ndarray:
  """Raw gripper values -> closedness (0 open .. 1 closed), linear in `(open, closed)`."""
  open_, closed = gripper_range
  if (open_, closed) == (0.0, 1.0):
    return raw
  return (raw - open_) / (closed - open_)


def euler_to_orientation(euler: np.ndarray, fmt: str) -> np.ndarray:
  """Inverse of `poses.orientation_to_euler`."""
  if fmt == "euler_xyz":
    return euler
  mats = poses.euler_xyz_to_matrix(euler)
  if fmt in ("quat_xyzw", "quat_wxyz"):
    return poses.matrix_to_quaternion(mats, fmt[5:])
  return mats.reshape(-1, 9)


def assemble_states(spec: specs_lib.Spec, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
  """Raw features (name -> `[n]` or `[n, D]`) -> states `[n, A]` float32."""
  if not spec.is_pose:
    return np.concatenate([_select(arrays, k).astype(np.float32)
                           for _, k in spec.state_parts()], axis=1)
  parts = dict(spec.state_parts())
  position = _select(arrays, parts["position"]).astype(np.float64)
  euler = poses.orientation_to_euler(_select(arrays, parts["orientation"]), spec.orientation_format)
  out = [position, euler]
  if "gripper" in parts:
    raw = _select(arrays, parts["gripper"]).astype(np.float64)
    out.append(gripper_closedness(raw, spec.gripper_range))
  return np.concatenate(out, axis=1).astype(np.float32)


def split_states(spec: specs_lib.Spec, states: np.ndarray) -> dict[str, np.ndarray]:
  """States `[n, A]` -> raw features (name -> `[n, D]` float32) as the spec lays them out.

  Every key must be used whole or through explicit `[a:b]` slices that tile it; the last key of
  a vector layout may be unsliced and takes the remaining values.
  """
  states = np.asarray(states, np.float64)
  values = []  # (key, [n, w] values)
  if spec.is_pose:
    parts = dict(spec.state_parts())
    values.append((parts["position"], states[:, :3]))
    values.append((parts["orientation"],
                   euler_to_orientation(states[:, 3:6], spec.orientation_format)))
    if "gripper" in parts:
      open_, closed = spec.gripper_range
      values.append((parts["gripper"], open_ + states[:, 6:7] * (closed - open_)))
  else:
    col = 0
    parts = spec.state_parts()
    for i, (_, key) in enumerate(parts):
      width = key.width(None)
      if width is None:
        if i != len(parts) - 1:
          raise ValueError(f"state key {key} needs an explicit [a:b] slice to be written (only "
                           "the last key may take the remaining values)")
        width = states.shape[1] - col
      values.append((key, states[:, col:col + width]))
      col += width
    if col != states.shape[1]:
      raise ValueError(f"spec {spec.name!r} lays out {col} state values, the states have "
                       f"{states.shape[1]}")
  return _tile(values, len(states))


def _tile(values, n: int) -> dict[str, np.ndarray]:
  out = {}
  widths = {}
  for key, v in values:
    stop = key.stop if key.stop is not None else (key.start or 0) + v.shape[1]
    widths[key.name] = max(widths.get(key.name, 0), stop if key.sliced else v.shape[1])
  for name, width in widths.items():
    out[name] = np.full((n, width), np.nan, np.float64)
  for key, v in values:
    start = key.start or 0
    out[key.name][:, start:start + v.shape[1]] = v
  for name, arr in out.items():
    if np.isnan(arr).any():
      raise ValueError(f"the spec's slices leave parts of {name!r} unwritten")
  return {k: v.astype(np.float32) for k, v in out.items()}


def clip_actions(spec: specs_lib.Spec, states: np.ndarray, steps: np.ndarray,
                 stored: np.ndarray | None = None) -> np.ndarray:
  """Actions `[T-1, A]` float32 between the frames at raw `steps` `[T]` of one episode.

  Args:
    states: the episode's states `[n, A]`.
    steps: raw step indices of the clip's frames, increasing.
    stored: the episode's stored per-step actions `[n, A]` when the spec stores them.
  """
  if spec.stored_actions:
    if stored is None:
      raise ValueError(f"spec {spec.name!r} stores actions but none were given")
    if spec.aggregate == "last":
      return stored[steps[1:] - 1].astype(np.float32)
    csum = np.concatenate([np.zeros((1, stored.shape[1])), np.cumsum(stored, 0, np.float64)])
    return (csum[steps[1:]] - csum[steps[:-1]]).astype(np.float32)
  clip = states[steps]
  if spec.is_pose:
    return poses.poses_to_diffs(clip.astype(np.float64)).astype(np.float32)
  return (clip[1:] - clip[:-1]).astype(np.float32)


def stored_actions(spec: specs_lib.Spec, arrays: Mapping[str, np.ndarray]) -> np.ndarray | None:
  """The spec's stored per-step actions `[n, A']` float32, or None when computed from states."""
  if not spec.stored_actions:
    return None
  return np.concatenate([_select(arrays, k).astype(np.float32) for k in spec.action_keys()],
                        axis=1)
