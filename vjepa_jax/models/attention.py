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
    implementation: "xla" (explicit einsums, logits and softmax in float32, a closed-form
      backward; with a NumPy mask of prefix form, such as the block-causal mask, the masked key
      tails are skipped, see `prefix_chunks`) or "cudnn" (`jax.nn.dot_product_attention` fused
      kernel, GPU only, bf16/fp16 inputs).

  Returns:
    `[B, N, H, hd]`.
  """
  if implementation == "cudnn":
    m = None if mask is None else jnp.asarray(mask)[None, None]
    return jax.nn.dot_product_attention(q, k, v, mask=m, implementation="cudnn")
  if implementation != "xla":
    raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, "
                     f"got {implementation!r}")
  heads_first = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731
  q, k, v = heads_first(q), heads_first(k), heads_first(v)
  chunks = prefix_chunks(mask) if isinstance(mask, np.ndarray) else None
  if chunks is None:
    return heads_first(_attention(q, k, v, None if mask is None else jnp.asarray(mask)))
  outs = []
  for start, stop, keys in chunks:
    sub = mask[start:stop, :keys]
    outs.append(_attention(q[:, :, start:stop], k[:, :, :keys], v[:, :, :keys],
                           None if sub.all() else jnp.asarray(sub)))
  return heads_first(jnp.concatenate(outs, axis=2))


MIN_CHUNK_ROWS = 128


def prefix_chunks(mask: np.ndarray, min_rows: int = MIN_CHUNK_ROWS):
  """Query chunks that skip the masked-out key tail, or None when that does not pay.

  When every query row may attend exactly a prefix of the keys (the block-causal mask of the AC
  predictor), queries are cut into runs of at least `min_rows` rows and each run attends only
  up to the longest prefix among its rows: the masked upper triangle of logits is never
  computed (about 40 % of the attention work of a 7-step sequence). Small runs would make the
  matmuls inefficient, hence the minimum.

  Returns:
    [(start, stop, keys)] per chunk, or None (mask not of prefix form, or no saving).
  """
  lengths = mask.sum(axis=1)
  n_keys = mask.shape[1]
  if not (mask == (np.arange(n_keys)[None, :] < lengths[:, None])).all():
    return None
  chunks, start = [], 0
  n = mask.shape[0]
  while start < n:
    stop = min(start + min_rows, n)
    # Extend the run over rows with the same prefix length (a whole frame block).
    while stop < n and lengths[stop] == lengths[stop - 1]:
      stop += 1
    if n - stop < min_rows // 2:
      stop = n
    chunks.append((start, stop, int(lengths[start:stop].max())))
    start = stop
  if len(chunks) == 1 or sum((b - a) * k for a, b, k in chunks) > 0.9 * n * n_keys:
    return None
  return chunks


def _attention_forward(q, k, v, mask):
  """q, k, v `[B, H, N, hd]` -> (out `[B, H, N, hd]`, probs `[B, H, N, N]` in v's dtype)."""
  acc = jnp.promote_types(q.dtype, jnp.float32)
  scale = np.asarray(1.0 / np.sqrt(q.shape[-1]), q.dtype)
  logits = jnp.einsum("bhqd,bhkd->bhqk", q * scale, k, preferred_element_type=acc)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(acc).min)
  e = jnp.exp(logits - logits.max(-1, keepdims=True))
  probs = (e * (1.0 / e.sum(-1, keepdims=True))).astype(v.dtype)
  return jnp.einsum("bhqk,bhkd->bhqd", probs, v), probs


# Autodiff of the softmax attention keeps several [B, H, N, N] intermediates and, on XLA:CPU,
# spends most of the attention backward in passes over them; the closed-form backward below
# keeps only the probabilities and touches them three times.
@jax.custom_vjp
def _attention(q, k, v, mask):
  return _attention_forward(q, k, v, mask)[0]


def _attention_fwd(q, k, v, mask):
  out, probs = _attention_forward(q, k, v, mask)
  return out, (q, k, v, probs, out, mask)


def _attention_bwd(res, d_out):
  q, k, v, probs, out, mask = res
  acc = jnp.promote_types(q.dtype, jnp.float32)
  scale = np.asarray(1.0 / np.sqrt(q.shape[-1]), acc)
  d_v = jnp.einsum("bhqk,bhqd->bhkd", probs, d_out)
  d_probs = jnp.einsum("bhqd,bhkd->bhqk", d_out, v, preferred_element_type=acc)
  row = jnp.sum(d_out.astype(acc) * out.astype(acc), -1, keepdims=True)
  d_logits = (probs.astype(acc) * (d_probs - row) * scale).astype(q.dtype)
  d_q = jnp.einsum("bhqk,bhkd->bhqd", d_logits, k)
  d_k = jnp.einsum("bhqk,bhqd->bhkd", d_logits, q)
  d_mask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
  return d_q, d_k, d_v, d_mask


_attention.defvjp(_attention_fwd, _attention_bwd)


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
