"""Model-predictive path integral (MPPI) search: CEM's sampling with a softmax-weighted update.

Each iteration draws `samples` sequences from the diagonal Gaussian (as CEM does, same draws,
clipping, fixed axes and `close_gripper`), scores them, and weights every sample by
`softmax(-z / temperature)` where `z` are the energies standardised over the iteration's samples:
the temperature is in units of the energies' spread, so one value suits world models whose
energies differ in scale. The weighted mean and weighted std replace CEM's top-k statistics and are
blended with the previous ones through the same momenta (`momentum_std=1` keeps the std fixed, the
classic MPPI).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from vjepa_jax.planning import cem
from vjepa_jax.planning import space
from vjepa_jax.planning.space import PlanResult


def weights(energies: jnp.ndarray, temperature: float) -> jnp.ndarray:
  """Softmax weights `[S]` of energies `[S]` standardised over the samples (all equal: uniform)."""
  spread = jnp.maximum(jnp.std(energies), jnp.finfo(energies.dtype).tiny)
  z = (energies - jnp.mean(energies)) / spread
  return jax.nn.softmax(-z / temperature)


def mppi_search(energy_fn: Callable[[jnp.ndarray], jnp.ndarray], key: jax.Array,
                cfg: ml_collections.ConfigDict,
                constrain: Callable[[jnp.ndarray], jnp.ndarray] = cem.identity) -> PlanResult:
  """The MPPI iterations (traceable, same arguments as `cem.cem_search`).

  Args:
    energy_fn: `actions [samples, horizon, A] -> energies [samples]` (lower is better).
    key: PRNG key; iteration i draws from `fold_in(key, i)` (the draws of `cem_search`).
    cfg: `default_config()` (`samples`, `iterations`, `horizon`, momenta, `mppi.temperature`).
    constrain: applied to per-sample arrays (sample axis first) to shard them.
  """
  mean0, std0 = space.initial_distribution(cfg)
  mm, ms = space.momenta(cfg)
  dims = list(space.search_dims(cfg))

  def iteration(i, carry):
    mean, std, log = carry
    values = constrain(mean + std * cem.sample_noise(key, i, cfg))
    actions = space.to_actions(values, cfg)
    e = constrain(energy_fn(actions))
    w = weights(e, cfg.mppi.temperature)
    chosen = actions[..., dims]  # [S, H, nd]
    new_mean = jnp.einsum("s,shd->hd", w, chosen)
    new_var = jnp.einsum("s,shd->hd", w, jnp.square(chosen - new_mean))
    mean = (1.0 - mm) * new_mean + mm * mean
    std = (1.0 - ms) * jnp.sqrt(new_var) + ms * std
    return mean, std, log.at[i].set(jnp.sum(w * e))

  log0 = jnp.zeros((cfg.iterations,), jnp.float32)
  mean, std, log = jax.lax.fori_loop(0, cfg.iterations, iteration, (mean0, std0, log0))
  return PlanResult(space.final_action(mean, cfg), mean, std, log)
