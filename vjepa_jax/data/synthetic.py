"""Synthetic DROID: writes a small dataset in the exact DROID RLDS/TFDS on-disk format.

  python -m vjepa_jax.data.synthetic --out /tmp/droid_synth/droid/1.0.0 --episodes 20

The output directory is a TFDS version directory (`dataset_info.json`, `features.json`,
`<name>-train.tfrecord-NNNNN-of-MMMMM`) that `tfds.builder_from_directory` opens with DROID's
feature spec, so `droid.make_clip_dataset` reads it like the real data.

The scene is a textured table seen by two fixed exterior cameras and a wrist camera. The end
effector is a disk drawn at its projected position (its size follows the distance to the camera,
its colour goes from green to red as the gripper closes, a dark tick shows the tool x axis, a
shadow on the table shrinks as it descends); the wrist view slides and turns with the pose and
shows two fingers closing with the gripper. Episodes start with a few idle steps, then move
through random waypoints with DROID's velocity-command semantics (1 = 0.075 m or 0.15 rad per
step), so frame changes follow the V-JEPA 2-AC actions computed from the observed states.
"""
import argparse
from collections.abc import Sequence
import time

import numpy as np
import tensorflow as tf

from vjepa_jax import poses
from vjepa_jax.data import writers

CAMERAS = ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
MAX_LINEAR = 0.075  # m per step at velocity 1 (DROID).
MAX_ANGULAR = 0.15  # rad per step at velocity 1 (DROID).
MAX_GRIPPER = 0.25  # gripper units per step at velocity 1 (DROID).
EE_RADIUS = 0.035  # m
_TEX_RES = 0.003  # m per texel of the table raster.
_TEX_X = (-0.2, 1.2)  # table raster extent in the base frame (m)
_TEX_Y = (-0.8, 0.8)
_TASKS = (("reach", "move the gripper to the red mark"),
          ("pick_place", "put the block on the mat"),
          ("wave", "move the gripper left and right"))


# -- Rotations (numpy float64; extrinsic xyz Euler angles as in DROID) ------------------------

def _rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
  angle = np.linalg.norm(v)
  if angle < 1e-12:
    return np.eye(3)
  k = v / angle
  kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
  angle = np.arccos(np.clip((np.trace(m) - 1) / 2, -1.0, 1.0))
  if angle < 1e-9:
    return np.zeros(3)
  # Waypoints are never half a turn apart, so sin(angle) stays away from 0.
  axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
  return axis / (2 * max(np.sin(angle), 1e-6)) * angle


# -- Trajectories -------------------------------------------------------------------------------

