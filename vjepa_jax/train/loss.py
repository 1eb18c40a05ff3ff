"""The official V-JEPA 2-AC objective: teacher forcing plus an auto-regressive rollout loss."""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from vjepa_jax.models import layers

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

  Args:
    predictor: `(tokens [B, t*hw, D], actions [B, t, A], states [B, t, A]) -> [B, t*hw, D]`.
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

  def step(z, a, s):
    out = predictor(z, a, s)
    return layers.layer_norm_no_affine(out) if normalize else out

  z_tf = step(h[:, :-hw], actions, states[:, :-1])
  jloss = l1(z_tf, h[:, hw:], loss_exp)
  z = jnp.concatenate([h[:, :hw], z_tf[:, :hw]], axis=1)
  for n in range(1, auto_steps):
    nxt = step(z, actions[:, :n + 1], states[:, :n + 1])[:, -hw:]
    z = jnp.concatenate([z, nxt], axis=1)
  z_ar = z[:, hw:]
  sloss = l1(z_ar, h[:, hw:hw + z_ar.shape[1]], loss_exp)
  return {"loss": jloss + sloss, "jloss": jloss, "sloss": sloss, "z_tf": z_tf, "z_ar": z_ar}
