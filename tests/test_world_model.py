"""The predictor's key/value cache, the shared-context step and the rollout equal the AC
predictor run on the full sequence.

Uses the official tiny checkpoint (random weights far from init: non-zero biases, non-unit
LayerNorms), so every term of the cached forward (RoPE positions of each step, the block-causal
rule, the exact split of the shared rows' attention around the sampled action) is exercised.
float32, atol 1e-5.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vjepa2_tiny as fx
from vjepa_jax.models import layers
from vjepa_jax.models import world_model
from vjepa_jax.planning import poses
from weights_conversion import load_official_checkpoint

ATOL = 1e-5


@pytest.fixture(scope="module")
def predictor():
  return load_official_checkpoint(str(fx.CHECKPOINT), **fx.load_kwargs())["predictor"].module


def _inputs(predictor, batch, steps, shared_steps, seed=0):
  """Tokens/states shared across the batch; actions shared for the first `shared_steps`."""
  rng = np.random.default_rng(seed)
  hw, d, a = predictor.tokens_per_frame, predictor.cfg.embed_dim, predictor.cfg.action_dim
  tokens = np.repeat(rng.normal(size=(1, steps * hw, d)), batch, 0).astype(np.float32)
  states = np.repeat(rng.normal(size=(1, steps, a)) * 0.3, batch, 0).astype(np.float32)
  actions = (rng.normal(size=(batch, steps, a)) * 0.05).astype(np.float32)
  actions[:, :shared_steps] = actions[:1, :shared_steps]
  return tokens, actions, states


def _jit(predictor, fn):
  """`fn(predictor, *arrays)` compiled once (eager dispatch of many tiny ops is far slower)."""
  graphdef, state = nnx.split(predictor)
  compiled = jax.jit(lambda st, *a: fn(nnx.merge(graphdef, st), *a))
  return lambda *a: compiled(state, *a)


@pytest.mark.parametrize("history,horizon", [(0, 3), (1, 2)])
def test_cached_steps_equal_full_predictor(predictor, history, horizon):
  """Steps through the cache reproduce every frame block of the full call: rollout horizons 1..3
  from one context frame, and 1..2 after one history frame (whose keys/values are computed once
  at batch 1 and broadcast). The context step, whose tokens and state are shared while the
  actions are not, takes the shared-row path of the first block."""
  hw = predictor.tokens_per_frame
  steps = history + horizon
  tokens, actions, states = _inputs(predictor, 3, steps, history)
  c = history + 1

  def cached(model, tokens, actions, states):
    ctx = world_model.prepare_context(model, tokens[:1, :c * hw], states[:1, :c],
                                      actions[:1, :c - 1] if history else None)
    out, cache = model(ctx.frame, actions[:, c - 1:c], ctx.state[:, None], cache=ctx.cache)
    outs = [out]
    for s in range(c, steps):
      out, cache = model(tokens[:, s * hw:(s + 1) * hw], actions[:, s:s + 1],
                         states[:, s:s + 1], cache=cache)
      outs.append(out)
    return jnp.concatenate(outs, axis=1), cache.steps

  full = _jit(predictor, lambda m, *a: m(*a))(tokens, actions, states)
  got, cached_steps = _jit(predictor, cached)(tokens, actions, states)
  assert int(cached_steps) == steps
  for h in range(horizon):
    sl = slice((c - 1 + h) * hw, (c + h) * hw)
    np.testing.assert_allclose(got[:, h * hw:(h + 1) * hw], full[:, sl], atol=ATOL, rtol=0,
                               err_msg=f"horizon {h + 1}")


def test_shared_rows_equal_the_broadcast_block(predictor):
  """The first block's shared-row path equals the block run on the broadcast inputs, also with
  an adapter on the output projection (its kernel is folded in per head) and with history."""
  from vjepa_jax.train import lora
  lora.add_lora(predictor, (r"predictor_blocks\.0\.attn\.proj",), rank=2, alpha=4.0)
  try:
    proj = predictor.predictor_blocks[0].attn.proj
    proj.lora.lora_b[...] = jnp.asarray(
        np.random.default_rng(5).normal(size=proj.lora.lora_b[...].shape), jnp.float32)
    hw = predictor.tokens_per_frame
    tokens, actions, states = _inputs(predictor, 4, 2, 1, seed=3)

    def both(model, tokens, actions, states):
      ctx = world_model.prepare_context(model, tokens[:1, :hw], states[:1, :1])
      _, hist = model(tokens[:1, :hw], actions[:1, :1], states[:1, :1], cache=ctx.cache)
      frame, state = tokens[:1, hw:], states[:1, 1:]
      shared, _ = model(frame, actions[:, 1:], state, cache=hist)
      broadcast, _ = model(jnp.broadcast_to(frame, (4,) + frame.shape[1:]), actions[:, 1:],
                           jnp.broadcast_to(state, (4, 1, state.shape[-1])), cache=hist)
      return shared, broadcast

    shared, broadcast = _jit(predictor, both)(tokens, actions, states)
    np.testing.assert_allclose(shared, broadcast, atol=ATOL, rtol=0)
  finally:
    proj.lora = nnx.data(None)


def test_cache_with_extrinsics_equals_full_predictor(predictor):
  """With extrinsics (three conditioning tokens per step) the cached steps also equal the full
  call."""
  hw, a = predictor.tokens_per_frame, predictor.cfg.action_dim
  tokens, actions, states = _inputs(predictor, 2, 3, 0, seed=4)
  extr = (np.random.default_rng(7).normal(size=(2, 3, a - 1)) * 0.1).astype(np.float32)

  def cached(model, tokens, actions, states, extr):
    out, cache = model(tokens[:, :2 * hw], actions[:, :2], states[:, :2], extr[:, :2],
                       cache=model.empty_cache(extrinsics=True))
    last, _ = model(tokens[:, 2 * hw:], actions[:, 2:], states[:, 2:], extr[:, 2:], cache=cache)
    return jnp.concatenate([out, last], axis=1)

  full = _jit(predictor, lambda m, *x: m(*x))(tokens, actions, states, extr)
  np.testing.assert_allclose(_jit(predictor, cached)(tokens, actions, states, extr), full,
                             atol=ATOL, rtol=0)


def test_rollout_and_energy_equal_the_official_world_model_loop(predictor):
  """`world_model.rollout` == the official loop (predictor on all frames so far, keep the last
  frame, layer norm, integrate the pose), horizon 2, with and without context sharing; and the
  energy (samples rolled out in chunks of 2) == mean |last prediction - goal|."""
  hw, horizon = predictor.tokens_per_frame, 2
  tokens, actions, states = _inputs(predictor, 4, horizon, 0, seed=1)
  goal = np.asarray(layers.layer_norm_no_affine(jnp.asarray(tokens[0, hw:])))

  def both(model, tokens, actions, states):
    frames, pose_traj = tokens[:, :hw], states[:, :1]
    for h in range(horizon):
      z = layers.layer_norm_no_affine(model(frames, actions[:, :h + 1], pose_traj)[:, -hw:])
      frames = jnp.concatenate([frames, z], axis=1)
      pose_traj = jnp.concatenate(
          [pose_traj, poses.integrate_pose(pose_traj[:, -1:], actions[:, h:h + 1])], axis=1)
    ctx = world_model.prepare_context(model, tokens[:1, :hw], states[:1, :1])
    ours = [world_model.rollout(model, ctx, actions, poses.integrate_pose, share_context=share)
            for share in (True, False)]
    energy = world_model.rollout_energy(model, ctx, actions, goal, poses.integrate_pose, 2)
    return z, ours, energy

  want, ours, energy = _jit(predictor, both)(tokens, actions, states)
  for got in ours:
    # Autoregressive steps compound float32 round-off through the layer norms.
    np.testing.assert_allclose(got, want, atol=2 * ATOL, rtol=0)
  np.testing.assert_allclose(energy, np.abs(np.asarray(want) - goal).mean(axis=(1, 2)),
                             atol=1e-6, rtol=0)
  assert np.ptp(np.asarray(energy)) > 1e-4, "energies do not depend on the action"


def test_context_shape_errors(predictor):
  hw, d, a = predictor.tokens_per_frame, predictor.cfg.embed_dim, predictor.cfg.action_dim
  with pytest.raises(ValueError, match="context tokens"):
    world_model.prepare_context(predictor, jnp.zeros((1, hw + 1, d)), jnp.zeros((1, 1, a)))
  with pytest.raises(ValueError, match="context actions"):
    world_model.prepare_context(predictor, jnp.zeros((1, 2 * hw, d)), jnp.zeros((1, 2, a)))


def test_cache_misuse_is_refused(predictor):
  import dataclasses
  from vjepa_jax.models.ac_predictor import ACPredictor
  hw, d, a = predictor.tokens_per_frame, predictor.cfg.embed_dim, predictor.cfg.action_dim
  tokens, act, st = jnp.zeros((1, hw, d)), jnp.zeros((1, 1, a)), jnp.zeros((1, 1, a))
  _, cache = predictor(tokens, act, st, cache=predictor.empty_cache())
  with pytest.raises(ValueError, match="extrinsics must be given always or never"):
    predictor(tokens, act, st, jnp.zeros((1, 1, a - 1)), cache=cache)
  with pytest.raises(ValueError, match="cannot keep 2"):
    cache.first_steps(2)
  cfg = dataclasses.replace(predictor.cfg, is_frame_causal=False, depth=1)
  with pytest.raises(ValueError, match="frame-causal"):
    ACPredictor(cfg, rngs=nnx.Rngs(0))(tokens, act, st, cache=predictor.empty_cache())
  with pytest.raises(ValueError, match=r"actions must be \[B=3 or 1"):
    predictor(jnp.zeros((3, hw, d)), jnp.zeros((2, 1, a)), st)