def _trajectory(rng: np.random.Generator, num_steps: int) -> dict:
  """Observed and commanded states of one episode (float64, before float32 rounding)."""
  idle = int(rng.integers(2, max(3, num_steps // 6)))
  xyz = np.array([rng.uniform(0.40, 0.60), rng.uniform(-0.15, 0.15), rng.uniform(0.20, 0.35)])
  rot = poses.euler_xyz_to_matrix([np.pi - rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1),
                                   rng.uniform(-0.4, 0.4)])
  grip = 0.0
  waypoints = []
  for i in range(int(rng.integers(3, 6))):
    waypoints.append((np.array([rng.uniform(0.35, 0.70), rng.uniform(-0.25, 0.25),
                                rng.uniform(0.04, 0.40)]),
                      poses.euler_xyz_to_matrix([np.pi + rng.uniform(-0.2, 0.2),
                                                 rng.uniform(-0.2, 0.2), rng.uniform(-0.9, 0.9)]),
                      float(i % 2)))
  speed = rng.uniform(0.25, 0.5)
  keys = ("cartesian_position", "gripper_position", "cmd_cartesian_position",
          "cmd_cartesian_velocity", "cmd_gripper_position", "cmd_gripper_velocity")
  out = {k: [] for k in keys}
  target = 0
  for t in range(num_steps):
    out["cartesian_position"].append(np.concatenate([xyz, poses.matrix_to_euler_xyz(rot)]))
    out["gripper_position"].append([grip])
    if t < idle or target >= len(waypoints):
      lin, rotvec, cmd_grip = np.zeros(3), np.zeros(3), grip
    else:
      goal_xyz, goal_rot, cmd_grip = waypoints[target]
      lin = goal_xyz - xyz
      rotvec = _matrix_to_rotvec(goal_rot @ rot.T)
      lin = lin * min(1.0, speed * MAX_LINEAR / max(np.linalg.norm(lin), 1e-12))
      rotvec = rotvec * min(1.0, speed * MAX_ANGULAR / max(np.linalg.norm(rotvec), 1e-12))
      if (np.linalg.norm(goal_xyz - xyz) < 0.01 and np.linalg.norm(
          _matrix_to_rotvec(goal_rot @ rot.T)) < 0.05 and abs(cmd_grip - grip) < 1e-6):
        target += 1
    step_rot = _rotvec_to_matrix(rotvec)
    velocity = np.concatenate([lin / MAX_LINEAR, poses.matrix_to_euler_xyz(step_rot) / MAX_ANGULAR])
    xyz = xyz + lin
    rot = step_rot @ rot
    out["cmd_cartesian_position"].append(np.concatenate([xyz, poses.matrix_to_euler_xyz(rot)]))
    out["cmd_cartesian_velocity"].append(velocity)
    out["cmd_gripper_position"].append([cmd_grip])
    out["cmd_gripper_velocity"].append([np.clip((cmd_grip - grip) / MAX_GRIPPER, -1.0, 1.0)])
    grip = float(grip + np.clip(cmd_grip - grip, -0.15, 0.15))
  traj = {k: np.asarray(v, np.float64) for k, v in out.items()}
  traj["idle_steps"] = idle
  return traj


def _joints(cartesian: np.ndarray, mixing: np.ndarray) -> np.ndarray:
  """A smooth made-up map pose -> 7 joint angles (not Franka kinematics)."""
  feats = np.concatenate([cartesian[:, :3], np.sin(cartesian[:, 3:]), np.cos(cartesian[:, 3:])],
                         axis=1)
  return 2.0 * np.tanh(feats @ mixing)


# -- Rendering ----------------------------------------------------------------------------------

def table_texture(rng: np.random.Generator) -> np.ndarray:
  """uint8 RGB raster [X, Y, 3] of the table top over _TEX_X x _TEX_Y."""
  xs = np.arange(*_TEX_X, _TEX_RES)[:, None]
  ys = np.arange(*_TEX_Y, _TEX_RES)[None, :]
  checker = ((np.floor(xs / 0.08) + np.floor(ys / 0.08)) % 2) * 0.06
  grain = 0.04 * np.sin(ys * 90.0 + 3.0 * np.sin(xs * 7.0))
  tex = np.stack(np.broadcast_arrays(0.55 + checker + grain, 0.42 + checker + grain,
                                     0.30 + 0.5 * checker + grain), axis=-1)
  on_mat = (xs > 0.35) & (xs < 0.70) & (np.abs(ys) < 0.22)
  tex = np.where(on_mat[..., None], np.array([0.25, 0.35, 0.45]) + 0.5 * grain[..., None], tex)
  ring = np.abs(np.hypot(xs - 0.45, ys - rng.uniform(-0.2, 0.2)) - 0.06) < 0.008
  tex = np.where(ring[..., None], np.array([0.9, 0.8, 0.1]), tex)
  tex += rng.normal(0, 0.015, tex.shape)
  return np.clip(tex * 255 + 0.5, 0, 255).astype(np.uint8)


def _sample_texture(tex: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  i = np.clip(((x - _TEX_X[0]) * (1 / _TEX_RES)).astype(np.int32), 0, tex.shape[0] - 1)
  j = np.clip(((y - _TEX_Y[0]) * (1 / _TEX_RES)).astype(np.int32), 0, tex.shape[1] - 1)
  return tex[i, j]


def _look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Camera-to-base rotation whose columns are the camera x (right), y (down), z (forward)."""
  z = target - position
  z /= np.linalg.norm(z)
  x = np.cross(z, [0.0, 0.0, 1.0])
  x /= np.linalg.norm(x)
  return np.stack([x, np.cross(z, x), z], axis=1)


class _Camera:
  """Pinhole exterior camera with a pre-rendered background."""

  def __init__(self, position, target, hw, tex):
    self.h, self.w = hw
    self.f = 0.8 * self.w
    self.pos = np.asarray(position, np.float64)
    self.rot = _look_at(self.pos, np.asarray(target, np.float64))
    v, u = np.mgrid[0:self.h, 0:self.w].astype(np.float64)
    rays = np.stack([(u - self.w / 2) / self.f, (v - self.h / 2) / self.f, np.ones_like(u)], -1)
    rays = rays @ self.rot.T
    hit = rays[..., 2] < -1e-6
    t = np.where(hit, -self.pos[2] / np.where(hit, rays[..., 2], -1.0), 0.0)
    table = _sample_texture(tex, self.pos[0] + t * rays[..., 0], self.pos[1] + t * rays[..., 1])
    wall = (0.75 - 0.2 * v / self.h)[..., None] * np.array([204.0, 209.0, 217.0])
    self.background = np.where(hit[..., None], table, wall).astype(np.uint8)
    self.u, self.v = u, v

  def project(self, p: np.ndarray) -> tuple[float, float, float]:
    pc = self.rot.T @ (p - self.pos)
    return self.f * pc[0] / pc[2] + self.w / 2, self.f * pc[1] / pc[2] + self.h / 2, pc[2]

  def render(self, xyz: np.ndarray, rot: np.ndarray, grip: float) -> np.ndarray:
    img = self.background.copy()
    su, sv, sdepth = self.project(np.array([xyz[0], xyz[1], 0.0]))
    shadow_r = self.f * EE_RADIUS / sdepth * (1.0 - 0.5 * min(xyz[2], 0.5))
    self._disk(img, su, sv, shadow_r, None, 0.35 + 0.9 * min(xyz[2], 0.5))
    u, v, depth = self.project(xyz)
    radius = self.f * EE_RADIUS / depth
    colour = (1 - grip) * np.array([38, 204, 64]) + grip * np.array([230, 38, 26])
    self._disk(img, u, v, radius, colour.astype(np.uint8), 1.0)
    tu, tv, _ = self.project(xyz + rot[:, 0] * 0.05)
    for s in np.linspace(0.0, 1.0, 24):
      pu, pv = int(round(u + s * (tu - u))), int(round(v + s * (tv - v)))
      img[max(pv - 1, 0):max(pv + 2, 0), max(pu - 1, 0):max(pu + 2, 0)] = 20
    return img

  def _disk(self, img, u, v, r, colour, shade):
    top, bottom = int(max(v - r - 1, 0)), int(min(v + r + 2, self.h))
    left, right = int(max(u - r - 1, 0)), int(min(u + r + 2, self.w))
    if top >= bottom or left >= right:
      return
    du = self.u[top:bottom, left:right] - u
    dv = self.v[top:bottom, left:right] - v
    inside = (du * du + dv * dv) <= r * r
    patch = img[top:bottom, left:right]
    if colour is None:
      patch[inside] = (patch[inside] * shade).astype(np.uint8)
    else:
      patch[inside] = colour


def _render_wrist(tex, hw, xyz, rot, grip, grid):
  """Wrist view: the table under the hand, turned with the tool, and two fingers.

  The table is sampled on a half-resolution grid and doubled, which is all this view needs.
  """
  h, w = hw
  v, u = grid
  scale = max(xyz[2], 0.02) / (0.8 * w)
  dv, du = (v - h / 2) * scale, (u - w / 2) * scale
  c, s = rot[0, 0], rot[1, 0]  # Tool x axis in the table plane.
  low = _sample_texture(tex, xyz[0] + c * dv - s * du, xyz[1] + s * dv + c * du)
  img = np.repeat(np.repeat(low, 2, axis=0), 2, axis=1)[:h, :w]
  gap = (130 - 100 * grip) * w / 320
  finger_w = int(24 * w / 320)
  top = int(0.65 * h)
  for centre in (w / 2 - gap / 2 - finger_w / 2, w / 2 + gap / 2 + finger_w / 2):
    a, b = int(max(centre - finger_w / 2, 0)), int(min(centre + finger_w / 2, w))
    img[top:, a:b] = 115
  return img


def _encode(frames: np.ndarray, quality: int) -> list[bytes]:
  return [tf.io.encode_jpeg(f, quality=quality).numpy() for f in frames]


def make_episode(rng: np.random.Generator, index: int, num_steps: int,
                 image_hw: tuple[int, int] = (180, 320), jpeg_quality: int = 90,
                 texture: np.ndarray | None = None, encode: bool = True) -> dict:
  """One rendered episode as the flat dict `serialize_episode` takes (states float32-rounded).

  `texture` (from `table_texture`) can be shared between episodes to save time. With
  `encode=False` the dict holds the uint8 frames (`"frames"`) instead of JPEG bytes (`"images"`),
  for `writer_episode`.
  """
  traj = _trajectory(rng, num_steps)
  r32 = lambda x: x.astype(np.float32).astype(np.float64)
  cart, grip = r32(traj["cartesian_position"]), r32(traj["gripper_position"])
  cmd_cart, cmd_grip = r32(traj["cmd_cartesian_position"]), r32(traj["cmd_gripper_position"])
  mixing = np.random.default_rng(7).normal(0, 0.6, (9, 7))
  joints = r32(_joints(cart, mixing))
  cmd_joints = r32(_joints(cmd_cart, mixing))
  tex = table_texture(rng) if texture is None else texture
  side = 1.0 if rng.random() < 0.5 else -1.0
  look = np.array([0.52, 0.0, 0.18])
  cams = [_Camera([rng.uniform(0.0, 0.15), side * rng.uniform(0.5, 0.7), rng.uniform(0.6, 0.75)],
                  look, image_hw, tex),
          _Camera([rng.uniform(1.0, 1.15), -side * rng.uniform(0.2, 0.4), rng.uniform(0.65, 0.8)],
                  look, image_hw, tex)]
  grid = np.mgrid[0:image_hw[0]:2, 0:image_hw[1]:2].astype(np.float32)
  frames = {c: np.empty((num_steps, *image_hw, 3), np.uint8) for c in CAMERAS}
  for t in range(num_steps):
    rot = poses.euler_xyz_to_matrix(cart[t, 3:])
    frames[CAMERAS[0]][t] = cams[0].render(cart[t, :3], rot, grip[t, 0])
    frames[CAMERAS[1]][t] = cams[1].render(cart[t, :3], rot, grip[t, 0])
    frames[CAMERAS[2]][t] = _render_wrist(tex, image_hw, cart[t, :3], rot, grip[t, 0], grid)
  task, instruction = _TASKS[index % len(_TASKS)]
  success = bool(rng.random() < 0.8)
  lab = ("SYNTH", "TOYLAB")[index % 2]
  root = (f"gs://synthetic/droid/{lab}/{'success' if success else 'failure'}/2024-01-"
          f"{1 + index % 28:02d}/episode_{index:05d}")
  return {
      "file_path": root + "/trajectory.h5",
      "recording_folderpath": root + "/recordings/MP4",
      "language_instruction": instruction if task != "wave" or index % 4 else "",
      "success": success,
      "idle_steps": traj["idle_steps"],
      "task": task,
      "observation/cartesian_position": cart,
      "observation/gripper_position": grip,
      "observation/joint_position": joints,
      "action_dict/cartesian_position": cmd_cart,
      "action_dict/cartesian_velocity": r32(traj["cmd_cartesian_velocity"]),
      "action_dict/gripper_position": cmd_grip,
      "action_dict/gripper_velocity": r32(traj["cmd_gripper_velocity"]),
      "action_dict/joint_position": cmd_joints,
      "action_dict/joint_velocity": r32(np.clip((cmd_joints - joints) / 0.2, -1, 1)),
      **({"images": {c: _encode(frames[c], jpeg_quality) for c in CAMERAS}} if encode
         else {"frames": frames}),
  }


def writer_episode(ep: dict, cameras: dict[str, str] | None = None) -> dict:
  """A `make_episode(..., encode=False)` dict as a `writers` episode: states `[T, 7]` (pose +
  gripper), the frames of `cameras` ({DROID camera: name in the output}, default all, same
  names), language, success and the file path as episode id."""
  cameras = cameras or {c: c for c in CAMERAS}
  return {"frames": {out: ep["frames"][cam] for cam, out in cameras.items()},
          "states": np.concatenate([ep["observation/cartesian_position"],
                                    ep["observation/gripper_position"]], axis=1),
          "language": ep["language_instruction"], "success": ep["success"],
          "episode_id": ep["file_path"]}


# -- TFDS files ---------------------------------------------------------------------------------

_TENSORS = (  # (key under steps/, size, description) of the float64 [T, size] features
    ("action", 7, "Robot action, consists of [6x joint velocities, 1x gripper position]."),
    ("action_dict/cartesian_position", 6, "Commanded Cartesian position"),
    ("action_dict/cartesian_velocity", 6, "Commanded Cartesian velocity"),
    ("action_dict/gripper_position", 1, "Commanded gripper position"),
    ("action_dict/gripper_velocity", 1, "Commanded gripper velocity"),
    ("action_dict/joint_position", 7, "Commanded joint position"),
    ("action_dict/joint_velocity", 7, "Commanded joint velocity"),
    ("observation/cartesian_position", 6, "Robot Cartesian state"),
    ("observation/gripper_position", 1, "Gripper position state"),
    ("observation/joint_position", 7, "Joint position state"),
)
_SCALARS = (
    ("discount", "float32", "Discount if provided, default to 1."),
    ("is_first", "bool", "True on first step of the episode."),
    ("is_last", "bool", "True on last step of the episode."),
    ("is_terminal", "bool",
     "True on last step of the episode if it is a terminal step, True for demos."),
    ("reward", "float32", "Reward if provided, 1 on final step for demos."),
)
_TEXTS = ("language_instruction", "language_instruction_2", "language_instruction_3")
_IMAGE_DESCRIPTIONS = {"exterior_image_1_left": "Exterior camera 1 left viewpoint",
                       "exterior_image_2_left": "Exterior camera 2 left viewpoint",
                       "wrist_image_left": "Wrist camera RGB left viewpoint"}


def features_json(image_hw: tuple[int, int] = (180, 320),
                  cameras: Sequence[str] = CAMERAS) -> dict:
  """The DROID FeaturesDict as TFDS writes it to features.json (with the given cameras)."""
  step = {}
  for key, size, desc in _TENSORS:
    step[key] = writers.tensor_feature([size], "float64", desc)
  for key, dtype, desc in _SCALARS:
    step[key] = writers.tensor_feature([], dtype, desc)
  for key in _TEXTS:
    step[key] = writers.text_feature("Language Instruction.")
  for cam in cameras:
    step["observation/" + cam] = writers.image_feature(image_hw, _IMAGE_DESCRIPTIONS.get(cam, cam))
  return writers.features_dict({
      "episode_metadata": {
          "file_path": writers.text_feature("Path to the original data file."),
          "recording_folderpath": writers.text_feature("Path to the folder of recordings.")},
      "steps": writers.steps_feature(step)})


def dataset_info_json(name: str, version: str, shard_lengths: Sequence[int],
                      num_bytes: int) -> dict:
  return writers.dataset_info_json(
      name, version, shard_lengths, num_bytes,
      "Synthetic DROID-format dataset written by vjepa_jax.data.synthetic.")


def serialize_episode(ep: dict) -> bytes:
  """One episode dict (as `make_episode` returns) -> serialized tf.train.Example."""
  n = len(ep["observation/cartesian_position"])
  floats = lambda x: tf.train.Feature(float_list=tf.train.FloatList(
      value=np.asarray(x, np.float32).reshape(-1)))
  ints = lambda x: tf.train.Feature(int64_list=tf.train.Int64List(value=list(x)))
  strings = lambda x: tf.train.Feature(bytes_list=tf.train.BytesList(value=list(x)))
  feats = {}
  for key, _, _ in _TENSORS:
    if key == "action":
      value = np.concatenate([ep["action_dict/cartesian_position"],
                              ep["action_dict/gripper_position"]], axis=1)
    else:
      value = ep[key]
    feats["steps/" + key] = floats(value)
  last = [0] * (n - 1) + [1]
  feats["steps/discount"] = floats(np.ones(n))
  feats["steps/reward"] = floats(np.array(last) * float(ep["success"]))
  feats["steps/is_first"] = ints([1] + [0] * (n - 1))
  feats["steps/is_last"] = ints(last)
  feats["steps/is_terminal"] = ints(last)
  for key in _TEXTS:
    feats["steps/" + key] = strings([ep["language_instruction"].encode()] * n)
  for cam in ep["images"]:
    feats["steps/observation/" + cam] = strings(ep["images"][cam])
  feats["episode_metadata/file_path"] = strings([ep["file_path"].encode()])
  feats["episode_metadata/recording_folderpath"] = strings([ep["recording_folderpath"].encode()])
  example = tf.train.Example(features=tf.train.Features(feature=feats))
  return example.SerializeToString()


def write_dataset(out_dir: str, episodes: Sequence[dict], num_shards: int = 1,
                  name: str = "r2d2_faceblur", version: str = "1.0.0",
                  image_hw: tuple[int, int] = (180, 320)) -> list[str]:
  """Writes `episodes` round-robin into `num_shards` TFRecord shards plus the TFDS json files.

  Every episode holds the same cameras (`ep["images"]` keys); features.json lists those.
  Returns the shard paths.
  """
  cameras = list(episodes[0]["images"]) if episodes else CAMERAS
  return writers.write_tfrecords(out_dir, [serialize_episode(ep) for ep in episodes],
                                 features_json(image_hw, cameras), name, version, num_shards)


def generate(out_dir: str, episodes: int = 20, steps: tuple[int, int] = (40, 90),
             shards: int = 2, seed: int = 0, image_hw: tuple[int, int] = (180, 320),
             name: str = "r2d2_faceblur", version: str = "1.0.0") -> list[dict]:
  """Renders and writes a dataset; returns the episodes (states, metadata and JPEG bytes)."""
  rng = np.random.default_rng(seed)
  texture = table_texture(rng)
  eps = [make_episode(rng, i, int(rng.integers(steps[0], steps[1] + 1)), image_hw,
                      texture=texture) for i in range(episodes)]
  write_dataset(out_dir, eps, num_shards=min(shards, episodes), name=name, version=version,
                image_hw=image_hw)
  return eps


def _parse_hw(text: str) -> tuple[int, int]:
  parts = text.lower().replace("x", " ").split()
  if len(parts) == 1:
    return int(parts[0]), int(parts[0])
  return int(parts[0]), int(parts[1])


# Builder names the RLDS presets' datasets carry (the bridge preset also matches on it).
_BUILDER_NAMES = {"bridge": "bridge", "fractal": "fractal20220817_data"}
FORMATS = ("droid", "rlds", "lerobot")


def generate_with(out_dir: str, fmt: str = "droid", spec: str = "", episodes: int = 20,
                  steps: tuple[int, int] = (40, 90), shards: int = 2, seed: int = 0,
                  image_hw: tuple[int, int] = (180, 320), codec: str = "h264",
                  lerobot_version: str = "v3.0", fps: int = 15) -> dict:
  """Renders the scene and writes it as DROID RLDS (`fmt="droid"`, as `generate`), as RLDS laid
  out by another spec (`"rlds"`, spec "bridge", "fractal" or a spec dict/file), or as a LeRobot
  dataset (`"lerobot"`, AV1 or H.264). Returns the writer's summary."""
  from vjepa_jax.data import specs as specs_lib
  if fmt == "droid":
    eps = generate(out_dir, episodes, steps, shards, seed, image_hw)
    return {"path": out_dir, "episodes": len(eps),
            "steps": sum(len(e["observation/cartesian_position"]) for e in eps)}
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
  rng = np.random.default_rng(seed)
  texture = table_texture(rng)
  raw = [make_episode(rng, i, int(rng.integers(steps[0], steps[1] + 1)), image_hw,
                      texture=texture, encode=False) for i in range(episodes)]
  if fmt == "rlds":
    layout = specs_lib.load(spec or "bridge")
    if layout.format != "rlds":
      raise ValueError(f"--spec {layout.name} is a {layout.format} spec; --format rlds needs an "
                       "rlds one")
    names = list(layout.cameras) or ["exterior_image_1_left"]
    cams = dict(zip(CAMERAS, names))
    eps = [writer_episode(e, cams) for e in raw]
    return writers.write_rlds(out_dir, eps, layout, name=_BUILDER_NAMES.get(layout.name, ""),
                              num_shards=min(shards, episodes))
  eps = [writer_episode(e) for e in raw]
  return writers.write_lerobot(out_dir, eps, spec or "lerobot_pose", fps=fps, codec=codec,
                               version=lerobot_version, robot_type="synthetic_franka")


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True,
                      help="output directory (TFDS version directory or LeRobot root)")
  parser.add_argument("--format", default="droid", choices=FORMATS,
                      help="droid: DROID RLDS; rlds: RLDS laid out by --spec; lerobot: LeRobot")
  parser.add_argument("--spec", default="",
                      help="--format rlds: bridge (default), fractal or a spec .py; "
                           "--format lerobot: lerobot_pose (default)")
  parser.add_argument("--codec", default="h264", choices=("h264", "av1"), help="LeRobot video")
  parser.add_argument("--lerobot-version", default="v3.0", choices=("v3.0", "v2.1"))
  parser.add_argument("--fps", type=int, default=15, help="LeRobot frame rate")
  parser.add_argument("--episodes", type=int, default=20)
  parser.add_argument("--steps", type=int, nargs=2, default=(40, 90), metavar=("MIN", "MAX"),
                      help="episode length range (inclusive)")
  parser.add_argument("--shards", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--image-size", default="180x320", help="HxW (DROID RLDS: 180x320)")
  parser.add_argument("--name", default="r2d2_faceblur", help="builder name in dataset_info")
  parser.add_argument("--version", default="1.0.0", help="version in dataset_info")
  args = parser.parse_args(argv)
  start = time.time()
  if args.format == "droid":
    eps = generate(args.out, args.episodes, tuple(args.steps), args.shards, args.seed,
                   _parse_hw(args.image_size), args.name, args.version)
    steps = sum(len(e["observation/cartesian_position"]) for e in eps)
    print(f"wrote {len(eps)} episodes ({steps} steps) in {min(args.shards, len(eps))} shards to "
          f"{args.out} in {time.time() - start:.1f} s")
    return
  summary = generate_with(args.out, args.format, args.spec, args.episodes, tuple(args.steps),
                          args.shards, args.seed, _parse_hw(args.image_size), args.codec,
                          args.lerobot_version, args.fps)
  print(f"wrote {summary} in {time.time() - start:.1f} s")


if __name__ == "__main__":
  main()
