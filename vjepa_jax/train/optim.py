"""AdamW with the official V-JEPA 2-AC schedules and weight-decay rule, in optax.

Matches `torch.optim.AdamW` as the official recipe drives it: schedules are stepped once before
each update with a 1-based counter; decoupled weight decay multiplied by the learning rate; decay
only on tensors with ndim > 1 (biases and LayerNorm parameters are 1-D).
"""
from __future__ import annotations

import math
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


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW(betas, eps) + scheduled decoupled decay + WSD LR, optional global-norm clipping."""
  lr_fn, wd_fn = schedules(cfg)
  parts = []
  if cfg.get("clip_grad_norm"):
    parts.append(optax.clip_by_global_norm(cfg.clip_grad_norm))
  parts += [
      optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
      # Adding wd(s) * p before the -lr(s) scale is exactly torch's decoupled decay
      # `p *= 1 - lr * wd` followed by the Adam step. optax counts from 0, the official
      # schedules from 1.
      optax.add_decayed_weights(lambda count: wd_fn(count + 1), mask=decay_mask),
      optax.scale_by_schedule(lambda count: -lr_fn(count + 1)),
  ]
  return optax.chain(*parts)


def check(cfg: ml_collections.ConfigDict) -> list[str]:
  """Problems with the `optim` block, all of them (empty when it is usable)."""
  errors = []
  if not cfg.lr > 0:
    errors.append(f"optim.lr must be > 0, got {cfg.lr}")
  for name in ("start_lr", "final_lr", "weight_decay", "final_weight_decay", "clip_grad_norm"):
    if cfg.get(name, 0.0) < 0:
      errors.append(f"optim.{name} must be >= 0, got {cfg[name]}")
  for name in ("start_lr", "final_lr"):
    if cfg[name] > cfg.lr:
      errors.append(f"optim.{name} {cfg[name]} is above the peak optim.lr {cfg.lr}")
  if cfg.total_steps < 1:
    errors.append(f"optim.total_steps must be >= 1, got {cfg.total_steps}")
  for name in ("warmup_steps", "anneal_steps"):
    if cfg[name] < 0:
      errors.append(f"optim.{name} must be >= 0, got {cfg[name]}")
  if cfg.warmup_steps + cfg.anneal_steps > cfg.total_steps:
    errors.append(f"optim.warmup_steps {cfg.warmup_steps} + anneal_steps {cfg.anneal_steps} "
                  f"exceed total_steps {cfg.total_steps}")
  for name in ("b1", "b2"):
    if not 0 <= cfg[name] < 1:
      errors.append(f"optim.{name} must be in [0, 1), got {cfg[name]}")
  if not cfg.eps > 0:
    errors.append(f"optim.eps must be > 0, got {cfg.eps}")
  return errors


def default_config() -> ml_collections.ConfigDict:
  """The official droid-256px-8f recipe: 315 epochs x 300 iterations, warmup/anneal 15 epochs."""
  c = ml_collections.ConfigDict()
  c.lr = 4.25e-4
  c.start_lr = 7.5e-5
  c.final_lr = 0.0
  c.warmup_steps = 15 * 300
  c.anneal_steps = 15 * 300
  c.total_steps = 315 * 300  # the run's length: training stops here
  c.weight_decay = 0.04
  c.final_weight_decay = 0.04
  c.b1 = 0.9
  c.b2 = 0.999
  c.eps = 1e-8
  c.clip_grad_norm = 0.0
  return c
