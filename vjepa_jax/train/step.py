"""The sharded V-JEPA 2-AC train step: `train_step(state, frozen, batch) -> state, metrics`."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from vjepa_jax import preprocess
from vjepa_jax.models import vit
from vjepa_jax.train import loss as loss_lib
from vjepa_jax.train import optim


class TrainState(NamedTuple):
  step: jax.Array        # int32 [], number of updates applied
  trainable: Any         # nnx.State of the parameters that train
  opt_state: Any         # optax state of `trainable`
  rng: jax.Array         # uint32 [2] base key; step keys are fold_in(rng, step)


def make_train_step(graphdef, mode: str, rest, cfg: ml_collections.ConfigDict,
                    tx: optax.GradientTransformation):
  """Builds the step for a world model split as (graphdef, trainable, frozen, rest).

  The frozen encoder runs outside `value_and_grad` (no gradients, no activations kept for it)
  except in `lora_encoder` mode, where its adapters train.
  """
  lr_fn, wd_fn = optim.schedules(cfg.optim)
  lcfg = cfg.loss
  has_rngs = len(jax.tree.leaves(rest)) > 0

  def build(trainable, frozen, key):
    model = nnx.merge(graphdef, trainable, frozen, rest)
    if has_rngs:
      nnx.reseed(model, dropout=key)
    return model

  def train_step(state: TrainState, frozen, batch: dict):
    key = jax.random.fold_in(state.rng, state.step)
    dtype = jnp.dtype(cfg.model.dtype)
    # Clips may arrive at their crop size (data.resize_on_host=False): resize on the device.
    video = preprocess.model_input(batch["video"], cfg.data.image_size, "ac", dtype)
    actions = batch["actions"].astype(jnp.float32)
    states = batch["states"].astype(jnp.float32)

    def encode(model):
      return loss_lib.targets(lambda v: vit.encode_frames(model.encoder, v), video,
                              lcfg.normalize_reps)

    if mode != "lora_encoder":
      h = jax.lax.stop_gradient(encode(build(state.trainable, frozen, key)))

    def loss_fn(trainable):
      model = build(trainable, frozen, key)
      targets = encode(model) if mode == "lora_encoder" else h
      out = loss_lib.ac_losses(model.predictor, targets, actions, states,
                               model.predictor.tokens_per_frame, lcfg.auto_steps, lcfg.loss_exp,
                               lcfg.normalize_reps)
      return out["loss"], out

    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if cfg.skip_nonfinite:
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa
      trainable = keep(trainable, state.trainable)
      opt_state = keep(opt_state, state.opt_state)
    metrics = {"loss": loss, "jloss": out["jloss"], "sloss": out["sloss"],
               "grad_norm": grad_norm, "param_norm": optax.global_norm(trainable),
               "lr": lr_fn(state.step + 1), "wd": wd_fn(state.step + 1),
               "finite": finite}
    return TrainState(state.step + 1, trainable, opt_state, state.rng), metrics

  return train_step
