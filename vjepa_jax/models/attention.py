"""Multi-head attention with one implementation switch, and the frame-block-causal mask."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("xla", "cudnn")


def dot_product_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray,
                          mask: np.ndarray | jnp.ndarray | None = None,
                          implementation: str = "xla") -> jnp.ndarray:
  """Scaled dot-product attention with scale 1/sqrt(head_dim).

  Args:
    q, k, v: `[B, N, H, hd]`.
    mask: optional boolean `[N, N]` (True = may attend), shared by batch and heads.
    implementation: "xla" (explicit einsum; logits and softmax in float32) or "cudnn"
      (`jax.nn.dot_product_attention` fused kernel, GPU only, bf16/fp16 inputs).

  Returns:
    `[B, N, H, hd]`.
  """
  if implementation == "cudnn":
    m = None if mask is None else jnp.asarray(mask)[None, None]
    return jax.nn.dot_product_attention(q, k, v, mask=m, implementation="cudnn")
  if implementation != "xla":
    raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, "
                     f"got {implementation!r}")
  scale = 1.0 / np.sqrt(q.shape[-1])
  acc = jnp.promote_types(q.dtype, jnp.float32)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=acc) * scale
  if mask is not None:
    logits = jnp.where(jnp.asarray(mask)[None, None], logits, jnp.finfo(logits.dtype).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


@functools.lru_cache(maxsize=64)
def block_causal_mask(num_steps: int, tokens_per_step: int) -> np.ndarray:
  """Frame-block-causal mask `[S, S]`, S = num_steps * tokens_per_step (True = may attend).

  Every token of step t sees all tokens of steps <= t (bidirectional inside its own step). Built
  once per shape from the block structure; the result is a constant folded into the compiled
  program.
  """
  step = np.arange(num_steps * tokens_per_step) // tokens_per_step
  mask = step[:, None] >= step[None, :]
  mask.setflags(write=False)
  return mask
