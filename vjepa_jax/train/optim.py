"""AdamW with the official V-JEPA 2-AC schedules and weight-decay rule, in optax.

Matches `torch.optim.AdamW` as the official recipe drives it: schedules are stepped once before
each update with a 1-based counter; decoupled weight decay multiplied by the learning rate; decay
only on tensors with ndim > 1 (biases and LayerNorm parameters are 1-D).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax


def wsd_lr(step, *, start_lr: float, ref_lr: float, final_lr: float, warmup_steps: int,
           anneal_steps: int, total_steps: int):
  """Warmup-stable-decay LR at 1-based scheduler step `step` (official `WSDSchedule`)."""
  step = jnp.asarray(step, jnp.float32)
  stable_end = total_steps - anneal_steps
  warm = start_lr + step / max(1, warmup_steps) * (ref_lr - start_lr)
  decay = ref_lr + (step - stable_end) / max(1, anneal_steps) * (final_lr - ref_lr)
  # A fused multiply-add can overshoot final_lr by ~1e-10 at the last step (a negative LR).
  decay = jnp.clip(decay, min(ref_lr, final_lr), max(ref_lr, final_lr))
  return jnp.where(step < warmup_steps, warm, jnp.where(step < stable_end, ref_lr, decay))


def cosine_wd(step, *, ref_wd: float, final_wd: float, total_steps: int):
  """Cosine weight-decay at 1-based step `step` (official `CosineWDSchedule`), clamped."""
  progress = jnp.asarray(step, jnp.float32) / total_steps
  wd = final_wd + (ref_wd - final_wd) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
  return jnp.maximum(wd, final_wd) if final_wd <= ref_wd else jnp.minimum(wd, final_wd)


def schedules(cfg: ml_collections.ConfigDict):
  """(lr_fn, wd_fn) of a 1-based step from the `optim` config block."""
  lr = lambda s: wsd_lr(s, start_lr=cfg.start_lr, ref_lr=cfg.lr, final_lr=cfg.final_lr,  # noqa
                        warmup_steps=cfg.warmup_steps, anneal_steps=cfg.anneal_steps,
                        total_steps=cfg.total_steps)
  wd = lambda s: cosine_wd(s, ref_wd=cfg.weight_decay, final_wd=cfg.final_weight_decay,  # noqa
                           total_steps=cfg.total_steps)
  return lr, wd


def decay_mask(params):
  """True for tensors that get weight decay: ndim > 1 (never biases or norm parameters)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


class _ScheduledDecayState(NamedTuple):
  count: jax.Array


def _decoupled_weight_decay(wd_fn, mask_fn) -> optax.GradientTransformation:
  """Adds wd(s) * p on masked tensors; with the -lr(s) scale after it this is exactly torch's
  `p *= 1 - lr * wd` followed by the Adam step."""

  def init(params):
    del params
    return _ScheduledDecayState(jnp.zeros([], jnp.int32))

  def update(updates, state, params):
    s = state.count + 1
    wd_over = wd_fn(s)
    mask = mask_fn(params)
    updates = jax.tree.map(lambda u, p, m: u + wd_over * p if m else u, updates, params, mask)
    return updates, _ScheduledDecayState(state.count + 1)

  return optax.GradientTransformation(init, update)


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW(betas, eps) + scheduled decoupled decay + WSD LR, optional global-norm clipping."""
  lr_fn, wd_fn = schedules(cfg)
  parts = []
  if cfg.get("clip_grad_norm"):
    parts.append(optax.clip_by_global_norm(cfg.clip_grad_norm))
  parts += [
      optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
      _decoupled_weight_decay(wd_fn, decay_mask),
      optax.scale_by_schedule(lambda count: -lr_fn(count + 1)),
  ]
  return optax.chain(*parts)


def default_config() -> ml_collections.ConfigDict:
  """The official droid-256px-8f recipe: 315 epochs x 300 iterations, warmup/anneal 15 epochs."""
  c = ml_collections.ConfigDict()
  c.lr = 4.25e-4
  c.start_lr = 7.5e-5
  c.final_lr = 0.0
  c.warmup_steps = 15 * 300
  c.anneal_steps = 15 * 300
  c.total_steps = 315 * 300
  c.weight_decay = 0.04
  c.final_weight_decay = 0.04
  c.b1 = 0.9
  c.b2 = 0.999
  c.eps = 1e-8
  c.clip_grad_norm = 0.0
  return c
