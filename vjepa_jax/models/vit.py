"""V-JEPA 2 video encoder (Flax NNX).

Channels-last input `[B, T, H, W, 3]` (ImageNet-normalised), output tokens `[B, N, D]` with
N = (T // tubelet) * (H // patch) * (W // patch) in time-major, row, column order. No cls token,
no positional table: positions enter through 3-D RoPE only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vjepa_jax.models import layers
from vjepa_jax.models import rope
from vjepa_jax.models.configs import EncoderConfig


class PatchEmbed3D(nnx.Module):
  """Tubelet embedding: Conv3d with kernel = stride = (tubelet, patch, patch).

  Stored as a Flax conv kernel `[t, p, p, C, D]`; computed as a patchify + matmul, which is the
  same operation for non-overlapping windows and avoids slow strided convs on CPU.
  """

  def __init__(self, cfg: EncoderConfig, dtype, rngs: nnx.Rngs):
    t, p, c = cfg.tubelet_size, cfg.patch_size, cfg.in_chans
    self.tubelet, self.patch, self.in_chans = t, p, c
    self.kernel = nnx.Param(layers.trunc_normal(0.02)(rngs.params(), (t, p, p, c, cfg.embed_dim)))
    self.bias = nnx.Param(jnp.zeros((cfg.embed_dim,), jnp.float32))
    self.dtype = dtype

  def grid(self, video_shape) -> tuple[int, int, int]:
    _, t, h, w, _ = video_shape
    return t // self.tubelet, h // self.patch, w // self.patch

  def __call__(self, video: jnp.ndarray) -> jnp.ndarray:
    """video `[B, T, H, W, C]` -> tokens `[B, T'*Hp*Wp, D]` (trailing odd frame dropped)."""
    tp, _, _ = self.grid(video.shape)
    t = self.tubelet
    kernel = self.kernel[...].astype(self.dtype)
    return self._embed(video[:, :tp * t], kernel)

  def still(self, frames: jnp.ndarray) -> jnp.ndarray:
    """frames `[B, H, W, C]` -> tokens `[B, Hp*Wp, D]` of each frame repeated over a tubelet.

    A frame repeated over the tubelet meets the kernel summed over time: the same linear map at
    1/tubelet of the cost of embedding the repeated clip.
    """
    acc = jnp.promote_types(self.dtype, jnp.float32)
    kernel = self.kernel[...].astype(acc).sum(axis=0, keepdims=True).astype(self.dtype)
    return self._embed(frames[:, None], kernel)

  def _embed(self, video: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """video `[B, T, H, W, C]` with T a multiple of kernel `[t, p, p, C, D]`'s t."""
    b = video.shape[0]
    t, p, _, c, _ = kernel.shape
    tp, hp, wp = video.shape[1] // t, video.shape[2] // p, video.shape[3] // p
    x = video[:, :, :hp * p, :wp * p].astype(self.dtype)
    x = x.reshape(b, tp, t, hp, p, wp, p, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    x = x.reshape(b, tp * hp * wp, t * p * p * c)
    return x @ kernel.reshape(t * p * p * c, -1) + self.bias[...].astype(self.dtype)


class VisionTransformer(nnx.Module):
  """The V-JEPA 2 encoder (ViT with tubelet embedding and 3-D RoPE)."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = layers.dtype_of(cfg.dtype)
    rope.check_head_dim(cfg.head_dim)
    self.patch_embed = PatchEmbed3D(cfg, dtype, rngs)
    self.blocks = nnx.List([
        layers.Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_hidden, eps=cfg.norm_eps, dtype=dtype,
                     implementation=cfg.attention_impl, rngs=rngs)
        for _ in range(cfg.depth)])
    layers.rescale_residual_projections(self.blocks)
    self.norm = layers.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps, dtype=dtype)

  def check_video(self, video_shape) -> None:
    if len(video_shape) != 5 or video_shape[-1] != self.cfg.in_chans:
      raise ValueError(f"video must be [B, T, H, W, {self.cfg.in_chans}] (channels last), got "
                       f"shape {tuple(video_shape)}")
    _, t, h, w, _ = video_shape
    p = self.cfg.patch_size
    if h % p or w % p:
      raise ValueError(f"video height and width must be multiples of the patch size {p}, got "
                       f"H={h}, W={w}")
    if t < self.cfg.tubelet_size:
      raise ValueError(f"video needs at least tubelet_size={self.cfg.tubelet_size} frames, "
                       f"got T={t}")

  def __call__(self, video: jnp.ndarray, keep: jnp.ndarray | None = None) -> jnp.ndarray:
    """Encodes a clip.

    Args:
      video: `[B, T, H, W, 3]` float. An odd trailing frame is ignored by the stride-2 tubelet.
      keep: optional int `[B, K]` indices of the tokens to process (masked forward); kept tokens
        rotate with their original positions.

    Returns:
      `[B, N, D]` tokens (or `[B, K, D]` with `keep`), after the final LayerNorm.
    """
    self.check_video(video.shape)
    return self._encode(self.patch_embed(video), self.patch_embed.grid(video.shape), keep)

  def encode_still(self, frames: jnp.ndarray) -> jnp.ndarray:
    """Encodes each image `[B, H, W, 3]` as a clip of that frame repeated over one tubelet.

    Returns:
      `[B, h*w, D]`, equal to `self(repeat(frames, tubelet))` (see `PatchEmbed3D.still`).
    """
    b, h, w, c = frames.shape
    clip_shape = (b, self.cfg.tubelet_size, h, w, c)
    self.check_video(clip_shape)
    return self._encode(self.patch_embed.still(frames), self.patch_embed.grid(clip_shape), None)

  def _encode(self, x: jnp.ndarray, grid: tuple[int, int, int],
              keep: jnp.ndarray | None) -> jnp.ndarray:
    pos = [jnp.asarray(p) for p in rope.grid_positions(*grid)]
    if keep is not None:
      keep = jnp.asarray(keep)
      if keep.ndim != 2 or keep.shape[0] != x.shape[0]:
        raise ValueError(f"keep must be [B, K] token indices with B={x.shape[0]}, "
                         f"got shape {keep.shape}")
      x = jnp.take_along_axis(x, keep[..., None], axis=1)
      pos = [p[keep] for p in pos]
    else:
      pos = [p[None] for p in pos]
    theta = rope.angles(tuple(pos), self.cfg.head_dim, self.cfg.rope_mode,
                        layers.angle_dtype(self.cfg.dtype))
    x = layers.run_blocks(self.blocks, x, theta, None, self.cfg.remat)
    return self.norm(x)


def encode_frames(encoder: VisionTransformer, video: jnp.ndarray) -> jnp.ndarray:
  """Encodes every frame on its own, as V-JEPA 2-AC targets and planning observations.

  Each frame is encoded as a clip of its own (the frame repeated to fill one tubelet, see
  `VisionTransformer.encode_still`), and the per-frame token sets are concatenated frame by frame.

  Args:
    video: `[B, T, H, W, 3]`.

  Returns:
    `[B, T * h * w, D]` with h, w the patch grid.
  """
  b, t, hh, ww, c = video.shape
  tokens = encoder.encode_still(video.reshape(b * t, hh, ww, c))
  return tokens.reshape(b, -1, tokens.shape[-1])


def count_params(tree) -> int:
  """Number of scalars in a pytree of arrays or shape structs."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
