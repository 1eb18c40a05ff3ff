"""Autoregressive world-model rollout with cached keys/values and a shared context.

A rollout never recomputes earlier steps: each new step runs the predictor's blocks on its own
tokens only and attends to the keys/values cached from the steps before (`ac_stepwise`).

When many candidate actions are rolled out from one observation (CEM samples), the context is
shared:

- history steps (known frames, states and actions before the current one) do not depend on the
  sample at all; their keys/values are computed once at batch 1 and broadcast, never copied;
- the current step holds the sampled action next to the shared state and frame tokens. Inside a
  step attention is bidirectional, so from block 1 on every token depends on the sampled action.
  In block 0 only the action token does: the shared tokens' embedding, norm and q/k/v are
  computed once, and their attention output is factored exactly as
  `out_i = (1 - b_i) * A_i + b_i * v_a` per head, where `A_i` is the attention over the shared
  keys (computed once), `v_a` the action token's value and `b_i = sigmoid(l_ia - lse_i)` the weight
  of the action key (`l_ia` its logit, `lse_i` the log-sum-exp of the shared logits). Because the
  output projection is linear, block 0's attention and projection cost per sample reduce to
  `O(tokens * heads * width)` instead of two `width x width` matmuls per token.

Everything here is a pure function of an `ACPredictor` module and arrays, traced inside the
planner's jitted step; history segments have batch 1 and are broadcast over the samples.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vjepa_jax.models import layers
from vjepa_jax.models import ac_stepwise as sw
from vjepa_jax.models.ac_predictor import ACPredictor


class Context(NamedTuple):
  """What one plan computes once and shares across all samples.

  Attributes:
    prefix: per block, the key/value segments (batch 1) of the history steps.
    step: time index of the current (context) step, whose action is sampled.
    x_shared: `[1, 1+hw, P]` residual stream of the current step's state and frame tokens after
      block 0's attention, without the sampled action's contribution.
    q_shared, k_shared, v_shared: `[1, H, 1+hw, hd]` block-0 rotated queries/keys/values of
      those tokens.
    lse_shared: `[H, 1+hw]` log-sum-exp of their block-0 attention logits over all shared keys.
    proj_shared: `[1+hw, H, P]` each head's block-0 attention output over the shared keys,
      projected by that head's slice of `attn.proj`.
  """
  prefix: list
  step: int
  x_shared: jnp.ndarray
  q_shared: jnp.ndarray
  k_shared: jnp.ndarray
  v_shared: jnp.ndarray
  lse_shared: jnp.ndarray
  proj_shared: jnp.ndarray


def _dense(lin) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Effective kernel `[in, out]` and bias of a `layers.Linear` (LoRA folded in)."""
  kernel = lin.kernel[...].astype(lin.dtype)
  if lin.lora is not None:
    a = lin.lora.lora_a[...].astype(lin.dtype)
    b = lin.lora.lora_b[...].astype(lin.dtype)
    kernel = kernel + (a @ b) * jnp.asarray(lin.lora.scale, lin.dtype)
  bias = jnp.zeros((kernel.shape[1],), lin.dtype) if lin.bias is None else lin.bias[...]
  return kernel, bias.astype(lin.dtype)


def check_context(predictor: ACPredictor, tokens, states, actions) -> int:
  """Validates the predictor and the shapes of a context; returns the context's step count."""
  if not predictor.cfg.is_frame_causal:
    raise ValueError("step-wise rollout needs a frame-causal predictor (is_frame_causal=True): "
                     "without the block-causal mask later steps change earlier ones")
  hw, d, a = predictor.tokens_per_frame, predictor.cfg.embed_dim, predictor.cfg.action_dim
  if tokens.ndim != 3 or tokens.shape[0] != 1 or tokens.shape[1] % hw or tokens.shape[2] != d:
    raise ValueError(f"context tokens must be [1, T*{hw}, {d}], got {tuple(tokens.shape)}")
  t = tokens.shape[1] // hw
  if t < 1:
    raise ValueError("the context needs at least one frame")
  if tuple(states.shape) != (1, t, a):
    raise ValueError(f"context states must be [1, {t}, {a}], got {tuple(states.shape)}")
  want = (1, t - 1, a)
  if (actions is None and t > 1) or (actions is not None and tuple(actions.shape) != want):
    raise ValueError(f"context actions must be [1, {t - 1}, {a}] (the actions between the "
                     f"{t} context frames), got {None if actions is None else actions.shape}")
  return t


def prepare_context(predictor: ACPredictor, tokens: jnp.ndarray, states: jnp.ndarray,
                    actions: jnp.ndarray | None = None) -> Context:
  """Computes everything about the context that does not depend on the sampled action.

  Args:
    predictor: the AC predictor.
    tokens: `[1, T*h*w, D]` layer-normed encoder tokens of the T context frames (the last one is
      the current observation).
    states: `[1, T, A]` their poses.
    actions: `[1, T-1, A]` the actions taken between them (None for T = 1, the official
      planner's single-frame context).

  Returns:
    A `Context` for `context_step`.
  """
  t = check_context(predictor, tokens, states, actions)
  hw = predictor.tokens_per_frame
  prefix: sw.Cache = [[] for _ in predictor.predictor_blocks]
  for s in range(t - 1):
    _, kv = sw.predict_step(predictor, prefix, tokens[:, s * hw:(s + 1) * hw], actions[:, s],
                         states[:, s], s)
    for i, seg in enumerate(kv):
      prefix[i].append(seg)
  step = t - 1
  blk = predictor.predictor_blocks[0]
  x = jnp.concatenate([predictor.state_encoder(states[:, step])[:, None],
                       predictor.predictor_embed(tokens[:, step * hw:])], axis=1)
  q, k, v = sw.qkv_heads(blk, x, sw.step_angles(predictor, step)[1:])
  logits = jnp.concatenate([sw.attention_logits(q, kp) for kp, _ in prefix[0]]
                           + [sw.attention_logits(q, k)], axis=-1)
  lse = jax.nn.logsumexp(logits, axis=-1)  # [1, H, n]
  out = sw.attend(q, prefix[0] + [(k, v)])  # [1, H, n, hd]
  kernel, bias = _dense(blk.attn.proj)
  heads, hd = blk.attn.num_heads, blk.attn.head_dim
  proj = jnp.einsum("hnd,hdp->nhp", out[0], kernel.reshape(heads, hd, -1))
  x_shared = x + bias + proj.sum(axis=1)[None]
  return Context(prefix=prefix, step=step, x_shared=x_shared, q_shared=q, k_shared=k, v_shared=v,
                 lse_shared=lse[0], proj_shared=proj)


