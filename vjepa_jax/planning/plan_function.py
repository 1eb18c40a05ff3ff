"""One interface over the search methods, and the whole plan compiled into one function.

Every method is `search(energy_fn, key, cfg, constrain) -> PlanResult`, where
`energy_fn(actions [S, H, A]) -> energies [S]` is a pure, differentiable JAX function (the
world-model rollout and the L1 distance to the goal latent) and `constrain` shards per-sample
arrays; `cfg.method` picks one of `SEARCHES`.

`PlanFunction` compiles sampling, rollout, state integration and the method's iterations into one
`jax.jit` function with the predictor's parameters bound; samples are the batch axis and can be
sharded over a device mesh.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vjepa_jax.models import world_model
from vjepa_jax.models.ac_predictor import ACPredictor
from vjepa_jax.planning import cem
from vjepa_jax.planning import config as config_lib
from vjepa_jax.planning import flops
from vjepa_jax.planning import gradient
from vjepa_jax.planning import mppi
from vjepa_jax.planning import space
from vjepa_jax.planning.space import PlanResult

SEARCHES = {"cem": cem.cem_search, "mppi": mppi.mppi_search, "gd": gradient.gradient_search}


def search(energy_fn: Callable[[jnp.ndarray], jnp.ndarray], key: jax.Array,
           cfg: ml_collections.ConfigDict,
           constrain: Callable[[jnp.ndarray], jnp.ndarray] = cem.identity) -> PlanResult:
  """Runs the search method `cfg.method` (traceable)."""
  if cfg.method not in SEARCHES:
    raise ValueError(f"method must be one of {sorted(SEARCHES)}, got {cfg.method!r}")
  return SEARCHES[cfg.method](energy_fn, key, cfg, constrain)


def resolve(cfg: ml_collections.ConfigDict, predictor_cfg, devices: int = 1
            ) -> ml_collections.ConfigDict:
  """A validated copy of `cfg` with the action width taken from the predictor and the sample
  chunk resolved for `devices` devices."""
  cfg = cfg.copy_and_resolve_references()
  width = predictor_cfg.action_dim
  if cfg.action_dim is None:
    cfg.action_dim = width
  elif cfg.action_dim != width:
    raise ValueError(f"planner action_dim={cfg.action_dim} but the predictor's actions are "
                     f"{width} wide (PredictorConfig.action_dim); leave action_dim unset to "
                     f"take the predictor's")
  config_lib.validate(cfg)
  batches = config_lib.sample_batches(cfg)
  cfg.sample_chunk = world_model.resolve_sample_chunk(cfg.sample_chunk, batches, devices)
  if devices > 1 and any(b % devices for b in batches + (cfg.sample_chunk,)):
    raise ValueError(f"sample counts {batches} (and sample_chunk={cfg.sample_chunk}) must be "
                     f"divisible by the {devices} devices of the sample mesh axis")
  return cfg


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _plan(graphdef, cfg: ml_collections.FrozenConfigDict, sample_sharding: NamedSharding | None,
          params, context, states, actions, goal, key) -> PlanResult:
  """The compiled plan. Static arguments make equal models and configs share one executable."""
  if sample_sharding is None:
    constrain = cem.identity
  else:
    constrain = lambda x: jax.lax.with_sharding_constraint(x, sample_sharding)  # noqa: E731
  model = world_model.inference_module(graphdef, params)
  ctx = world_model.prepare_context(model, context, states, actions)
  integrate = space.integrator(cfg)

  def energy_fn(candidates):
    return world_model.rollout_energy(model, ctx, candidates, goal, integrate, cfg.sample_chunk,
                                      cfg.reuse_context)

  return search(energy_fn, key, cfg, constrain)


class PlanFunction:
  """The whole plan compiled into one function, with the predictor's parameters bound.

  `PlanFunction(predictor, cfg)(context [1, T*h*w, D], states [1, T, A], actions [1, T-1, A] |
  None, goal [h*w, D], key) -> PlanResult` (with `flops` set). Context and goal are layer-normed
  encoder tokens; the last context frame is the current observation and `states[0, -1]` the
  current state. `A` is the predictor's `action_dim`.

  Attributes:
    fn: the compiled pure function `fn(params, context, states, actions, goal, key)` (to call
      with other parameters; `lower` gives its lowering).
    params: the predictor's parameter state, placed for the mesh.
    cfg: the config with the action width and sample chunk resolved.
    flops: predictor FLOPs of one plan from a single context frame (`flops.plan_flops`).
  """

  def __init__(self, predictor: ACPredictor, cfg: ml_collections.ConfigDict,
               mesh: Mesh | None = None, sample_axis: str | None = None):
    """Args: predictor (NNX module), cfg (`default_config()`), optional device `mesh` whose
    `sample_axis` (default: its first axis) shards the samples; parameters are replicated."""
    graphdef, params = nnx.split(predictor)
    self._replicated = None
    sharding = None
    size = 1
    if mesh is not None:
      axis = sample_axis or mesh.axis_names[0]
      size = mesh.shape[axis]
    self.cfg = resolve(cfg, predictor.cfg, size)
    if mesh is not None:
      sharding = NamedSharding(mesh, P(axis))
      self._replicated = NamedSharding(mesh, P())
      params = jax.device_put(params, self._replicated)
    self.params = params
    self.flops = flops.plan_flops(self.cfg, predictor.cfg)
    self._static = (graphdef, ml_collections.FrozenConfigDict(self.cfg), sharding)
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
    result = self.fn(self.params, *self.place(context, states, actions, goal, key))
    return result._replace(flops=self.flops)
