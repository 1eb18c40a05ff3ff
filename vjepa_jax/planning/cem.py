"""Cross-entropy-method planning with the V-JEPA 2-AC world model, as one compiled function.

Semantics are the official planner's (`notebooks/utils/mpc_utils.cem`):

- The search distribution is a diagonal Gaussian per horizon step over [dx, dy, dz, dgripper]
  (rotation deltas are pinned to 0; `search_rotation=True` adds droll, dpitch, dyaw). It starts
  at mean 0 and std (maxnorm, maxnorm, maxnorm, 1).
- Each iteration draws `samples` action sequences, clips xyz to +-maxnorm and the gripper to
  +-gripper_max, applies the fixed axes and `close_gripper` (gripper := 1 from that horizon step
  on), rolls the world model out over the horizon (poses integrated on device with
  `poses.integrate_pose`) and scores every sample by its energy: the mean L1 distance between the
  layer-normed prediction of the last frame and the layer-normed goal latent.
- The `topk` lowest-energy samples give a mean and an unbiased std, blended with the previous
  ones: `new = (1 - m) * topk_stat + m * old`, with separate momenta for the gripper.
- The plan is the final mean, with a gripper delta below `gripper_round` in magnitude set to 0.

Everything (sampling, rollout, pose integration, top-k, the iterations) runs inside one
`jax.jit`-compiled function (`PlanFunction`); samples are the batch axis and can be sharded over
devices.
"""
from __future__ import annotations

import functools
import json
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vjepa_jax.models import world_model
from vjepa_jax.models.ac_predictor import ACPredictor
from vjepa_jax.planning import poses

XYZ, ROT, GRIPPER = (0, 1, 2), (3, 4, 5), 6

# Official settings. "paper": the V-JEPA 2 paper's robot experiments (800 samples, 10 iterations,
# top-10, horizon 1, actions within a 0.075 m ball per step); the paper gives no momenta, so they
# are the official `WorldModel` defaults. "wrapper": the defaults of the official
# `WorldModel.mpc_args`. "cem_function": the defaults in the signature of the official `cem`.
# "notebook": the energy-landscape notebook's quick CPU demo.
PRESETS = {
    "paper": dict(samples=800, iterations=10, topk=10, horizon=1, momentum_mean=0.15,
                  momentum_std=0.15, momentum_mean_gripper=0.15, momentum_std_gripper=0.15,
                  maxnorm=0.075),
    "wrapper": dict(samples=400, iterations=10, topk=10, horizon=2, momentum_mean=0.15,
                    momentum_std=0.15, momentum_mean_gripper=0.15, momentum_std_gripper=0.15,
                    maxnorm=0.05),
    "cem_function": dict(samples=100, iterations=100, topk=10, horizon=1, momentum_mean=0.25,
                         momentum_std=0.95, momentum_mean_gripper=0.15,
                         momentum_std_gripper=0.15, maxnorm=0.05),
    "notebook": dict(samples=25, iterations=2, topk=10, horizon=2, momentum_mean=0.15,
                     momentum_std=0.75, momentum_mean_gripper=0.15, momentum_std_gripper=0.15,
                     maxnorm=0.075),
}


