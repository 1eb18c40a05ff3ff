"""The fixed exterior camera of the simulated scene.

Coordinates are panda-gym's world frame (metres): the table top is at z = 0, its centre line is
y = 0, the robot base stands at (-0.6, 0, 0) and the task goals lie in x, y in [-0.15, 0.15],
z in [0, 0.3]. The default camera is placed as a DROID exterior camera: beside the table in
front of the robot, slightly above table height, looking at the workspace so that the whole arm
is in view and motion along each of x, y and z moves the arm in a different image direction.
Shadows are on by default; they show the gripper's height above the table.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Camera:
  """A pinhole camera looking from `eye` at `target` (z up), square images.

  Attributes:
    eye, target: positions (x, y, z) in the world frame.
    fov: vertical field of view in degrees.
    shadow: draw shadows (about 2x the render time of the Tiny renderer).
  """
  eye: tuple[float, float, float] = (0.45, -1.0, 0.25)
  target: tuple[float, float, float] = (-0.2, 0.0, 0.2)
  fov: float = 55.0
  shadow: bool = True

  def __post_init__(self):
    if len(self.eye) != 3 or len(self.target) != 3:
      raise ValueError(f"camera eye and target must be (x, y, z), got {self.eye}, {self.target}")
    if np.allclose(self.eye, self.target):
      raise ValueError(f"camera eye {self.eye} equals its target")
    if not 1.0 <= self.fov <= 170.0:
      raise ValueError(f"camera fov must be in [1, 170] degrees, got {self.fov}")

  def to_dict(self) -> dict:
    return {"eye": list(self.eye), "target": list(self.target), "fov": self.fov,
            "shadow": self.shadow}

  @classmethod
  def from_dict(cls, d: dict) -> "Camera":
    return cls(eye=tuple(d["eye"]), target=tuple(d["target"]), fov=float(d["fov"]),
               shadow=bool(d.get("shadow", True)))


def render(client, camera: Camera, size: int) -> np.ndarray:
  """uint8 RGB `[size, size, 3]` of the scene in a pybullet client, with the CPU renderer."""
  import pybullet
  if size < 8:
    raise ValueError(f"image size must be >= 8 pixels, got {size}")
  view = client.computeViewMatrix(cameraEyePosition=list(camera.eye),
                                  cameraTargetPosition=list(camera.target),
                                  cameraUpVector=[0.0, 0.0, 1.0])
  proj = client.computeProjectionMatrixFOV(fov=camera.fov, aspect=1.0, nearVal=0.05,
                                           farVal=5.0)
  _, _, rgba, _, _ = client.getCameraImage(size, size, view, proj, shadow=int(camera.shadow),
                                           renderer=pybullet.ER_TINY_RENDERER)
  return np.asarray(rgba, np.uint8).reshape(size, size, 4)[..., :3].copy()
