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
  LoRA on or off (see `vjepa_jax.train.lora`).
  """

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
               dtype: Dtype = jnp.float32, std: float = 0.02, rngs: nnx.Rngs):
    self.in_features = in_features
    self.out_features = out_features
    self.kernel = nnx.Param(trunc_normal(std)(rngs.params(), (in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
    self.dtype = dtype
    self.lora: LoRA | None = nnx.data(None)

  def dense_kernel(self) -> jnp.ndarray:
    """The kernel `[in, out]` this layer applies, its adapter folded in (`W + scale * A @ B`),
    in float32."""
    kernel = self.kernel[...]
    if self.lora is not None:
      kernel = kernel + (self.lora.lora_a[...] @ self.lora.lora_b[...]) * self.lora.scale
    return kernel

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
  """Multi-head self-attention with 3-D RoPE on queries and keys, and an optional key/value cache.

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

  def qkv_heads(self, x: jnp.ndarray, theta: jnp.ndarray):
    """Rotated queries, keys and values `[B, H, n, hd]` of inputs `x` `[B, n, D]`."""
    b, n, _ = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
    th = theta[:, :, None, :]
    heads_first = lambda t: t.transpose(0, 2, 1, 3)  # noqa: E731
    return (heads_first(rope.rotate(qkv[:, :, 0], th)), heads_first(rope.rotate(qkv[:, :, 1], th)),
            heads_first(qkv[:, :, 2]))

  def __call__(self, x: jnp.ndarray, theta: jnp.ndarray, mask: np.ndarray | None = None,
               cache: tuple[attn_lib.Segment, ...] | None = None):
    """Attention of `x` `[B, n, D]` -> `[B, n, D]`.

    Args:
      x: `[B, n, D]`.
      theta: RoPE angles `[B or 1, n, hd]`.
      mask: optional boolean `[n, n]` over the tokens of `x` (cached tokens are always visible).
      cache: key/value segments of earlier tokens, or None. When given (an empty tuple starts a
        cache), `x` attends to them and to itself, and the result is (output, cache + this
        call's (keys, values)).
    """
    if cache is None and self.implementation == "cudnn":
      b, n, _ = x.shape
      qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
      th = theta[:, :, None, :]
      out = attn_lib.dot_product_attention(rope.rotate(qkv[:, :, 0], th),
                                           rope.rotate(qkv[:, :, 1], th), qkv[:, :, 2], mask,
                                           "cudnn")
      return self.proj(out.reshape(b, n, -1))
    if self.implementation not in attn_lib.IMPLEMENTATIONS:
      raise ValueError(f"attention implementation must be one of {attn_lib.IMPLEMENTATIONS}, "
                       f"got {self.implementation!r}")
    q, k, v = self.qkv_heads(x, theta)
    past = () if cache is None else tuple(cache)
    if mask is not None and past:
      mask = np.concatenate([np.ones((mask.shape[0], _length(past)), bool), mask], axis=1)
    out = self.proj(_merge_heads(attn_lib.attend(q, past + ((k, v),), mask)))
    return out if cache is None else (out, past + ((k, v),))

  def shared_rows(self, x: jnp.ndarray, theta: jnp.ndarray, shared: jnp.ndarray,
                  shared_theta: jnp.ndarray, cache: tuple[attn_lib.Segment, ...]):
    """Attention of `concat([x, broadcast(shared)])` where `shared` does not depend on the batch.

    The planner's context step: per-sample tokens `x` `[B, n, D]` (the sampled action) next to
    tokens shared by every sample `shared` `[1, m, D]` (state and frame), with batch-1 cached
    keys/values. The shared tokens' queries, keys and values are computed once. Their attention
    output over all keys is split exactly into the part over batch-1 keys (computed once) and
    the part over the per-sample keys, merged by log-sum-exp weights; both parts go through the
    output projection per head, which is linear, so each sample costs `O(m * heads * D)` instead
    of `O(m * D * D)`. Inference only (a LoRA dropout would be applied per part).

    Args:
      x: `[B, n, D]`; theta: `[B or 1, n, hd]`.
      shared: `[1, m, D]`; shared_theta: `[1, m, hd]`.
      cache: earlier tokens' key/value segments, all of batch 1.

    Returns:
      (`[B, n, D]` output of `x`, `[B, m, D]` output of `shared`, cache + this call's segments).
    """
    if any(k.shape[0] != 1 for k, _ in cache):
      raise ValueError("shared_rows needs a cache of batch-1 (shared) segments")
    q, k, v = self.qkv_heads(x, theta)
    qs, ks, vs = self.qkv_heads(shared, shared_theta)
    past = tuple(cache)
    out = self.proj(_merge_heads(attn_lib.attend(q, past + ((k, v), (ks, vs)))))
    a_shared, lse_shared = attn_lib.partial_attention(qs, past + ((ks, vs),))  # batch 1
    # Weights of the per-sample keys among all keys, per shared row: [B, H, m, n].
    logits_own = attn_lib.logits(qs, k)
    weight_own = jnp.exp(logits_own - jnp.logaddexp(
        lse_shared, jax.nn.logsumexp(logits_own, axis=-1))[..., None]).astype(x.dtype)
    kernel = self.proj.dense_kernel().astype(x.dtype).reshape(self.num_heads, self.head_dim, -1)
    proj_shared = jnp.einsum("hmd,hdp->mhp", a_shared[0], kernel)  # [m, H, D], once
    proj_own = jnp.einsum("bhnd,hdp->bhnp", v, kernel)  # [B, H, n, D]
    # proj(w_shared * a_shared + sum_j w_j v_j) per head, with w_shared = 1 - sum_j w_j.
    out_shared = (self.proj(_merge_heads(a_shared))
                  + jnp.einsum("bhmn,bhnp->bmp", weight_own, proj_own)
                  - jnp.einsum("bhm,mhp->bmp", weight_own.sum(-1), proj_shared))
    return out, out_shared, past + ((k, v), (ks, vs))