def context_step(predictor: ACPredictor, ctx: Context,
                 action: jnp.ndarray) -> tuple[jnp.ndarray, list[list[sw.Segment]]]:
  """Predictions for a batch of actions taken at the context step.

  Args:
    predictor: the AC predictor.
    ctx: from `prepare_context`.
    action: `[B, A]` candidate actions.

  Returns:
    (`[B, h*w, D]` raw predictions of the next frame, per block the key/value segments of the
    context step; block 0 has two, the shared tokens' (batch 1) and the action token's).
  """
  blocks = predictor.predictor_blocks
  blk = blocks[0]
  theta = sw.step_angles(predictor, ctx.step)
  xa = predictor.action_encoder(action)[:, None]  # [B, 1, P]
  qa, ka, va = sw.qkv_heads(blk, xa, theta[:1])
  shared = (ctx.k_shared, ctx.v_shared)
  # The action token's own row: ordinary attention over the prefix, itself and the shared tokens.
  out_a = sw.attend(qa, ctx.prefix[0] + [(ka, va), shared])
  xa = xa + blk.attn.proj(sw.merge_heads(out_a))
  # The shared rows: the sampled action only adds one key; fold it in exactly (module docstring).
  kernel, _ = _dense(blk.attn.proj)
  heads, hd = blk.attn.num_heads, blk.attn.head_dim
  acc = jnp.promote_types(ka.dtype, jnp.float32)
  la = jnp.einsum("hnd,bhd->bhn", ctx.q_shared[0], ka[:, :, 0],
                  preferred_element_type=acc) * (1.0 / np.sqrt(hd))
  weight = jax.nn.sigmoid(la - ctx.lse_shared[None]).astype(xa.dtype)  # [B, H, n]
  proj_va = jnp.einsum("bhd,hdp->bhp", va[:, :, 0], kernel.reshape(heads, hd, -1))
  xs = (ctx.x_shared + jnp.einsum("bhn,bhp->bnp", weight, proj_va)
        - jnp.einsum("bhn,nhp->bnp", weight, ctx.proj_shared))
  x = jnp.concatenate([xa, xs], axis=1)
  x = x + blk.mlp(blk.norm2(x))
  new = [[(ka, va), shared]]
  last = len(blocks) - 1
  for i in range(1, len(blocks)):
    x, kv = sw.block_step(blocks[i], x, theta, ctx.prefix[i],
                          query_from=sw.NUM_COND if i == last else 0)
    new.append([kv])
  if last == 0:
    x = x[:, sw.NUM_COND:]
  return sw.head_out(predictor, x), new


def rollout(predictor: ACPredictor, ctx: Context, actions: jnp.ndarray, pose: jnp.ndarray,
            integrate, reuse_context: bool = True, context_frame: jnp.ndarray | None = None
            ) -> jnp.ndarray:
  """Rolls the world model out over a horizon for a batch of action sequences.

  Args:
    predictor: the AC predictor.
    ctx: from `prepare_context`.
    actions: `[B, H, A]` action sequences starting at the context step.
    pose: `[A]` pose at the context step.
    integrate: `(pose [B, A], action [B, A]) -> pose [B, A]`, the proprioceptive step.
    reuse_context: False recomputes the context step for every sample from `context_frame`
      (the official algorithm's cost; kept to measure what the sharing saves).
    context_frame: `[1, h*w, D]` tokens of the context frame, needed when `reuse_context` is
      False.

  Returns:
    `[B, h*w, D]` layer-normed prediction of the frame after the last action.
  """
  b, horizon, _ = actions.shape
  poses = jnp.broadcast_to(pose, (b, pose.shape[-1]))
  if reuse_context:
    pred, kv = context_step(predictor, ctx, actions[:, 0])
    past = [list(p) + seg for p, seg in zip(ctx.prefix, kv)]
  else:
    if context_frame is None:
      raise ValueError("reuse_context=False needs the context frame tokens")
    frame = jnp.broadcast_to(context_frame, (b,) + context_frame.shape[1:])
    pred, kv = sw.predict_step(predictor, ctx.prefix, frame, actions[:, 0], poses, ctx.step)
    past = [list(p) + [seg] for p, seg in zip(ctx.prefix, kv)]
  z = layers.layer_norm_no_affine(pred)
  for h in range(1, horizon):
    poses = integrate(poses, actions[:, h - 1])
    pred, kv = sw.predict_step(predictor, past, z, actions[:, h], poses, ctx.step + h)
    past = [p + [seg] for p, seg in zip(past, kv)]
    z = layers.layer_norm_no_affine(pred)
  return z
