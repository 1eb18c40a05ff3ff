"""Controller-agnostic planning API: frames and poses in, actions out.

  planner = Planner(encoder, predictor, planning.default_config())
  action = planner.plan(frame, pose, goal_frame)          # np.ndarray [A] (DROID: 7)

The search method is the config's `method` ("cem", "mppi" or "gd"); the pose and action width
`A` is the predictor's `action_dim`.

Frames are uint8 `[H, W, 3]` camera images, preprocessed by `vjepa_jax.preprocess` exactly as
training preprocesses its clips (`cfg.crop="ac"`: the training crop, resized to the predictor's
image size and ImageNet-normalised; `cfg.crop="square"` takes the official notebook's centre
square crop instead); each frame is encoded on its own (repeated over one tubelet) and the tokens
are layer-normed. Goal latents are cached per goal image, so a fixed goal is encoded once.

`GoalSchedule` holds a list of (goal image, number of steps), the paper's pick-and-place
sub-goals; `Planner.follow` runs a closed loop over it with caller-supplied `observe` and
`execute` callbacks, so any robot controller or simulator can drive it.
"""
from __future__ import annotations

import collections
import functools
import hashlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vjepa_jax import preprocess
from vjepa_jax.models import world_model
from vjepa_jax.models.ac_predictor import ACPredictor
from vjepa_jax.planning import config as config_lib
from vjepa_jax.planning import plan_function
from vjepa_jax.planning.space import PlanResult

@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _encode(graphdef, size: int, crop: str, params, frames: jnp.ndarray) -> jnp.ndarray:
  """uint8 `[T, H, W, 3]` -> `[T*h*w, D]` (static graphdef: one executable per model shape)."""
  encoder = world_model.inference_module(graphdef, params)
  return world_model.encode_latents(encoder, frames[None], size, crop)[0]


class GoalSchedule:
  """Sub-goals in order, each held for a number of control steps.

  Args:
    goals: sequence of (goal image uint8 `[H, W, 3]`, steps >= 1).
  """

  def __init__(self, goals: Sequence[tuple[np.ndarray, int]]):
    if not goals:
      raise ValueError("a goal schedule needs at least one (goal image, steps) entry")
    for i, (image, steps) in enumerate(goals):
      if int(steps) < 1:
        raise ValueError(f"sub-goal {i} has steps={steps}; each needs at least 1 step")
      if np.asarray(image).ndim != 3:
        raise ValueError(f"sub-goal {i} image must be [H, W, 3], got "
                         f"{np.asarray(image).shape}")
    self.goals = [(np.asarray(image), int(steps)) for image, steps in goals]
    self.bounds = np.cumsum([steps for _, steps in self.goals])

  def __len__(self) -> int:
    return int(self.bounds[-1])

  def index(self, step: int) -> int:
    """Which sub-goal is active at control step `step` (0-based)."""
    if not 0 <= step < len(self):
      raise ValueError(f"step {step} is outside the schedule's {len(self)} steps")
    return int(np.searchsorted(self.bounds, step, side="right"))

  def goal(self, step: int) -> np.ndarray:
    return self.goals[self.index(step)][0]


