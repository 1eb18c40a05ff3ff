"""Scripted experts for the simulated tasks, with exploration noise and random motions.

  expert = ScriptedExpert(sim, rng, noise=0.3, random_motion=0.1, explore=True)
  expert.reset()
  action = expert.act()                    # [7] V-JEPA 2-AC action for sim.step

Each task is a waypoint policy on the true scene state: reach moves to the goal; push comes
down behind the cube and pushes it along the line to the goal; pick-and-place opens, comes down
over the cube, closes, and carries it to the goal. The step towards the waypoint is scaled by a
speed drawn per segment. For data collection:

- `noise`: Gaussian noise on each step, as a fraction of `max_step`;
- `random_motion`: probability per step of starting a random motion (a few steps towards a
  random point of the workspace, gripper commands random too), so the data covers actions that
  do not lead to the goal;
- `explore` (reach): once the goal is reached, keep moving to new random targets, so every step
  of an episode shows motion.

`noise=0, random_motion=0, explore=False` is the oracle that bounds the planners from above.
"""
from __future__ import annotations

import numpy as np

from vjepa_jax.sim import env as env_lib


class ScriptedExpert:
  """Waypoint policy of one task (see the module docstring)."""

  def __init__(self, sim: env_lib.FrankaSim, rng: np.random.Generator, noise: float = 0.0,
               random_motion: float = 0.0, explore: bool = False,
               speed: tuple[float, float] = (1.0, 1.0)):
    if noise < 0 or not 0 <= random_motion <= 1 or not 0 < speed[0] <= speed[1]:
      raise ValueError(f"need noise >= 0, random_motion in [0, 1], 0 < speed[0] <= speed[1]; "
                       f"got {noise}, {random_motion}, {speed}")
    self.sim, self.rng = sim, rng
    self.noise, self.random_motion, self.explore, self.speed_range = (
        noise, random_motion, explore, speed)
    self.reset()

  def reset(self) -> None:
    """Call after `sim.reset`."""
    self.target = self.sim.goal.copy()
    self.speed = self._draw_speed()
    self.random_steps = 0
    self.random_target = None
    self.random_grip = 0.0
    self.grasped = False

  def _draw_speed(self) -> float:
    return float(self.rng.uniform(*self.speed_range))

  def _towards(self, point: np.ndarray, speed: float) -> np.ndarray:
    """Displacement `[3]` towards `point`, at most `speed * max_step` per axis."""
    delta = np.asarray(point) - self.sim.ee_position()
    bound = speed * self.sim.cfg.max_step
    scale = max(1.0, np.max(np.abs(delta)) / bound)
    return delta / scale

  def act(self) -> np.ndarray:
    """The next action `[7]` (rotation deltas 0)."""
    if self.random_steps == 0 and self.rng.random() < self.random_motion:
      self.random_steps = int(self.rng.integers(2, 7))
      self.random_target = self.rng.uniform(*env_lib.WORKSPACE)
      self.random_grip = float(self.rng.uniform(-0.5, 0.5))
      self.speed = self._draw_speed()
    if self.random_steps > 0:
      self.random_steps -= 1
      xyz, grip = self._towards(self.random_target, self.speed), self.random_grip
      if self.random_steps == 0:
        self.speed = self._draw_speed()
    else:
      xyz, grip = getattr(self, "_" + self.sim.cfg.task)()
    xyz = xyz + self.rng.normal(0.0, self.noise * self.sim.cfg.max_step, 3)
    bound = self.sim.cfg.max_step
    action = np.zeros(7)
    action[:3] = np.clip(xyz, -bound, bound)
    action[6] = 0.0 if self.sim.blocked_gripper else grip
    return action

  # -- Tasks (each returns (xyz displacement, gripper delta)) ---------------------------------

  def _reach(self):
    ee = self.sim.ee_position()
    if self.explore and np.linalg.norm(self.target - ee) < 0.02:
      self.target = self.rng.uniform(*env_lib.WORKSPACE)
      self.speed = self._draw_speed()
    return self._towards(self.target, self.speed), 0.0

  def _push(self):
    ee, obj, goal = self.sim.ee_position(), self.sim.object_position(), self.sim.goal
    direction = goal[:2] - obj[:2]
    dist = np.linalg.norm(direction)
    if dist < 1e-3:
      return np.zeros(3), 0.0
    direction /= dist
    behind = np.array([*(obj[:2] - direction * (env_lib.OBJECT_SIZE / 2 + 0.03)),
                       env_lib.OBJECT_SIZE / 2])
    # Distance of the gripper from the push line behind the cube, and how far along it.
    rel = ee[:2] - obj[:2]
    along = rel @ direction
    across = abs(rel[0] * direction[1] - rel[1] * direction[0])
    lined_up = along < -0.01 and across < 0.015 and ee[2] < 0.04
    if lined_up:
      ahead = np.array([*(obj[:2] + direction * 0.05), env_lib.OBJECT_SIZE / 2])
      return self._towards(ahead, min(self.speed, 0.6)), 0.0
    if np.linalg.norm(ee[:2] - behind[:2]) > 0.015:
      return self._towards(np.array([*behind[:2], 0.08]), self.speed), 0.0
    return self._towards(behind, self.speed), 0.0

  def _pick_and_place(self):
    ee, obj, goal = self.sim.ee_position(), self.sim.object_position(), self.sim.goal
    width = self.sim.robot.get_fingers_width()
    held = np.linalg.norm(ee - obj) < 0.02 and width < env_lib.OBJECT_SIZE + 0.005
    if self.grasped and not held:
      self.grasped = False
    if not self.grasped:
      above = obj + np.array([0.0, 0.0, 0.06])
      if np.linalg.norm(ee[:2] - obj[:2]) > 0.01:
        grip = -1.0 if width < 0.07 else 0.0
        return self._towards(above, self.speed), grip
      if ee[2] - obj[2] > 0.005:
        return self._towards(obj, min(self.speed, 0.6)), (-1.0 if width < 0.07 else 0.0)
      if width > env_lib.OBJECT_SIZE + 0.002:
        return np.zeros(3), 0.5
      self.grasped = True
    return self._towards(goal, self.speed), 0.5
