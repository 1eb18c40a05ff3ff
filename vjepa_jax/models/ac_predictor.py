"""V-JEPA 2-AC action-conditioned predictor (Flax NNX), with an optional key/value cache.

Per time step t the sequence is [action_t, state_t, (extrinsics_t), h*w frame tokens of t]; a
frame-block-causal mask lets every token of step t see the steps <= t. Conditioning tokens carry
only a time rotation; frame tokens carry the full 3-D RoPE. The output at frame t is read as the
prediction of frame t+1.

Because the mask is block causal, the tokens of earlier steps never change when later steps are
added. A `Cache` holds every block's keys/values of the steps seen so far; called with a cache,
the predictor runs its blocks on the new steps' tokens only, which attend to the cached ones. The
training loss's rollout term, evaluation and the planners continue from the teacher-forcing pass
or from a plan's context this way, through this one forward pass.
"""
from __future__ import annotations

import flax.struct
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vjepa_jax.models import attention as attn_lib
from vjepa_jax.models import layers
from vjepa_jax.models import rope
from vjepa_jax.models.configs import PredictorConfig


class Cache(flax.struct.PyTreeNode):
  """Keys/values of the time steps a predictor has seen.

  Attributes:
    blocks: per block, a tuple of `(keys, values)` segments `[b, H, L, hd]`; b is the batch or 1
      (shared by the whole batch, broadcast without being copied).
    tokens_per_step: conditioning plus frame tokens of one step.
  """
  blocks: tuple
  tokens_per_step: int = flax.struct.field(pytree_node=False)

  @property
  def steps(self) -> int:
    return sum(k.shape[2] for k, _ in self.blocks[0]) // self.tokens_per_step

  def first_steps(self, n: int) -> "Cache":
    """The cache of the first `n` steps only."""
    if not 0 <= n <= self.steps:
      raise ValueError(f"the cache holds {self.steps} steps, cannot keep {n}")
    keep = n * self.tokens_per_step

    def cut(segments):
      out, left = [], keep
      for k, v in segments:
        if left <= 0:
          break
        out.append((k[:, :, :left], v[:, :, :left]))
        left -= k.shape[2]
      return tuple(out)

    return self.replace(blocks=tuple(cut(s) for s in self.blocks))


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

  def empty_cache(self, extrinsics: bool = False) -> Cache:
    """A cache holding no step, to start one with (`extrinsics`: 3 conditioning tokens)."""
    return Cache(blocks=((),) * self.cfg.depth,
                 tokens_per_step=(3 if extrinsics else 2) + self.tokens_per_frame)

  def check_inputs(self, tokens_shape, actions_shape, states_shape, extrinsics_shape
                   ) -> tuple[int, int]:
    """Validates input shapes; returns (batch B, time steps T).

    Every input has batch B or 1 (shared by the whole batch).
    """
    cfg, hw = self.cfg, self.tokens_per_frame
    if len(tokens_shape) != 3 or tokens_shape[-1] != cfg.embed_dim:
      raise ValueError(f"tokens must be [B, T*{hw}, {cfg.embed_dim}], got {tuple(tokens_shape)}")
    n = tokens_shape[1]
    if n % hw or n == 0:
      raise ValueError(
          f"token count {n} is not a positive multiple of the {hw} tokens per frame of the "
          f"{cfg.grid[0]}x{cfg.grid[1]} grid this predictor was built for (img_size "
          f"{cfg.img_size}, patch {cfg.patch_size})")
    t = n // hw
    shapes = {"tokens": tokens_shape, "actions": actions_shape, "states": states_shape,
              "extrinsics": extrinsics_shape}
    b = max(s[0] for s in shapes.values() if s is not None)
    if tokens_shape[0] not in (1, b):
      raise ValueError(f"tokens have batch {tokens_shape[0]}, expected {b} or 1 (shared)")
    for name, dim in (("actions", cfg.action_dim), ("states", cfg.action_dim),
                      ("extrinsics", cfg.action_dim - 1)):
      shape = shapes[name]
      if shape is not None and (len(shape) != 3 or shape[0] not in (1, b)
                                or tuple(shape[1:]) != (t, dim)):
        raise ValueError(f"{name} must be [B={b} or 1, T={t}, {dim}] to match the tokens, got "
                         f"{tuple(shape)}")
    return b, t

  def __call__(self, tokens: jnp.ndarray, actions: jnp.ndarray, states: jnp.ndarray,
               extrinsics: jnp.ndarray | None = None, cache: Cache | None = None):
    """Runs the predictor on T steps, after the cached ones if a cache is given.

    Args:
      tokens: `[B, T*h*w, D_enc]` context tokens, frame by frame.
      actions: `[B, T, A]`; states: `[B, T, A]`.
      extrinsics: optional `[B, T, A-1]`; when given the model runs with 3 conditioning tokens
        per step (official `use_extrinsics=True`), otherwise with 2.
      cache: the keys/values of earlier steps (frame-causal predictors only), e.g. returned by
        an earlier call, or `empty_cache()`. The T steps then take the time indices after the
        cached ones and attend to every cached token.
      Any input may have batch 1 instead of B (shared by every batch row). A one-step call whose
      tokens, states (and extrinsics) are shared and whose actions are not, over a shared cache,
      computes the shared tokens' first-block work once (`layers.Block.shared_rows`): the
      planners' context step.

    Returns:
      `[B, T*h*w, D_enc]` predictions; the block of frame t predicts frame t+1. With a `cache`,
      a tuple (predictions, the cache extended by the T steps).
    """
    cfg, hw = self.cfg, self.tokens_per_frame
    b, t = self.check_inputs(tokens.shape, actions.shape, states.shape,
                             None if extrinsics is None else extrinsics.shape)
    k = 2 if extrinsics is None else 3
    start = 0
    if cache is not None:
      if not cfg.is_frame_causal:
        raise ValueError("a key/value cache needs a frame-causal predictor (is_frame_causal="
                         "True): without the block-causal mask later steps change earlier ones")
      if cache.tokens_per_step != k + hw:
        raise ValueError(f"the cache was built with {cache.tokens_per_step - hw} conditioning "
                         f"tokens per step, this call has {k} (extrinsics must be given always "
                         "or never)")
      start = cache.steps
    theta = sequence_angles(cfg, start + t, k)[start * (k + hw):][None]
    embed = lambda x: self.predictor_embed(x).reshape(x.shape[0], t, hw, -1)  # noqa: E731
    cond = [self.action_encoder(actions), self.state_encoder(states)]
    if extrinsics is not None:
      cond.append(self.extrinsics_encoder(extrinsics))
    shared = (cache is not None and t == 1 and b > 1 and actions.shape[0] == b
              and all(c.shape[0] == 1 for c in cond[1:]) and tokens.shape[0] == 1
              and all(s[0].shape[0] == 1 for s in cache.blocks[0]))
    blocks = self.predictor_blocks
    if shared:
      x_shared = jnp.concatenate([c[:, 0, None] for c in cond[1:]] + [embed(tokens)[:, 0]], 1)
      x, first = blocks[0].shared_rows(cond[0], theta[:, :1], x_shared, theta[:, 1:],
                                       cache.blocks[0])
      x, rest = layers.run_blocks(blocks[1:], x, theta, None, cfg.remat, list(cache.blocks[1:]))
      new_blocks = [first] + rest
    else:
      parts = [jnp.broadcast_to(c[:, :, None], (b, t, 1, c.shape[-1])) for c in cond]
      frames = embed(tokens)
      x = jnp.concatenate(parts + [jnp.broadcast_to(frames, (b,) + frames.shape[1:])], axis=2)
      x = x.reshape(b, t * (k + hw), -1)
      mask = attn_lib.block_causal_mask(t, k + hw) if cfg.is_frame_causal and t > 1 else None
      out = layers.run_blocks(blocks, x, theta, mask, cfg.remat,
                              None if cache is None else list(cache.blocks))
      x, new_blocks = out if cache is not None else (out, None)
    x = x.reshape(b, t, k + hw, -1)[:, :, k:].reshape(b, t * hw, -1)
    out = self.predictor_proj(self.predictor_norm(x))
    if cache is None:
      return out
    return out, cache.replace(blocks=tuple(new_blocks))
