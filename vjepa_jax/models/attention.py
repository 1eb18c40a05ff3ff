"""Softmax attention over key/value segments, and the frame-block-causal mask.

One attention core serves every use of the models: the encoder and the full-sequence predictor
(one segment, optionally masked) and the step-wise predictor with a key/value cache (earlier
steps' segments plus the new step's own). Queries, keys and values are head-major
(`[B, H, tokens, hd]`): the many small per-head products then need no relayout.

A segment is a `(keys, values)` pair `[b, H, L, hd]` whose batch b is the queries' batch B or 1;
a batch-1 segment (keys/values shared by every query batch row, such as the context of a plan) is
broadcast without being materialised.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("xla", "cudnn")

Segment = tuple[jnp.ndarray, jnp.ndarray]


def dot_product_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray,
                          mask: np.ndarray | jnp.ndarray | None = None,
                          implementation: str = "xla") -> jnp.ndarray:
  """Scaled dot-product attention of one sequence with scale 1/sqrt(head_dim).

  Args:
    q, k, v: `[B, N, H, hd]`.
    mask: optional boolean `[N, N]` (True = may attend), shared by batch and heads.
    implementation: "xla" (`attend`: logits and softmax in float32, a closed-form backward; with
      a NumPy mask of prefix form, such as the block-causal mask, the masked key tails are
      skipped, see `prefix_chunks`) or "cudnn" (`jax.nn.dot_product_attention` fused kernel, GPU
      only, bf16/fp16 inputs).

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
  return heads_first(attend(heads_first(q), [(heads_first(k), heads_first(v))], mask))


def attend(q: jnp.ndarray, segments: Sequence[Segment],
           mask: np.ndarray | jnp.ndarray | None = None) -> jnp.ndarray:
  """Softmax attention of head-major queries over the concatenation of key/value segments.

  Args:
    q: `[B, H, n, hd]`.
    segments: `(keys, values)` pairs `[B or 1, H, L_i, hd]`.
    mask: optional boolean `[n, sum L_i]` (True = may attend). A NumPy mask of prefix form over a
      single segment runs in query chunks that skip the masked key tails (`prefix_chunks`).

  Returns:
    `[B, H, n, hd]`.
  """
  ks, vs = tuple(k for k, _ in segments), tuple(v for _, v in segments)
  chunks = (prefix_chunks(mask) if isinstance(mask, np.ndarray) and len(segments) == 1
            else None)
  if chunks is None:
    return _attend(q, ks, vs, None if mask is None else jnp.asarray(mask))
  outs = []
  for start, stop, keys in chunks:
    sub = mask[start:stop, :keys]
    outs.append(_attend(q[:, :, start:stop], (ks[0][:, :, :keys],), (vs[0][:, :, :keys],),
                        None if sub.all() else jnp.asarray(sub)))
  return jnp.concatenate(outs, axis=2)