class Planner:
  """Planning with a V-JEPA 2-AC world model (CEM, MPPI or gradient search: `cfg.method`).

  Args:
    encoder: the video encoder (`VisionTransformer` or a `Loaded` wrapper).
    predictor: the AC predictor (`ACPredictor` or a `Loaded` wrapper).
    cfg: `planning.default_config()`.
    mesh, sample_axis: optional device mesh to shard the samples over.
    goal_cache_size: number of goal latents kept.

  Attributes:
    plan_function: the compiled `plan_function.PlanFunction` (its `cfg` has the action width
      and the sample chunk resolved; its `flops` are the predictor FLOPs per plan).
    last_result: the `PlanResult` of the latest plan (final distribution, energies, flops).
  """

  def __init__(self, encoder: Any, predictor: Any, cfg: ml_collections.ConfigDict | None = None,
               *, mesh=None, sample_axis: str | None = None, goal_cache_size: int = 16):
    self.cfg = config_lib.default_config() if cfg is None else cfg
    encoder, predictor = world_model.module_of(encoder), world_model.module_of(predictor)
    if not isinstance(predictor, ACPredictor):
      raise ValueError(f"predictor must be an ACPredictor, got {type(predictor).__name__}")
    if encoder.cfg.embed_dim != predictor.cfg.embed_dim:
      raise ValueError(f"encoder width {encoder.cfg.embed_dim} != predictor input width "
                       f"{predictor.cfg.embed_dim}")
    preprocess.check_crop(self.cfg.crop, preprocess.DEVICE_CROPS)
    self.image_size = predictor.cfg.img_size
    self.tokens_per_frame = predictor.tokens_per_frame
    self.action_dim = predictor.cfg.action_dim
    self.plan_function = plan_function.PlanFunction(predictor, self.cfg, mesh=mesh,
                                             sample_axis=sample_axis)
    self._enc_graphdef, self._enc_params = nnx.split(encoder)
    self._goals: collections.OrderedDict[tuple, jnp.ndarray] = collections.OrderedDict()
    self._goal_cache_size = goal_cache_size
    self._key = jax.random.key(self.cfg.seed)
    self._calls = 0
    self.last_result: PlanResult | None = None

  def encode(self, frames: np.ndarray) -> jnp.ndarray:
    """uint8 `[H, W, 3]` or `[T, H, W, 3]` -> layer-normed tokens `[T*h*w, D]`."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
      raise ValueError(f"frames must be uint8 camera images, got dtype {frames.dtype}")
    if frames.ndim == 3:
      frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"frames must be [H, W, 3] or [T, H, W, 3], got {frames.shape}")
    return _encode(self._enc_graphdef, self.image_size, self.cfg.crop, self._enc_params, frames)

  def goal_latent(self, goal_frame: np.ndarray) -> jnp.ndarray:
    """Encoded goal, cached by image content."""
    goal_frame = np.ascontiguousarray(goal_frame)
    key = (goal_frame.shape, hashlib.sha1(goal_frame.tobytes()).hexdigest())
    if key in self._goals:
      self._goals.move_to_end(key)
      return self._goals[key]
    latent = self.encode(goal_frame)
    self._goals[key] = latent
    while len(self._goals) > self._goal_cache_size:
      self._goals.popitem(last=False)
    return latent

  def plan_sequence(self, frame: np.ndarray, pose: np.ndarray, goal_frame: np.ndarray,
                    key: jax.Array | None = None) -> np.ndarray:
    """Planned action sequence `[horizon, A]` from the current frame and pose to the goal.

    Args:
      frame: uint8 `[H, W, 3]` current observation.
      pose: `[A]` current state (DROID: end-effector pose x, y, z, roll, pitch, yaw, gripper).
      goal_frame: uint8 `[H, W, 3]` goal image.
      key: optional PRNG key (default: the planner's seed folded with a call counter).
    """
    pose = np.asarray(pose, np.float32)
    if pose.shape != (self.action_dim,):
      raise ValueError(f"pose must be [{self.action_dim}] (the predictor's action_dim; DROID: x, "
                       f"y, z, roll, pitch, yaw, gripper), got {pose.shape}")
    if key is None:
      key = jax.random.fold_in(self._key, self._calls)
    self._calls += 1
    context = self.encode(frame)[None]
    goal = self.goal_latent(goal_frame)
    result = self.plan_function(context, pose[None, None], None, goal, key)
    self.last_result = result
    return np.asarray(result.actions)

  def plan(self, frame: np.ndarray, pose: np.ndarray, goal_frame: np.ndarray,
           key: jax.Array | None = None) -> np.ndarray:
    """The next action `[A]` (the first step of `plan_sequence`)."""
    return self.plan_sequence(frame, pose, goal_frame, key)[0]

  def follow(self, schedule: GoalSchedule, observe: Callable[[], tuple[np.ndarray, np.ndarray]],
             execute: Callable[[np.ndarray], None]) -> list[np.ndarray]:
    """Closed-loop control through a sub-goal schedule.

    Each step calls `observe() -> (frame uint8 [H, W, 3], pose [A])`, plans towards the active
    sub-goal and calls `execute(action [A])`.

    Returns:
      The executed actions.
    """
    actions = []
    for step in range(len(schedule)):
      frame, pose = observe()
      action = self.plan(frame, pose, schedule.goal(step))
      execute(action)
      actions.append(action)
    return actions
