"""Building blocks shared by the encoder and the AC predictor.

Parameter names follow the official PyTorch modules (`attn.qkv`, `mlp.fc1`, `norm1`, ...) so the
converter is a table of renames. Parameters are float32; `dtype` is the compute dtype.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vjepa_jax.models import attention as attn_lib
from vjepa_jax.models import rope

Dtype = Any


def trunc_normal(std: float = 0.02):
  """Truncated normal at +-2 absolute, as the official init (effectively untruncated at 0.02)."""
  def init(key, shape, dtype=jnp.float32):
    lo, hi = -2.0 / std, 2.0 / std
    return std * jax.random.truncated_normal(key, lo, hi, shape, dtype)
  return init


class LoRA(nnx.Module):
  """Low-rank adapter `scale * dropout(x) @ A @ B`; B starts at zero so it starts as a no-op."""

  def __init__(self, in_features: int, out_features: int, *, rank: int, alpha: float,
               dropout: float, rngs: nnx.Rngs):
    if rank <= 0:
      raise ValueError(f"LoRA rank must be positive, got {rank}")
    bound = 1.0 / np.sqrt(in_features)
    self.lora_a = nnx.LoRAParam(jax.random.uniform(
        rngs.params(), (in_features, rank), jnp.float32, -bound, bound))
    self.lora_b = nnx.LoRAParam(jnp.zeros((rank, out_features), jnp.float32))
    self.scale = alpha / rank
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.dropout is not None:
      x = self.dropout(x)
    a = self.lora_a[...].astype(x.dtype)
    b = self.lora_b[...].astype(x.dtype)
    return (x @ a @ b) * jnp.asarray(self.scale, x.dtype)


class Linear(nnx.Module):
  """Dense layer `x @ kernel + bias` with kernel `[in, out]` and an optional LoRA adapter.

  The adapter lives at `<path>.lora.{lora_a,lora_b}`, so the base weights keep their paths with
  LoRA on or off (see `vjepa_jax.models.lora`).
  """

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
               dtype: Dtype = jnp.float32, std: float = 0.02, rngs: nnx.Rngs):
    self.in_features = in_features
    self.out_features = out_features
    self.kernel = nnx.Param(trunc_normal(std)(rngs.params(), (in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
    self.dtype = dtype
    self.lora: LoRA | None = nnx.data(None)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x.astype(self.dtype)
    y = x @ self.kernel[...].astype(self.dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    if self.lora is not None:
      y = y + self.lora(x)
    return y


class LayerNorm(nnx.Module):
  """Affine LayerNorm with biased variance, computed in at least float32."""

  def __init__(self, features: int, *, eps: float = 1e-6, dtype: Dtype = jnp.float32):
    self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    ct = jnp.promote_types(x.dtype, jnp.float32)
    y = layer_norm_no_affine(x.astype(ct), self.eps)
    y = y * self.scale[...].astype(ct) + self.bias[...].astype(ct)
    return y.astype(self.dtype)


def layer_norm_no_affine(x: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
  """Parameter-free layer norm over the last axis (the `normalize_reps` of V-JEPA 2-AC)."""
  ct = jnp.promote_types(x.dtype, jnp.float32)
  return _layer_norm(x.astype(ct), float(eps)).astype(x.dtype)


def _layer_norm_forward(x, eps):
  centered = x - x.mean(-1, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.square(centered).mean(-1, keepdims=True) + eps)
  return centered * rstd, rstd


# The closed-form backward needs only the normalised output and 1/std; autodiff of the
# mean/variance graph keeps more and, stacked over blocks, lets XLA:CPU re-fuse the residual
# cotangents into every consumer.
@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _layer_norm(x, eps):
  return _layer_norm_forward(x, eps)[0]


def _layer_norm_fwd(x, eps):
  y, rstd = _layer_norm_forward(x, eps)
  return y, (y, rstd)


def _layer_norm_bwd(eps, res, dy):
  del eps
  y, rstd = res
  dx = rstd * (dy - dy.mean(-1, keepdims=True) - y * (dy * y).mean(-1, keepdims=True))
  return (dx,)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def gelu(x: jnp.ndarray) -> jnp.ndarray:
  """Exact GELU x * Phi(x) with Phi from erf, as PyTorch's `nn.GELU()`.

  jax.nn.gelu(approximate=False) goes through erfc, which XLA:CPU evaluates ~3x slower than erf.
  """
  return x * (0.5 + 0.5 * jax.lax.erf(x * np.asarray(1.0 / np.sqrt(2.0), x.dtype)))


class Mlp(nnx.Module):

  def __init__(self, dim: int, hidden: int, *, dtype: Dtype, rngs: nnx.Rngs):
    self.fc1 = Linear(dim, hidden, dtype=dtype, rngs=rngs)
    self.fc2 = Linear(hidden, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self.fc2(gelu(self.fc1(x)))


class Attention(nnx.Module):
  """Multi-head self-attention with 3-D RoPE on queries and keys.

  `qkv` rows are [all q | all k | all v], each head-major, as in the official fused projection.
  """

  def __init__(self, dim: int, num_heads: int, *, dtype: Dtype, implementation: str,
               rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}")
    self.num_heads = num_heads
    self.head_dim = dim // num_heads
    rope.check_head_dim(self.head_dim)
    self.implementation = implementation
    self.qkv = Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
    self.proj = Linear(dim, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray, theta: jnp.ndarray, mask: np.ndarray | None,
               kv_tokens: int = 0):
    """Attention of `x` `[B, N, D]` -> `[B, N, D]`.

    Args:
      x: `[B, N, D]`.
      theta: RoPE angles broadcastable to `[B, N, 1, hd]`.
      mask: optional boolean `[N, N]`.
      kv_tokens: when > 0, also return the rotated keys and the values of the first `kv_tokens`
        tokens, head-major `[B, H, kv_tokens, hd]` (a cache for `ac_stepwise`).
    """
    b, n, _ = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q = rope.rotate(q, theta)
    k = rope.rotate(k, theta)
    out = self.proj(attn_lib.dot_product_attention(q, k, v, mask, self.implementation)
                    .reshape(b, n, -1))
    if not kv_tokens:
      return out
    heads_first = lambda t: t[:, :kv_tokens].transpose(0, 2, 1, 3)  # noqa: E731
    return out, (heads_first(k), heads_first(v))


class Block(nnx.Module):
  """Pre-norm transformer block: x + proj(attn(LN1 x)); x + fc2(GELU(fc1(LN2 x)))."""

  def __init__(self, dim: int, num_heads: int, mlp_hidden: int, *, eps: float, dtype: Dtype,
               implementation: str, rngs: nnx.Rngs):
    self.norm1 = LayerNorm(dim, eps=eps, dtype=dtype)
    self.attn = Attention(dim, num_heads, dtype=dtype, implementation=implementation, rngs=rngs)
    self.norm2 = LayerNorm(dim, eps=eps, dtype=dtype)
    self.mlp = Mlp(dim, mlp_hidden, dtype=dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray, theta: jnp.ndarray, mask: np.ndarray | None,
               kv_tokens: int = 0):
    """`[B, N, D]` -> `[B, N, D]` (and the attention's key/value cache when `kv_tokens`)."""
    a = self.attn(self.norm1(x), theta, mask, kv_tokens)
    a, kv = a if kv_tokens else (a, None)
    x = x + a
    x = x + self.mlp(self.norm2(x))
    return (x, kv) if kv_tokens else x


def rescale_residual_projections(blocks) -> None:
  """Official init: block l (1-based) divides attn.proj and mlp.fc2 kernels by sqrt(2 l)."""
  for i, blk in enumerate(blocks):
    f = np.sqrt(2.0 * (i + 1))
    for lin in (blk.attn.proj, blk.mlp.fc2):
      lin.kernel[...] = (lin.kernel[...] / f).astype(lin.kernel[...].dtype)


def run_blocks(blocks, x: jnp.ndarray, theta: jnp.ndarray, mask: np.ndarray | None,
               remat: bool, kv_tokens: int = 0):
  """Applies `blocks` in order, optionally rematerialising each block's activations.

  With `kv_tokens` > 0 also returns, per block, the (keys, values) of the first `kv_tokens`
  tokens (see `Attention`).
  """
  call = lambda blk, h: blk(h, theta, mask, kv_tokens)  # noqa: E731
  step = nnx.remat(call) if remat else call
  cache = []
  for blk in blocks:
    x = step(blk, x)
    if kv_tokens:
      x, kv = x
      cache.append(kv)
  return (x, cache) if kv_tokens else x


def dtype_of(name: str) -> Dtype:
  """Compute dtype from a config string."""
  table = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64,
           "float16": jnp.float16}
  if name not in table:
    raise ValueError(f"dtype must be one of {sorted(table)}, got {name!r}")
  return table[name]


def angle_dtype(name: str) -> Dtype:
  """RoPE angles are computed in at least float32, even for bf16 compute."""
  return jnp.promote_types(dtype_of(name), jnp.float32)