def partial_attention(q: jnp.ndarray, segments: Sequence[Segment]
                      ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Attention over some of the keys, with what is needed to merge it with the rest.

  Returns:
    (`[B, H, n, hd]` attention output over `segments`, `[B, H, n]` log-sum-exp of the logits).
    Attention over these keys and others is `w * out + (1 - w) * out_other` with
    `w = sigmoid(lse - lse_other)`.
  """
  scores = jnp.concatenate([logits(q, k) for k, _ in segments], axis=-1)
  lse = jax.nn.logsumexp(scores, axis=-1)
  probs = jnp.exp(scores - lse[..., None]).astype(q.dtype)
  return _weighted_values(probs, tuple(v for _, v in segments)), lse


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


def _scale(q: jnp.ndarray, dtype) -> np.ndarray:
  return np.asarray(1.0 / np.sqrt(q.shape[-1]), dtype)


def logits(q: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
  """`[B, H, n, L]` scaled logits in at least float32; `q` or `k` may have batch 1 (shared)."""
  acc = jnp.promote_types(q.dtype, jnp.float32)
  q = q * _scale(q, q.dtype)
  if k.shape[0] == 1 and q.shape[0] != 1:
    return jnp.einsum("bhqd,hkd->bhqk", q, k[0], preferred_element_type=acc)
  if q.shape[0] == 1 and k.shape[0] != 1:
    return jnp.einsum("hqd,bhkd->bhqk", q[0], k, preferred_element_type=acc)
  return jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=acc)


def _split(x: jnp.ndarray, sizes: Sequence[int]) -> list[jnp.ndarray]:
  """Splits the key axis of `[B, H, n, sum(sizes)]` into the segments' parts."""
  if len(sizes) == 1:
    return [x]
  return jnp.split(x, np.cumsum(sizes)[:-1], axis=-1)


def _weighted_values(probs: jnp.ndarray, vs: Sequence[jnp.ndarray]) -> jnp.ndarray:
  out = None
  for p, v in zip(_split(probs, [v.shape[2] for v in vs]), vs):
    if v.shape[0] == 1 and p.shape[0] != 1:
      term = jnp.einsum("bhqk,hkd->bhqd", p, v[0])
    else:
      term = jnp.einsum("bhqk,bhkd->bhqd", p, v)
    out = term if out is None else out + term
  return out


def _forward(q, ks, vs, mask):
  """-> (out `[B, H, n, hd]`, probs `[B, H, n, L]` in the values' dtype)."""
  acc = jnp.promote_types(q.dtype, jnp.float32)
  scores = jnp.concatenate([logits(q, k) for k in ks], axis=-1)
  if mask is not None:
    scores = jnp.where(mask, scores, jnp.finfo(acc).min)
  e = jnp.exp(scores - scores.max(-1, keepdims=True))
  probs = (e * (1.0 / e.sum(-1, keepdims=True))).astype(vs[0].dtype)
  return _weighted_values(probs, vs), probs


# Autodiff of the softmax attention keeps several [B, H, n, L] intermediates and, on XLA:CPU,
# spends most of the attention backward in passes over them; the closed-form backward below
# keeps only the probabilities and touches them three times.
@jax.custom_vjp
def _attend(q, ks, vs, mask):
  return _forward(q, ks, vs, mask)[0]


def _attend_fwd(q, ks, vs, mask):
  out, probs = _forward(q, ks, vs, mask)
  return out, (q, ks, vs, probs, out, mask)


def _attend_bwd(res, d_out):
  q, ks, vs, probs, out, mask = res
  acc = jnp.promote_types(q.dtype, jnp.float32)
  row = jnp.sum(d_out.astype(acc) * out.astype(acc), -1, keepdims=True)
  d_q = jnp.zeros_like(q)
  d_ks, d_vs = [], []
  for p, k, v in zip(_split(probs, [k.shape[2] for k in ks]), ks, vs):
    if k.shape[0] == 1 and q.shape[0] != 1:
      d_p = jnp.einsum("bhqd,hkd->bhqk", d_out, v[0], preferred_element_type=acc)
      d_l = (p.astype(acc) * (d_p - row) * _scale(q, acc)).astype(q.dtype)
      d_q = d_q + jnp.einsum("bhqk,hkd->bhqd", d_l, k[0])
      d_ks.append(jnp.einsum("bhqk,bhqd->hkd", d_l, q)[None])
      d_vs.append(jnp.einsum("bhqk,bhqd->hkd", p, d_out)[None])
    else:
      d_p = jnp.einsum("bhqd,bhkd->bhqk", d_out, v, preferred_element_type=acc)
      d_l = (p.astype(acc) * (d_p - row) * _scale(q, acc)).astype(q.dtype)
      d_q = d_q + jnp.einsum("bhqk,bhkd->bhqd", d_l, k)
      d_ks.append(jnp.einsum("bhqk,bhqd->bhkd", d_l, q))
      d_vs.append(jnp.einsum("bhqk,bhqd->bhkd", p, d_out))
  d_mask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
  return d_q, tuple(d_ks), tuple(d_vs), d_mask


_attend.defvjp(_attend_fwd, _attend_bwd)


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
