"""Cross-entropy-method planning with the V-JEPA 2-AC world model.

Semantics are the official planner's (`notebooks/utils/mpc_utils.cem`):

- The search distribution is a diagonal Gaussian per horizon step over the controllable action
  dimensions (`space`; DROID: [dx, dy, dz, dgripper], rotation deltas pinned to 0 unless
  `search_rotation=True`). It starts at mean 0 and std (maxnorm, maxnorm, maxnorm, 1).
- Each iteration draws `samples` action sequences, clips xyz to +-maxnorm and the gripper to
  +-gripper_max, applies the fixed axes and `close_gripper` (gripper := 1 from that horizon step
  on), rolls the world model out over the horizon (states integrated on device: DROID poses with
  `poses.integrate_pose`, or additively; `space.integrator`) and scores every sample by its
  energy: the mean L1 distance between the layer-normed prediction of the last frame and the
  layer-normed goal latent.
- The `topk` lowest-energy samples give a mean and an unbiased std, blended with the previous
  ones: `new = (1 - m) * topk_stat + m * old`, with separate momenta for the gripper.
- The plan is the final mean, with a gripper delta below `gripper_round` in magnitude set to 0.

`cem_search` is traceable; `plan_function.PlanFunction` compiles it (or another method) with the
world model's energy into one function whose samples can be sharded over devices.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from vjepa_jax.planning import space
# The config lives in its own module; evaluation and the CLI reach it through this one.
from vjepa_jax.planning.config import PRESETS  # noqa: F401
from vjepa_jax.planning.config import default_config  # noqa: F401
from vjepa_jax.planning.config import validate  # noqa: F401
from vjepa_jax.planning.space import PlanResult


def sample_noise(key: jax.Array, iteration, cfg: ml_collections.ConfigDict) -> jnp.ndarray:
  """Standard-normal draws `[samples, horizon, len(controllable)]` of one iteration."""
  shape = (cfg.samples, cfg.horizon, len(space.search_dims(cfg)))
  return jax.random.normal(jax.random.fold_in(key, iteration), shape)


def identity(x: jnp.ndarray) -> jnp.ndarray:
  return x


def cem_search(energy_fn: Callable[[jnp.ndarray], jnp.ndarray], key: jax.Array,
               cfg: ml_collections.ConfigDict,
               constrain: Callable[[jnp.ndarray], jnp.ndarray] = identity) -> PlanResult:
  """The CEM iterations (traceable; `plan_function.PlanFunction` compiles them with the world
  model's energy).

  Args:
    energy_fn: `actions [samples, horizon, A] -> energies [samples]` (lower is better).
    key: PRNG key; iteration i draws from `fold_in(key, i)`.
    cfg: `default_config()`.
    constrain: applied to per-sample arrays (sample axis first) to shard them.
  """
  mean0, std0 = space.initial_distribution(cfg)
  mm, ms = space.momenta(cfg)
  dims = list(space.search_dims(cfg))

  def iteration(i, carry):
    mean, std, log = carry
    values = constrain(mean + std * sample_noise(key, i, cfg))
    actions = space.to_actions(values, cfg)
    neg_top, idx = jax.lax.top_k(-constrain(energy_fn(actions)), cfg.topk)
    chosen = actions[idx][..., dims]  # [topk, H, nd]
    mean = (1.0 - mm) * chosen.mean(0) + mm * mean
    std = (1.0 - ms) * chosen.std(0, ddof=1) + ms * std
    return mean, std, log.at[i].set(-neg_top.mean())

  log0 = jnp.zeros((cfg.iterations,), jnp.float32)
  mean, std, log = jax.lax.fori_loop(0, cfg.iterations, iteration, (mean0, std0, log0))
  return PlanResult(space.final_action(mean, cfg), mean, std, log)
