"""V-JEPA 2-AC action-conditioned predictor (Flax NNX).

Per time step t the sequence is [action_t, state_t, (extrinsics_t), h*w frame tokens of t]; a
frame-block-causal mask lets every token of step t see the steps <= t. Conditioning tokens carry
only a time rotation; frame tokens carry the full 3-D RoPE. The output at frame t is read as the
prediction of frame t+1.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vjepa_jax.models import attention as attn_lib
from vjepa_jax.models import layers
from vjepa_jax.models import rope
from vjepa_jax.models.configs import PredictorConfig


def sequence_angles(cfg: PredictorConfig, num_steps: int, num_cond: int) -> jnp.ndarray:
  """RoPE angles `[T*(K+h*w), hd]` of the interleaved predictor sequence.

  Frame tokens rotate with (t, row * gh/h, col * gh/w), the official snap of spatial positions to
  the grid the model was built for (factors are 1 for square grids); the K conditioning tokens of
  step t rotate only in the time slice.
  """
  gh, gw = cfg.grid
  hw = gh * gw
  t_idx, r_idx, c_idx = rope.grid_positions(num_steps, gh, gw)
  dtype = layers.angle_dtype(cfg.dtype)
  frame = rope.angles((t_idx.astype(np.float64), r_idx * (gh / gh), c_idx * (gh / gw)),
                      cfg.head_dim, cfg.rope_mode, dtype)
  cond = rope.angles((np.repeat(np.arange(num_steps), num_cond).astype(np.float64),),
                     cfg.head_dim, cfg.rope_mode, dtype)
  d = cfg.head_dim
  seq = jnp.concatenate([cond.reshape(num_steps, num_cond, d), frame.reshape(num_steps, hw, d)],
                        axis=1)
  return seq.reshape(num_steps * (num_cond + hw), d)


class ACPredictor(nnx.Module):
  """Predicts next-frame encoder tokens from context tokens, actions and proprioceptive states."""

  def __init__(self, cfg: PredictorConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = layers.dtype_of(cfg.dtype)
    rope.check_head_dim(cfg.head_dim)
    p, a = cfg.predictor_embed_dim, cfg.action_dim
    self.predictor_embed = layers.Linear(cfg.embed_dim, p, dtype=dtype, rngs=rngs)
    self.action_encoder = layers.Linear(a, p, dtype=dtype, rngs=rngs)
    self.state_encoder = layers.Linear(a, p, dtype=dtype, rngs=rngs)
    # Present in every official checkpoint, used only when extrinsics are given.
    self.extrinsics_encoder = layers.Linear(a - 1, p, dtype=dtype, rngs=rngs)
    self.predictor_blocks = nnx.List([
        layers.Block(p, cfg.num_heads, cfg.mlp_hidden, eps=cfg.norm_eps, dtype=dtype,
                     implementation=cfg.attention_impl, rngs=rngs)
        for _ in range(cfg.depth)])
    layers.rescale_residual_projections(self.predictor_blocks)
    self.predictor_norm = layers.LayerNorm(p, eps=cfg.norm_eps, dtype=dtype)
    self.predictor_proj = layers.Linear(p, cfg.embed_dim, dtype=dtype, rngs=rngs)

  @property
  def tokens_per_frame(self) -> int:
    gh, gw = self.cfg.grid
    return gh * gw

  def check_inputs(self, tokens_shape, actions_shape, states_shape, extrinsics_shape) -> int:
    """Validates input shapes and returns the number of time steps T."""
    cfg, hw = self.cfg, self.tokens_per_frame
    if len(tokens_shape) != 3 or tokens_shape[-1] != cfg.embed_dim:
      raise ValueError(f"tokens must be [B, T*{hw}, {cfg.embed_dim}], got {tuple(tokens_shape)}")
    b, n, _ = tokens_shape
    if n % hw or n == 0:
      raise ValueError(
          f"token count {n} is not a positive multiple of the {hw} tokens per frame of the "
          f"{cfg.grid[0]}x{cfg.grid[1]} grid this predictor was built for (img_size "
          f"{cfg.img_size}, patch {cfg.patch_size})")
    t = n // hw
    for name, shape, dim in (("actions", actions_shape, cfg.action_dim),
                             ("states", states_shape, cfg.action_dim),
                             ("extrinsics", extrinsics_shape, cfg.action_dim - 1)):
      if shape is not None and tuple(shape) != (b, t, dim):
        raise ValueError(f"{name} must be [B={b}, T={t}, {dim}] to match the tokens, got "
                         f"{tuple(shape)}")
    return t

  def __call__(self, tokens: jnp.ndarray, actions: jnp.ndarray, states: jnp.ndarray,
               extrinsics: jnp.ndarray | None = None, cache_steps: int = 0):
    """Runs the predictor.

    Args:
      tokens: `[B, T*h*w, D_enc]` context tokens, frame by frame.
      actions: `[B, T, A]`; states: `[B, T, A]`.
      extrinsics: optional `[B, T, A-1]`; when given the model runs with 3 conditioning tokens
        per step (official `use_extrinsics=True`), otherwise with 2.
      cache_steps: when > 0 (frame-causal models without extrinsics), also return per block the
        (keys, values) of the first `cache_steps` time steps, `[B, H, cache_steps*(2+h*w), hd]`,
        so that `ac_stepwise.predict_step` can continue from them.

    Returns:
      `[B, T*h*w, D_enc]` predictions; the block of frame t predicts frame t+1. With
      `cache_steps`, a tuple (predictions, per-block list of [(keys, values)]).
    """
    cfg, hw = self.cfg, self.tokens_per_frame
    t = self.check_inputs(tokens.shape, actions.shape, states.shape,
                          None if extrinsics is None else extrinsics.shape)
    if cache_steps and (extrinsics is not None or not cfg.is_frame_causal or cache_steps > t):
      raise ValueError(f"cache_steps={cache_steps} needs a frame-causal predictor, no extrinsics "
                       f"and at most T={t} steps")
    b = tokens.shape[0]
    x = self.predictor_embed(tokens).reshape(b, t, hw, -1)
    cond = [self.action_encoder(actions), self.state_encoder(states)]
    if extrinsics is not None:
      cond.append(self.extrinsics_encoder(extrinsics))
    k = len(cond)
    x = jnp.concatenate([c[:, :, None, :] for c in cond] + [x], axis=2)
    x = x.reshape(b, t * (k + hw), -1)
    theta = sequence_angles(cfg, t, k)[None, :, None, :]
    mask = attn_lib.block_causal_mask(t, k + hw) if cfg.is_frame_causal else None
    x = layers.run_blocks(self.predictor_blocks, x, theta, mask, cfg.remat,
                          cache_steps * (k + hw))
    x, cache = x if cache_steps else (x, None)
    x = x.reshape(b, t, k + hw, -1)[:, :, k:].reshape(b, t * hw, -1)
    out = self.predictor_proj(self.predictor_norm(x))
    return (out, [[kv] for kv in cache]) if cache_steps else out
