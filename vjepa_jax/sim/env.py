"""A simulated Franka Panda with V-JEPA 2-AC states and actions (panda-gym on pybullet).

  sim = FrankaSim(SimConfig(task="reach"))
  frame, state = sim.reset(seed=0)          # uint8 [S, S, 3], float32 [7]
  goal = sim.goal_frame()                   # the scene rendered at the goal configuration
  info = sim.step(action)                   # action [7]: the state delta to move by
  info["is_success"], info["distance"]

State `[x, y, z, roll, pitch, yaw, gripper]`: the end-effector position in the robot base frame
(metres, as DROID's `cartesian_position`), its measured orientation as extrinsic-xyz Euler
angles (the gripper is held pointing down, so roll sits near +-pi and pitch, yaw near 0, up to
the controller's error) and the gripper closedness in [0, 1] (0 open, 1 closed; the fingers are
held closed in reach and push). An action is the V-JEPA 2-AC delta between consecutive states:
the controller moves the end effector by `action[:3]` (clipped to +-`max_step` per axis) and
the gripper by `action[6]`; rotation deltas are ignored because the orientation is fixed, as in
panda-gym's end-effector control. One control step holds the inverse-kinematics target for
`substeps` panda-gym steps (40 ms each), so the arm arrives within a few millimetres; the
recorded actions are always the differences of the observed states.

Success is the task's own test (`is_success`: distance below 5 cm between the end effector
(reach) or the object (push, pick-and-place) and the goal).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vjepa_jax.sim import render as render_lib

TASKS = {"reach": "PandaReachEnv", "push": "PandaPushEnv",
         "pick_and_place": "PandaPickAndPlaceEnv"}
FINGER_MAX = 0.08  # m: Panda finger opening at gripper = 0.
DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # quaternion (x, y, z, w): the gripper pointing down
OBJECT_SIZE = 0.04  # m: the cube of push and pick-and-place
BASE = np.array([-0.6, 0.0, 0.0])  # where panda-gym places the robot base (world frame)
# Where the end effector moves (world frame): panda-gym's goal region plus a margin.
WORKSPACE = (np.array([-0.2, -0.2, 0.01]), np.array([0.2, 0.2, 0.33]))
_INSTALL = "pip install -e '.[sim]'"


def require_sim():
  """Imports panda-gym, or fails naming the extra to install."""
  try:
    import panda_gym.envs  # noqa: F401  (registers nothing; the env classes are used directly)
  except ImportError as e:
    raise ImportError(f"the simulator needs panda-gym and pybullet: {_INSTALL} ({e})") from e
  return panda_gym.envs


@dataclasses.dataclass(frozen=True)
class SimConfig:
  """Simulator settings.

  Attributes:
    task: one of `TASKS`.
    image_size: side of the rendered square frames.
    camera: the exterior camera.
    max_steps: control steps per episode (panda-gym's limit is 50).
    substeps: panda-gym steps (40 ms) per control step.
    max_step: per-axis bound of the end-effector displacement per control step (m; panda-gym's).
    reach_start_distance: reach starts the arm at a random point of `WORKSPACE` at least this
      far from the goal (m); 0 keeps panda-gym's fixed start pose, from which the goal is ~16 cm
      away and random actions succeed in about a quarter of the episodes.
  """
  task: str = "reach"
  image_size: int = 128
  camera: render_lib.Camera = render_lib.Camera()
  max_steps: int = 50
  substeps: int = 5
  max_step: float = 0.05
  reach_start_distance: float = 0.15

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"unknown task {self.task!r}; expected one of {sorted(TASKS)}")
    if self.max_steps < 1 or self.substeps < 1 or self.max_step <= 0:
      raise ValueError(f"need max_steps >= 1, substeps >= 1, max_step > 0; got "
                       f"{self.max_steps}, {self.substeps}, {self.max_step}")

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["camera"] = self.camera.to_dict()
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "SimConfig":
    d = dict(d)
    d["camera"] = render_lib.Camera.from_dict(d["camera"])
    return cls(**d)


class FrankaSim:
  """One panda-gym scene driven with V-JEPA 2-AC actions (see the module docstring)."""

  def __init__(self, cfg: SimConfig = SimConfig()):
    envs = require_sim()
    self.cfg = cfg
    self.env = getattr(envs, TASKS[cfg.task])(render_mode="rgb_array", renderer="Tiny")
    self.robot = self.env.robot
    self.task = self.env.task
    self.client = self.env.sim.physics_client
    self.base = BASE
    self.blocked_gripper = bool(self.robot.block_gripper)
    self._body = self.env.sim._bodies_idx["panda"]
    limits = np.array([self.client.getJointInfo(self._body, int(j))[8:10]
                       for j in self.robot.joint_indices])
    self._ik_limits = {"lowerLimits": limits[:, 0].tolist(), "upperLimits": limits[:, 1].tolist(),
                       "jointRanges": (limits[:, 1] - limits[:, 0]).tolist(),
                       "restPoses": self.robot.neutral_joint_values.tolist()}
    self.steps = 0
    self.start_object: np.ndarray | None = None

  # -- Episode --------------------------------------------------------------------------------

  def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """New episode (goal and object drawn by panda-gym from `seed`); returns (frame, state)."""
    self.env.reset(seed=int(seed))
    if self.cfg.task == "reach" and self.cfg.reach_start_distance > 0:
      rng = np.random.default_rng([int(seed), 1])
      for _ in range(1000):
        start = rng.uniform(*WORKSPACE)
        if np.linalg.norm(start - self.goal) >= self.cfg.reach_start_distance:
          break
      else:
        raise ValueError(f"no start point of the workspace is {self.cfg.reach_start_distance} m "
                         f"from the goal {self.goal}; lower reach_start_distance")
      self.place(start, 0.0, None)
    self.steps = 0
    self.start_object = self.object_position()
    return self.observe()

  def observe(self) -> tuple[np.ndarray, np.ndarray]:
    return self.frame(), self.state()

  def frame(self) -> np.ndarray:
    """uint8 `[S, S, 3]` from the exterior camera."""
    return render_lib.render(self.client, self.cfg.camera, self.cfg.image_size)

  def state(self) -> np.ndarray:
    """float32 `[7]` (see the module docstring)."""
    import pybullet
    link = self._ee_link()
    euler = np.asarray(pybullet.getEulerFromQuaternion(link[1]))  # extrinsic xyz, like ours
    grip = 1.0 - np.clip(self.robot.get_fingers_width() / FINGER_MAX, 0.0, 1.0)
    return np.concatenate([self.ee_position() - self.base, euler, [grip]]).astype(np.float32)

  def joints(self) -> np.ndarray:
    """float32 `[7]` arm joint angles."""
    return np.array([self.robot.get_joint_angle(i) for i in range(7)], np.float32)

  def _ee_link(self):
    # Forward kinematics of the current joints (not the link pose cached at the last step).
    return self.client.getLinkState(self._body, self.robot.ee_link, computeForwardKinematics=True)

  def ee_position(self) -> np.ndarray:
    """End-effector position `[3]` in the world frame."""
    return np.asarray(self._ee_link()[0], np.float64)  # the point panda-gym's tasks measure

  def object_position(self) -> np.ndarray | None:
    """The cube's position `[3]` (world frame); None in reach."""
    if self.cfg.task == "reach":
      return None
    return np.asarray(self.env.sim.get_base_position("object"), np.float64)

  @property
  def goal(self) -> np.ndarray:
    """The task goal `[3]` (world frame): end-effector target (reach) or object target."""
    return np.asarray(self.task.get_goal(), np.float64)

  def achieved(self) -> np.ndarray:
    """What the task compares with its goal: the end effector (reach) or the cube `[3]`."""
    return self.ee_position() if self.cfg.task == "reach" else self.object_position()

  def distance(self) -> float:
    """Distance between the achieved goal (end effector or object) and the goal (m)."""
    return float(np.linalg.norm(self.achieved() - self.goal))

  def info(self) -> dict:
    """The task's own success test on the current scene, and the distance to the goal."""
    return {"is_success": bool(self.task.is_success(self.achieved(), self.goal)),
            "distance": self.distance()}

  def step(self, action: np.ndarray) -> dict:
    """Applies one V-JEPA 2-AC action `[7]`; returns `info()` (success, distance)."""
    action = np.asarray(action, np.float64)
    if action.shape != (7,) or not np.all(np.isfinite(action)):
      raise ValueError(f"action must be 7 finite numbers (dx, dy, dz, droll, dpitch, dyaw, "
                       f"dgripper), got {action!r}")
    target = self.ee_position() + np.clip(action[:3], -self.cfg.max_step, self.cfg.max_step)
    target[2] = max(target[2], 0.0)  # panda-gym's floor for the end effector
    if self.blocked_gripper:
      width = 0.0
    else:
      closed = 1.0 - self.robot.get_fingers_width() / FINGER_MAX
      width = (1.0 - np.clip(closed + action[6], 0.0, 1.0)) * FINGER_MAX
    for _ in range(self.cfg.substeps):
      arm = self.inverse_kinematics(target)
      self.robot.control_joints(np.concatenate([arm, [width / 2, width / 2]]))
      self.env.sim.step()
    self.steps += 1
    return self.info()

  # -- Goal images ----------------------------------------------------------------------------

  def goal_configuration(self) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(end-effector position, finger width, object position) of the goal scene, world frame.

    reach: the end effector at the goal. push: the cube at the goal and the gripper touching it
    from the side it was pushed from. pick-and-place: the cube at the goal, held in the closed
    gripper.
    """
    goal = self.goal
    if self.cfg.task == "reach":
      return goal, 0.0, None
    if self.cfg.task == "push":
      start = self.start_object if self.start_object is not None else self.object_position()
      direction = goal[:2] - start[:2]
      norm = np.linalg.norm(direction)
      direction = direction / norm if norm > 1e-6 else np.array([1.0, 0.0])
      ee = np.array([*(goal[:2] - direction * (OBJECT_SIZE / 2 + 0.015)), OBJECT_SIZE / 2])
      return ee, 0.0, goal
    return goal, OBJECT_SIZE, goal

  def inverse_kinematics(self, position: np.ndarray) -> np.ndarray:
    """Arm joint angles `[7]` putting the end effector at `position` pointing down.

    The null space is pulled towards the neutral pose, so the arm's posture is (nearly) a
    function of the end-effector position: a goal image shows the arm as it looks when the
    controller brings it there.
    """
    q = self.client.calculateInverseKinematics(
        self._body, self.robot.ee_link, [float(v) for v in position], DOWN.tolist(),
        maxNumIterations=100, residualThreshold=1e-5, **self._ik_limits)
    return np.asarray(q[:7])

  def place(self, ee: np.ndarray, width: float, obj: np.ndarray | None) -> None:
    """Teleports the arm (inverse kinematics from the neutral pose), the fingers and the cube."""
    self.robot.set_joint_neutral()
    for _ in range(8):
      arm = self.inverse_kinematics(np.asarray(ee))
      self.robot.set_joint_angles(np.concatenate([arm, [width / 2, width / 2]]))
    if obj is not None:
      self.env.sim.set_base_pose("object", np.asarray(obj), np.array([0.0, 0.0, 0.0, 1.0]))

  def goal_frame(self) -> np.ndarray:
    """uint8 `[S, S, 3]`: the scene rendered at the goal configuration, then restored."""
    saved = self.env.save_state()
    try:
      self.place(*self.goal_configuration())
      return self.frame()
    finally:
      self.env.restore_state(saved)
      self.env.remove_state(saved)

  def close(self) -> None:
    self.env.close()

  def __enter__(self) -> "FrankaSim":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
