"""What a planner searches over, and what every search returns.

An action is `[A]` wide, `A` = the predictor's `action_dim` (both the action and the state width).
The search covers the *controllable* dimensions only; every other dimension is 0 unless
`fixed_axes` holds it at a value. Each dimension has a bound `|a_d| <= bound_d`, and one dimension
may be the gripper (its own momenta, rounding of small deltas and `close_gripper`).

The default is DROID's 7-D layout `[dx, dy, dz, droll, dpitch, dyaw, dgripper]`: xyz within
+-`maxnorm`, the gripper within +-`gripper_max`, rotations pinned to 0 unless `search_rotation`
(then within +-`rotation_maxnorm`); the initial std is the official (maxnorm, maxnorm, maxnorm, 1).
Another robot sets the action-space fields of the planner config instead (`config.default_config`):
`action_dim`, `controllable`, `bounds`, `init_std`, `gripper_dim`, `integration`.

States integrate along a rollout either as a DROID pose (`integration="pose"`: xyz adds, the
rotation composes, the gripper adds and clips; width 7 only) or additively (`"additive"`: s + a).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
import ml_collections
import numpy as np

from vjepa_jax.planning import poses

# DROID's layout (the default): xyz, euler-xyz rotation, gripper.
XYZ, ROT, GRIPPER = (0, 1, 2), (3, 4, 5), 6
DROID_WIDTH = 7
INTEGRATIONS = ("pose", "additive")


class PlanResult(NamedTuple):
  """Output of a plan (every search method returns one).

  Attributes:
    actions: `[H, A]` the planned action sequence (the first one is executed).
    mean, std: `[H, len(controllable)]` final search distribution over the controllable
      dimensions (the gradient planner: its best sequence and the spread of its starts).
    energies: `[iterations]` energy per iteration (CEM: mean of the top-k samples; MPPI: the
      softmax-weighted mean; gradient: the lowest over its starts, after any CEM warm-up
      iterations).
    flops: predictor FLOPs of the whole plan (`flops.plan_flops`), set by `PlanFunction`;
      None from a bare search function.
  """
  actions: jnp.ndarray
  mean: jnp.ndarray
  std: jnp.ndarray
  energies: jnp.ndarray
  flops: int | None = None


class ActionSpace(NamedTuple):
  """The action space a config describes (static NumPy values, read at trace time).

  Attributes:
    width: A, the action (and state) width.
    dims: the controllable dimensions, ascending.
    bound: `[A]` per-dimension bound.
    init_std: `[A]` per-dimension std of the initial search distribution.
    gripper: the gripper dimension, or None.
  """
  width: int
  dims: tuple[int, ...]
  bound: np.ndarray
  init_std: np.ndarray
  gripper: int | None


def _vector(name: str, values, width: int) -> np.ndarray:
  out = np.asarray(values, np.float32)
  if out.shape != (width,):
    raise ValueError(f"{name} must give one value per action dimension ({width}), got "
                     f"{list(values)}")
  if np.any(out <= 0):
    raise ValueError(f"{name} must be positive, got {list(values)}")
  return out


def action_space(cfg: ml_collections.ConfigDict) -> ActionSpace:
  """Reads the action space of a planner config; raises ValueError for an inconsistent one.

  The width is `cfg.action_dim` if set, else the length of `cfg.bounds` if set, else DROID's 7
  (`PlanFunction` sets `action_dim` from the predictor).
  """
  if cfg.action_dim is not None:
    width = int(cfg.action_dim)
  elif cfg.bounds is not None:
    width = len(cfg.bounds)
  else:
    width = DROID_WIDTH
  if width < 1:
    raise ValueError(f"action_dim must be >= 1, got {width}")
  if cfg.bounds is None:
    if width != DROID_WIDTH:
      raise ValueError(f"action_dim={width}: set cfg.bounds (one bound per action dimension) "
                       f"and cfg.controllable; the default bounds are DROID's 7-D layout")
    bound = np.array([cfg.maxnorm] * 3 + [cfg.rotation_maxnorm] * 3 + [cfg.gripper_max],
                     np.float32)
    init = np.array([cfg.maxnorm] * 3 + [cfg.rotation_maxnorm] * 3 + [1.0], np.float32)
  else:
    bound = _vector("bounds", cfg.bounds, width)
    init = bound
  if cfg.init_std is not None:
    init = _vector("init_std", cfg.init_std, width)
  if cfg.controllable is None:
    if width != DROID_WIDTH:
      raise ValueError(f"action_dim={width}: set cfg.controllable (the searched dimensions); "
                       f"the default is DROID's xyz + gripper")
    dims = XYZ + ROT + (GRIPPER,) if cfg.search_rotation else XYZ + (GRIPPER,)
  else:
    if cfg.search_rotation:
      raise ValueError("search_rotation only applies to the default DROID dimensions; list "
                       "the rotation dimensions in cfg.controllable instead")
    dims = tuple(sorted(int(d) for d in cfg.controllable))
    if not dims or len(set(dims)) != len(dims) or not 0 <= dims[0] <= dims[-1] < width:
      raise ValueError(f"controllable must be distinct action dimensions in [0, {width}), got "
                       f"{list(cfg.controllable)}")
  gripper = cfg.gripper_dim
  if gripper is not None and not 0 <= gripper < width:
    raise ValueError(f"gripper_dim={gripper} is not an action dimension (0-{width - 1}); "
                     f"None for a robot without a gripper")
  for axis, _ in cfg.fixed_axes:
    if not 0 <= axis < width:
      raise ValueError(f"fixed axis {axis} is not an action dimension (0-{width - 1})")
  if cfg.close_gripper is not None:
    if cfg.close_gripper < 0:
      raise ValueError(f"close_gripper must be a horizon step >= 0, got {cfg.close_gripper}")
    if gripper is None:
      raise ValueError("close_gripper needs a gripper dimension (cfg.gripper_dim)")
  if cfg.integration not in INTEGRATIONS:
    raise ValueError(f"integration must be one of {INTEGRATIONS}, got {cfg.integration!r}")
  if cfg.integration == "pose" and width != DROID_WIDTH:
    raise ValueError(f"integration='pose' composes 7-D poses (xyz, euler-xyz, gripper); "
                     f"action_dim={width} needs integration='additive'")
  return ActionSpace(width, dims, bound, init, gripper)


def search_dims(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Action dimensions the search covers."""
  return action_space(cfg).dims


