"""Gradient planning: Adam on the action sequence through the differentiable world-model rollout.

The energy (rollout + L1 to the goal latent) is differentiable end to end, so instead of
sampling, `gd.samples` action sequences are improved in parallel by `gd.steps` Adam steps on
their energy. Each controllable dimension is optimised as `a / bound` in [-1, 1] (so the step size
is relative to each dimension's range and one learning rate suits xyz in metres and the gripper
alike) and projected back into the box after every step; the learning rate decays to 0 on a
cosine. Starts: the first at the mean of the search distribution, the others drawn from it. With
`gd.cem_iterations > 0` that distribution is the result of as many CEM iterations (the warm
start); otherwise it is the initial one (mean 0 or the fixed values, std `init_std`). The plan is
the lowest-energy sequence evaluated over all steps and starts.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vjepa_jax.planning import cem
from vjepa_jax.planning import space
from vjepa_jax.planning.space import PlanResult


def starts(key: jax.Array, mean: jnp.ndarray, std: jnp.ndarray, samples: int) -> jnp.ndarray:
  """`[samples, H, nd]` starting sequences: the mean, then draws from N(mean, std)."""
  noise = jax.random.normal(key, (samples,) + mean.shape)
  return mean + std * noise.at[0].set(0.0)


def gradient_search(energy_fn: Callable[[jnp.ndarray], jnp.ndarray], key: jax.Array,
                    cfg: ml_collections.ConfigDict,
                    constrain: Callable[[jnp.ndarray], jnp.ndarray] = cem.identity
                    ) -> PlanResult:
  """Projected Adam on `gd.samples` action sequences (traceable, same arguments as
  `cem.cem_search`).

  Args:
    energy_fn: `actions [S, horizon, A] -> energies [S]`, differentiable in the actions.
    key: PRNG key (CEM warm-start iteration i draws from `fold_in(key, i)`, the starts from
      `fold_in(key, gd.cem_iterations)`).
    cfg: `default_config()` with the `gd` fields (and the CEM ones for a warm start).
    constrain: applied to per-sample arrays (sample axis first) to shard them.
  """
  g = cfg.gd
  if g.cem_iterations:
    warm_cfg = ml_collections.ConfigDict(cfg)
    warm_cfg.iterations = g.cem_iterations
    warm = cem.cem_search(energy_fn, key, warm_cfg, constrain)
    mean, std, warm_log = warm.mean, warm.std, warm.energies
  else:
    mean, std = space.initial_distribution(cfg)
    warm_log = jnp.zeros((0,), jnp.float32)
  bound = jnp.asarray(space.search_bound(cfg))
  x0 = starts(jax.random.fold_in(key, g.cem_iterations), mean, std, g.samples) / bound
  x0 = constrain(jnp.clip(x0, -1.0, 1.0))
  optimizer = optax.adam(optax.cosine_decay_schedule(g.learning_rate, g.steps))

  def loss(x):
    e = constrain(energy_fn(space.to_actions(x * bound, cfg)))
    return jnp.sum(e), e

  grad_fn = jax.value_and_grad(loss, has_aux=True)

  def step(i, carry):
    x, state, best_x, best_e, log = carry
    (_, e), grad = grad_fn(x)
    better = e < best_e
    best_x = jnp.where(better[:, None, None], x, best_x)
    best_e = jnp.where(better, e, best_e)
    updates, state = optimizer.update(constrain(grad), state)
    x = constrain(jnp.clip(optax.apply_updates(x, updates), -1.0, 1.0))
    return x, state, best_x, best_e, log.at[i].set(jnp.min(e))

  carry = (x0, optimizer.init(x0), x0, jnp.full((g.samples,), jnp.inf, jnp.float32),
           jnp.zeros((g.steps,), jnp.float32))
  _, _, best_x, best_e, log = jax.lax.fori_loop(0, g.steps, step, carry)
  values = best_x * bound
  best = values[jnp.argmin(best_e)]
  return PlanResult(space.final_action(best, cfg), best, jnp.std(values, axis=0),
                    jnp.concatenate([warm_log, log]))