def default_config(preset: str = "paper") -> ml_collections.ConfigDict:
  """CEM planner config.

  Args:
    preset: one of `PRESETS` ("paper" by default; see the comment on `PRESETS`).

  Fields:
    samples, iterations, topk, horizon: CEM sizes (official `samples`, `cem_steps`, `topk`,
      `rollout`).
    momentum_mean, momentum_std: blending of the xyz (and rotation) mean/std with the previous
      iteration's; momentum_mean_gripper, momentum_std_gripper: the same for the gripper.
    maxnorm: xyz bound (m per step), also the initial xyz std.
    gripper_max: gripper-delta bound (official 0.75). The initial gripper std is 1.
    gripper_round: a planned gripper delta with |g| below this is returned as 0 (official 0.25).
    search_rotation: also search droll/dpitch/dyaw (vjepa-jax extension; official pins them to
      0), bounded by and starting at std rotation_maxnorm (rad), with the xyz momenta.
    fixed_axes: ((axis, value), ...) action dimensions held fixed (0-2 xyz, 3-5 rotation,
      6 gripper); the official `axis` dict indexes [x, y, z, gripper] instead, so its key 3 is
      our 6.
    close_gripper: if set, the gripper delta is 1 from this horizon step on (official).
    sample_chunk: roll the samples out in chunks of this size (must divide `samples`); 0 = all
      at once; -1 = automatic: chunks of at most 64 samples on CPU (activations then stay in
      cache; about 2x faster than one 800-sample batch on 2 cores), all at once on
      accelerators.
    reuse_context: share the context step's sample-independent work across samples
      (`world_model.rollout`); False recomputes it per sample as the official planner does.
    crop: how `planner.Planner` crops camera frames (`vjepa_jax.preprocess`): "ac" (default, the
      training crop, so the planner sees what the model was trained on) or "square" (the official
      notebook's centre square crop).
    seed: base PRNG seed of `planner.Planner`.
  """
  if preset not in PRESETS:
    raise ValueError(f"unknown CEM preset {preset!r}; known: {sorted(PRESETS)}")
  c = ml_collections.ConfigDict()
  for k, v in PRESETS[preset].items():
    setattr(c, k, v)
  c.gripper_max = 0.75
  c.gripper_round = 0.25
  c.search_rotation = False
  c.rotation_maxnorm = 0.1
  c.fixed_axes = ()
  c.close_gripper = ml_collections.config_dict.placeholder(int)
  c.sample_chunk = -1
  c.reuse_context = True
  c.crop = "ac"
  c.seed = 0
  return c


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a config the planner cannot run."""
  if cfg.samples < 2 or cfg.iterations < 1 or cfg.horizon < 1:
    raise ValueError(f"need samples >= 2, iterations >= 1, horizon >= 1; got samples="
                     f"{cfg.samples}, iterations={cfg.iterations}, horizon={cfg.horizon}")
  if not 2 <= cfg.topk <= cfg.samples:
    raise ValueError(f"topk must be in [2, samples={cfg.samples}] (the std of fewer than 2 "
                     f"samples is undefined), got {cfg.topk}")
  if cfg.sample_chunk < -1 or (cfg.sample_chunk > 0 and cfg.samples % cfg.sample_chunk):
    raise ValueError(f"sample_chunk={cfg.sample_chunk} must be -1 (auto), 0 (all) or a divisor "
                     f"of samples={cfg.samples}")
  for axis, _ in cfg.fixed_axes:
    if not 0 <= axis < 7:
      raise ValueError(f"fixed axis {axis} is not an action dimension (0-6)")
  if cfg.close_gripper is not None and cfg.close_gripper < 0:
    raise ValueError(f"close_gripper must be a horizon step >= 0, got {cfg.close_gripper}")


def search_dims(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Action dimensions the search distribution covers."""
  return XYZ + ROT + (GRIPPER,) if cfg.search_rotation else XYZ + (GRIPPER,)


