"""Step-by-step forward of the AC predictor with cached keys/values.

The AC predictor is frame-block causal: the tokens of time step t attend to every token of the
steps <= t and to nothing later. A step-wise forward therefore never needs to recompute earlier
steps: each new step runs the predictor's blocks on its own `K + h*w` tokens only (K = 2
conditioning tokens, action and state) and attends to the keys/values cached from the steps
before. The functions below re-state the predictor's forward pass step by step with the
predictor's own submodules and parameters (per block: norm1 -> qkv -> RoPE -> attention over
cached + new keys -> proj -> MLP); they serve the planner's rollout and the training loss's
auto-regressive term, and are differentiable.

Cached keys/values are lists of segments per block; a segment is a `(keys, values)` pair
`[b, heads, L, head_dim]` where b is the batch or 1 (shared by the whole batch, broadcast without
being materialised). Queries, keys and values are kept head-major (`[B, heads, tokens,
head_dim]`): the many small per-head attention products then need no relayout.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vjepa_jax.models import rope
from vjepa_jax.models.ac_predictor import ACPredictor
from vjepa_jax.models.ac_predictor import sequence_angles

NUM_COND = 2  # action and state tokens per step (step-wise use runs without extrinsics)

Segment = tuple[jnp.ndarray, jnp.ndarray]
Cache = list[list[Segment]]


def step_angles(predictor: ACPredictor, step: int) -> jnp.ndarray:
  """RoPE angles `[K + h*w, hd]` of the tokens of time step `step`."""
  n = NUM_COND + predictor.tokens_per_frame
  return sequence_angles(predictor.cfg, step + 1, NUM_COND)[step * n:]


def embed_step(predictor: ACPredictor, frame: jnp.ndarray, action: jnp.ndarray,
               state: jnp.ndarray) -> jnp.ndarray:
  """Input tokens of one step `[B, K + h*w, P]` = [action, state, frame tokens]."""
  return jnp.concatenate([predictor.action_encoder(action)[:, None],
                          predictor.state_encoder(state)[:, None],
                          predictor.predictor_embed(frame)], axis=1)


def qkv_heads(blk, x: jnp.ndarray, theta: jnp.ndarray):
  """Rotated queries, keys and values `[B, H, n, hd]` of a block for inputs `x` `[B, n, P]`."""
  b, n, _ = x.shape
  heads, hd = blk.attn.num_heads, blk.attn.head_dim
  qkv = blk.attn.qkv(blk.norm1(x)).reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
  th = theta[None, None]
  return rope.rotate(qkv[0], th), rope.rotate(qkv[1], th), qkv[2]


def attention_logits(q: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
  """`[B, H, n, L]` scaled logits in at least float32; `k` may have batch 1 (shared)."""
  acc = jnp.promote_types(q.dtype, jnp.float32)
  scale = 1.0 / np.sqrt(q.shape[-1])
  if k.shape[0] == 1 and q.shape[0] != 1:
    out = jnp.einsum("bhqd,hkd->bhqk", q, k[0], preferred_element_type=acc)
  else:
    out = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=acc)
  return out * scale


def weighted_values(p: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
  if v.shape[0] == 1 and p.shape[0] != 1:
    return jnp.einsum("bhqk,hkd->bhqd", p, v[0])
  return jnp.einsum("bhqk,bhkd->bhqd", p, v)


def merge_heads(out: jnp.ndarray) -> jnp.ndarray:
  """`[B, H, n, hd]` -> `[B, n, H*hd]` (head-major features, as the fused projection expects)."""
  b, h, n, d = out.shape
  return out.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def attend(q: jnp.ndarray, segments: list[Segment]) -> jnp.ndarray:
  """Softmax attention of `q` `[B, H, n, hd]` over the concatenation of key/value segments.

  Segments with batch 1 are broadcast over B without being materialised.
  """
  logits = [attention_logits(q, k) for k, _ in segments]
  probs = jax.nn.softmax(jnp.concatenate(logits, axis=-1), axis=-1).astype(q.dtype)
  bounds = np.cumsum([lg.shape[-1] for lg in logits])[:-1]
  parts = jnp.split(probs, bounds, axis=-1)
  return sum(weighted_values(p, v) for p, (_, v) in zip(parts, segments))


def block_step(blk, x: jnp.ndarray, theta: jnp.ndarray, past: list[Segment],
               query_from: int = 0) -> tuple[jnp.ndarray, Segment]:
  """One predictor block on the tokens of one step.

  Args:
    blk: a `layers.Block` of the predictor.
    x: `[B, n, P]` residual stream of the step's tokens.
    theta: `[n, hd]` RoPE angles of those tokens.
    past: key/value segments of the earlier steps (block-causal: all fully visible).
    query_from: drop the first `query_from` tokens from the output (the last block does not need
      the conditioning tokens' outputs, only their keys/values).

  Returns:
    (`[B, n - query_from, P]` new residual stream, this step's (keys, values)).
  """
  q, k, v = qkv_heads(blk, x, theta)
  q, x = q[:, :, query_from:], x[:, query_from:]
  x = x + blk.attn.proj(merge_heads(attend(q, list(past) + [(k, v)])))
  return x + blk.mlp(blk.norm2(x)), (k, v)


def head_out(predictor: ACPredictor, x: jnp.ndarray) -> jnp.ndarray:
  return predictor.predictor_proj(predictor.predictor_norm(x))


def predict_step(predictor: ACPredictor, past: Cache, frame: jnp.ndarray, action: jnp.ndarray,
                 state: jnp.ndarray, step: int) -> tuple[jnp.ndarray, list[Segment]]:
  """Prediction of the next frame from one new step, attending to cached earlier steps.

  Args:
    predictor: the AC predictor.
    past: per block, key/value segments of steps `0 .. step-1` (empty lists at step 0).
    frame: `[B, h*w, D]` encoder tokens of the step's frame (layer-normed, as the predictor was
      trained on).
    action: `[B, A]`; state: `[B, A]`.
    step: the step's time index (RoPE position).

  Returns:
    (`[B, h*w, D]` raw prediction of frame `step + 1`, this step's key/value segment per block).
  """
  x = embed_step(predictor, frame, action, state)
  theta = step_angles(predictor, step)
  new = []
  last = len(predictor.predictor_blocks) - 1
  for i, blk in enumerate(predictor.predictor_blocks):
    x, kv = block_step(blk, x, theta, past[i], query_from=NUM_COND if i == last else 0)
    new.append(kv)
  return head_out(predictor, x), new


def continue_rollout(predictor: ACPredictor, past: Cache, frame: jnp.ndarray,
                     actions: jnp.ndarray, states: jnp.ndarray, first_step: int, num_steps: int,
                     normalize: Callable[[jnp.ndarray], jnp.ndarray]) -> list[jnp.ndarray]:
  """Auto-regressive rollout from cached steps: each prediction is the next step's frame.

  Args:
    predictor: the AC predictor.
    past: per block, key/value segments of steps `0 .. first_step-1` (e.g. from
      `ACPredictor(..., cache_steps=first_step)`).
    frame: `[B, h*w, D]` frame of step `first_step` (a normalised prediction).
    actions, states: `[B, >= first_step + num_steps, A]`, indexed by step.
    first_step: time index of `frame`.
    num_steps: predictions to make.
    normalize: applied to each raw prediction before it is returned and fed back.

  Returns:
    `num_steps` normalised predictions `[B, h*w, D]` of frames `first_step+1 ..`.
  """
  frames = []
  for n in range(first_step, first_step + num_steps):
    out, kv = predict_step(predictor, past, frame, actions[:, n], states[:, n], n)
    past = [p + [seg] for p, seg in zip(past, kv)]
    frame = normalize(out)
    frames.append(frame)
  return frames