def integrator(cfg: ml_collections.ConfigDict) -> Callable[[jnp.ndarray, jnp.ndarray],
                                                           jnp.ndarray]:
  """The state step `(state [..., A], action [..., A]) -> state [..., A]` of a rollout."""
  action_space(cfg)  # raises for a pose integration of a non-pose width
  return poses.integrate_pose if cfg.integration == "pose" else jnp.add


def initial_distribution(cfg: ml_collections.ConfigDict) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Start mean and std `[horizon, len(controllable)]` (fixed axes start at their value)."""
  space = action_space(cfg)
  mean = np.zeros((cfg.horizon, len(space.dims)), np.float32)
  for axis, value in cfg.fixed_axes:
    if axis in space.dims:
      mean[:, space.dims.index(axis)] = value
  std = space.init_std[list(space.dims)]
  return jnp.asarray(mean), jnp.broadcast_to(jnp.asarray(std), mean.shape)


def search_bound(cfg: ml_collections.ConfigDict) -> np.ndarray:
  """`[len(controllable)]` bounds of the searched dimensions."""
  space = action_space(cfg)
  return space.bound[list(space.dims)]


def _place(values: jnp.ndarray, space: ActionSpace, cfg) -> jnp.ndarray:
  full = jnp.zeros(values.shape[:-1] + (space.width,), values.dtype)
  full = full.at[..., list(space.dims)].set(values)
  for axis, value in cfg.fixed_axes:
    full = full.at[..., axis].set(value)
  return full


def to_actions(values: jnp.ndarray, cfg: ml_collections.ConfigDict) -> jnp.ndarray:
  """Search-space values `[..., H, len(controllable)]` -> clipped full actions `[..., H, A]`.

  Clipping, fixed axes and `close_gripper` are applied in the official order.
  """
  space = action_space(cfg)
  full = _place(jnp.clip(values, -space.bound[list(space.dims)], space.bound[list(space.dims)]),
                space, cfg)
  if cfg.close_gripper is not None:
    full = full.at[..., cfg.close_gripper:, space.gripper].set(1.0)
  return full


def final_action(mean: jnp.ndarray, cfg: ml_collections.ConfigDict) -> jnp.ndarray:
  """Plan `[H, A]` from final search values: unsearched dimensions 0 unless fixed, fixed axes at
  their values, a gripper delta below `gripper_round` in magnitude set to 0."""
  space = action_space(cfg)
  full = _place(mean, space, cfg)
  if space.gripper is None:
    return full
  g = full[..., space.gripper]
  return full.at[..., space.gripper].set(jnp.where(jnp.abs(g) < cfg.gripper_round, 0.0, g))


def momenta(cfg: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """Per-controllable-dimension momenta (mean, std): the gripper's own, the others shared."""
  space = action_space(cfg)
  mm = np.array([cfg.momentum_mean_gripper if d == space.gripper else cfg.momentum_mean
                 for d in space.dims], np.float32)
  ms = np.array([cfg.momentum_std_gripper if d == space.gripper else cfg.momentum_std
                 for d in space.dims], np.float32)
  return mm, ms