def initial_distribution(cfg: ml_collections.ConfigDict) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Start mean and std `[horizon, len(search_dims)]`."""
  dims = search_dims(cfg)
  std = [cfg.maxnorm if d in XYZ else cfg.rotation_maxnorm if d in ROT else 1.0 for d in dims]
  mean = np.zeros((cfg.horizon, len(dims)), np.float32)
  for axis, value in cfg.fixed_axes:
    if axis in dims:
      mean[:, dims.index(axis)] = value
  return jnp.asarray(mean), jnp.broadcast_to(jnp.asarray(std, jnp.float32), mean.shape)


def to_actions(values: jnp.ndarray, cfg: ml_collections.ConfigDict) -> jnp.ndarray:
  """Search-space values `[..., H, len(search_dims)]` -> clipped full actions `[..., H, 7]`.

  Clipping, fixed axes and `close_gripper` are applied in the official order.
  """
  dims = search_dims(cfg)
  bound = np.array([cfg.maxnorm if d in XYZ else cfg.rotation_maxnorm if d in ROT
                    else cfg.gripper_max for d in dims], np.float32)
  values = jnp.clip(values, -bound, bound)
  full = jnp.zeros(values.shape[:-1] + (7,), values.dtype).at[..., list(dims)].set(values)
  for axis, value in cfg.fixed_axes:
    full = full.at[..., axis].set(value)
  if cfg.close_gripper is not None:
    full = full.at[..., cfg.close_gripper:, GRIPPER].set(1.0)
  return full


def momenta(cfg: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """Per-search-dimension momenta (mean, std)."""
  dims = search_dims(cfg)
  mm = np.array([cfg.momentum_mean_gripper if d == GRIPPER else cfg.momentum_mean
                 for d in dims], np.float32)
  ms = np.array([cfg.momentum_std_gripper if d == GRIPPER else cfg.momentum_std
                 for d in dims], np.float32)
  return mm, ms


def final_action(mean: jnp.ndarray, cfg: ml_collections.ConfigDict) -> jnp.ndarray:
  """Plan `[H, 7]` from the final mean: rotations 0 unless searched or fixed, fixed axes at their
  values, a small gripper delta rounded to 0."""
  full = jnp.zeros(mean.shape[:-1] + (7,), mean.dtype).at[..., list(search_dims(cfg))].set(mean)
  for axis, value in cfg.fixed_axes:
    full = full.at[..., axis].set(value)
  g = full[..., GRIPPER]
  return full.at[..., GRIPPER].set(jnp.where(jnp.abs(g) < cfg.gripper_round, 0.0, g))


class PlanResult(NamedTuple):
  """Output of a plan.

  Attributes:
    actions: `[H, 7]` the planned action sequence (the first one is executed).
    mean, std: `[H, len(search_dims)]` final search distribution.
    energies: `[iterations]` mean energy of the top-k samples at each iteration.
  """
  actions: jnp.ndarray
  mean: jnp.ndarray
  std: jnp.ndarray
  energies: jnp.ndarray


def sample_noise(key: jax.Array, iteration, cfg: ml_collections.ConfigDict) -> jnp.ndarray:
  """Standard-normal draws `[samples, horizon, len(search_dims)]` of one iteration."""
  shape = (cfg.samples, cfg.horizon, len(search_dims(cfg)))
  return jax.random.normal(jax.random.fold_in(key, iteration), shape)


def cem_search(energy_fn: Callable[[jnp.ndarray], jnp.ndarray], key: jax.Array,
               cfg: ml_collections.ConfigDict,
               constrain: Callable[[jnp.ndarray], jnp.ndarray] = lambda x: x) -> PlanResult:
  """The CEM iterations (traceable; `PlanFunction` compiles it with the world model's energy).

  Args:
    energy_fn: `actions [samples, horizon, 7] -> energies [samples]` (lower is better).
    key: PRNG key; iteration i draws from `fold_in(key, i)`.
    cfg: `default_config()`.
    constrain: applied to per-sample arrays (sample axis first) to shard them.
  """
  mean0, std0 = initial_distribution(cfg)
  mm, ms = momenta(cfg)
  dims = list(search_dims(cfg))

  def iteration(i, carry):
    mean, std, log = carry
    values = constrain(mean + std * sample_noise(key, i, cfg))
    actions = to_actions(values, cfg)
    neg_top, idx = jax.lax.top_k(-constrain(energy_fn(actions)), cfg.topk)
    chosen = actions[idx][..., dims]  # [topk, H, nd]
    mean = (1.0 - mm) * chosen.mean(0) + mm * mean
    std = (1.0 - ms) * chosen.std(0, ddof=1) + ms * std
    return mean, std, log.at[i].set(-neg_top.mean())

  log0 = jnp.zeros((cfg.iterations,), jnp.float32)
  mean, std, log = jax.lax.fori_loop(0, cfg.iterations, iteration, (mean0, std0, log0))
  return PlanResult(final_action(mean, cfg), mean, std, log)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _plan(graphdef, cfg_json: str, sample_sharding: NamedSharding | None, params, context,
          states, actions, goal, key) -> PlanResult:
  """The compiled plan. Static arguments make equal models and configs share one executable."""
  cfg = ml_collections.ConfigDict(json.loads(cfg_json))
  if sample_sharding is None:
    constrain = lambda x: x  # noqa: E731
  else:
    constrain = lambda x: jax.lax.with_sharding_constraint(x, sample_sharding)  # noqa: E731
  model = world_model.inference_module(graphdef, params)
  ctx = world_model.prepare_context(model, context, states, actions)

  def energy_fn(candidates):
    return world_model.rollout_energy(model, ctx, candidates, goal, poses.integrate_pose,
                                      cfg.sample_chunk, cfg.reuse_context)

  return cem_search(energy_fn, key, cfg, constrain)


class PlanFunction:
  """The whole plan compiled into one function, with the predictor's parameters bound.

  `PlanFunction(predictor, cfg)(context [1, T*h*w, D], states [1, T, 7], actions [1, T-1, 7] |
  None, goal [h*w, D], key) -> PlanResult`. Context and goal are layer-normed encoder tokens; the
  last context frame is the current observation and `states[0, -1]` the current pose.

  Attributes:
    fn: the compiled pure function `fn(params, context, states, actions, goal, key)` (to call
      with other parameters; `lower` gives its lowering).
    params: the predictor's parameter state, placed for the mesh.
    cfg: the config with the sample chunk resolved.
  """

  def __init__(self, predictor: ACPredictor, cfg: ml_collections.ConfigDict,
               mesh: Mesh | None = None, sample_axis: str | None = None):
    """Args: predictor (NNX module), cfg (`default_config()`), optional device `mesh` whose
    `sample_axis` (default: its first axis) shards the samples; parameters are replicated."""
    validate(cfg)
    cfg = cfg.copy_and_resolve_references()
    graphdef, params = nnx.split(predictor)
    self._replicated = None
    sharding = None
    size = 1
    if mesh is not None:
      axis = sample_axis or mesh.axis_names[0]
      size = mesh.shape[axis]
    cfg.sample_chunk = world_model.resolve_sample_chunk(cfg.sample_chunk, cfg.samples, size)
    self.cfg = cfg
    if mesh is not None:
      if cfg.samples % size or (cfg.sample_chunk and cfg.sample_chunk % size):
        raise ValueError(f"samples={cfg.samples} (and sample_chunk) must be divisible by the "
                         f"{size} devices of mesh axis {axis!r}")
      sharding = NamedSharding(mesh, P(axis))
      self._replicated = NamedSharding(mesh, P())
      params = jax.device_put(params, self._replicated)
    self.params = params
    self._static = (graphdef, cfg.to_json(sort_keys=True), sharding)
    self.fn = functools.partial(_plan, *self._static)

  def lower(self, *args):
    """`jax.jit(...).lower` of `fn` (same arguments), for compilation and cost analysis."""
    return _plan.lower(*self._static, *args)

  def place(self, *arrays):
    """Puts inputs where the compiled function expects them (replicated over the mesh)."""
    if self._replicated is None:
      return tuple(None if a is None else jnp.asarray(a) for a in arrays)
    return tuple(None if a is None else jax.device_put(jnp.asarray(a), self._replicated)
                 for a in arrays)

  def __call__(self, context, states, actions, goal, key) -> PlanResult:
    return self.fn(self.params, *self.place(context, states, actions, goal, key))