def _merge_heads(out: jnp.ndarray) -> jnp.ndarray:
  """`[B, H, n, hd]` -> `[B, n, H*hd]` (head-major features, as the fused projection expects)."""
  b, h, n, d = out.shape
  return out.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def _length(segments) -> int:
  return sum(k.shape[2] for k, _ in segments)


class Block(nnx.Module):
  """Pre-norm transformer block: x + proj(attn(LN1 x)); x + fc2(GELU(fc1(LN2 x)))."""

  def __init__(self, dim: int, num_heads: int, mlp_hidden: int, *, eps: float, dtype: Dtype,
               implementation: str, rngs: nnx.Rngs):
    self.norm1 = LayerNorm(dim, eps=eps, dtype=dtype)
    self.attn = Attention(dim, num_heads, dtype=dtype, implementation=implementation, rngs=rngs)
    self.norm2 = LayerNorm(dim, eps=eps, dtype=dtype)
    self.mlp = Mlp(dim, mlp_hidden, dtype=dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray, theta: jnp.ndarray, mask: np.ndarray | None = None,
               cache: tuple[attn_lib.Segment, ...] | None = None):
    """`[B, n, D]` -> `[B, n, D]`; with a `cache` (see `Attention`) also the extended cache."""
    a = self.attn(self.norm1(x), theta, mask, cache)
    a, cache = a if cache is not None else (a, None)
    x = x + a
    x = x + self.mlp(self.norm2(x))
    return x if cache is None else (x, cache)

  def shared_rows(self, x: jnp.ndarray, theta: jnp.ndarray, shared: jnp.ndarray,
                  shared_theta: jnp.ndarray, cache: tuple[attn_lib.Segment, ...]):
    """The block on `concat([x, broadcast(shared)])` (see `Attention.shared_rows`).

    Returns:
      (`[B, n + m, D]`, the extended cache).
    """
    a, a_shared, cache = self.attn.shared_rows(self.norm1(x), theta, self.norm1(shared),
                                               shared_theta, cache)
    x = jnp.concatenate([x + a, shared + a_shared], axis=1)
    return x + self.mlp(self.norm2(x)), cache


def rescale_residual_projections(blocks) -> None:
  """Official init: block l (1-based) divides attn.proj and mlp.fc2 kernels by sqrt(2 l)."""
  for i, blk in enumerate(blocks):
    f = np.sqrt(2.0 * (i + 1))
    for lin in (blk.attn.proj, blk.mlp.fc2):
      lin.kernel[...] = (lin.kernel[...] / f).astype(lin.kernel[...].dtype)


def run_blocks(blocks, x: jnp.ndarray, theta: jnp.ndarray, mask: np.ndarray | None,
               remat: bool, cache: list | None = None):
  """Applies `blocks` in order, optionally rematerialising each block's activations.

  With `cache` (per block, a tuple of key/value segments; see `Attention`) also returns the
  extended per-block cache.
  """
  if cache is None:
    call = lambda blk, h: blk(h, theta, mask)  # noqa: E731
    step = nnx.remat(call) if remat else call
    for blk in blocks:
      x = step(blk, x)
    return x
  call = lambda blk, h, c: blk(h, theta, mask, c)  # noqa: E731
  step = nnx.remat(call) if remat else call
  new = []
  for blk, c in zip(blocks, cache):
    x, c = step(blk, x, c)
    new.append(c)
  return x, new


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
