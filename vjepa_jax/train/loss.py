"""The official V-JEPA 2-AC objective: teacher forcing plus an auto-regressive rollout loss."""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from vjepa_jax.models import layers
from vjepa_jax.models import world_model
from vjepa_jax.models.ac_predictor import ACPredictor

Predictor = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def targets(encode: Callable[[jnp.ndarray], jnp.ndarray], video: jnp.ndarray,
            normalize: bool = True) -> jnp.ndarray:
  """h `[B, T*hw, D]`: every frame encoded on its own, layer-normed without affine parameters."""
  h = encode(video)
  return layers.layer_norm_no_affine(h) if normalize else h


def l1(z: jnp.ndarray, h: jnp.ndarray, loss_exp: float) -> jnp.ndarray:
  """mean(|z - h|^p) / p over all elements, in float32."""
  d = jnp.abs(z.astype(jnp.float32) - h.astype(jnp.float32))
  return jnp.mean(d if loss_exp == 1.0 else d ** loss_exp) / loss_exp


def ac_losses(predictor: Predictor, h: jnp.ndarray, actions: jnp.ndarray, states: jnp.ndarray,
              tokens_per_frame: int, auto_steps: int = 2, loss_exp: float = 1.0,
              normalize: bool = True) -> dict[str, jnp.ndarray]:
  """Teacher-forcing and rollout losses of one batch.

  Rollout step n of the official objective re-runs the predictor on [h_0, z_1 .. z_n]. With a
  frame-causal `ACPredictor` the first n steps of that input (and, for step 1, step 0 of the
  teacher-forcing pass) produce exactly the keys/values computed before, so each rollout step
  here runs the predictor on its newest step only, attending to the cached keys/values
  (`world_model.rollout_frames`); the loss and its gradient are the official ones. Other predictors (a plain
  callable, a non-causal model) take the official recomputing path.

  Args:
    predictor: an `ACPredictor`, or any `(tokens [B, t*hw, D], actions [B, t, A], states
      [B, t, A]) -> [B, t*hw, D]`.
    h: targets `[B, T*hw, D]` (see `targets`).
    actions: `[B, T-1, A]`, actions[t] moves frame t to frame t+1.
    states: `[B, T, A]`.
    auto_steps: rollout length; 1 disables the rollout term.

  Returns:
    dict with `loss` (= jloss + sloss), `jloss`, `sloss`, `z_tf` `[B, (T-1)*hw, D]` and `z_ar`
    `[B, auto_steps*hw, D]`.
  """
  hw = tokens_per_frame
  t = h.shape[1] // hw
  if not 1 <= auto_steps <= t - 1:
    raise ValueError(f"auto_steps={auto_steps} must be in [1, frames-1={t - 1}]")
  norm = layers.layer_norm_no_affine if normalize else (lambda x: x)
  cached = (isinstance(predictor, ACPredictor) and predictor.cfg.is_frame_causal
            and auto_steps > 1)

  if cached:
    out, cache = predictor(h[:, :-hw], actions, states[:, :-1], cache=predictor.empty_cache())
    z_tf = norm(out)
  else:
    z_tf = norm(predictor(h[:, :-hw], actions, states[:, :-1]))
  jloss = l1(z_tf, h[:, hw:], loss_exp)
  frames = [z_tf[:, :hw]]
  if cached:
    frames += world_model.rollout_frames(predictor, cache.first_steps(1), frames[0],
                                         actions[:, 1:auto_steps], states[:, 1:auto_steps], norm)
  else:
    for n in range(1, auto_steps):
      z = jnp.concatenate([h[:, :hw]] + frames, axis=1)
      frames.append(norm(predictor(z, actions[:, :n + 1], states[:, :n + 1]))[:, -hw:])
  z_ar = jnp.concatenate(frames, axis=1)
  sloss = l1(z_ar, h[:, hw:hw + z_ar.shape[1]], loss_exp)
  return {"loss": jloss + sloss, "jloss": jloss, "sloss": sloss, "z_tf": z_tf, "z_ar": z_ar}
