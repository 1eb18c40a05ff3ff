"""The cached, context-sharing rollout (and the CEM energy on it) equals the AC predictor run on
the full sequence.

Uses the official tiny checkpoint (random weights far from init: non-zero biases, non-unit
LayerNorms), so every term of the step-wise re-statement (RoPE positions of each step, the
block-causal rule, the exact factorisation of block 0 around the sampled action, dropping the
conditioning tokens) is exercised. float32, atol 1e-5.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vjepa2_tiny as fx
from vjepa_jax.models import ac_stepwise
from vjepa_jax.models import layers
from vjepa_jax.planning import cem
from vjepa_jax.planning import poses
from vjepa_jax.planning import rollout
from weights_conversion import load_official_checkpoint

ATOL = 1e-5


@pytest.fixture(scope="module")
def predictor():
  return load_official_checkpoint(str(fx.CHECKPOINT), **fx.load_kwargs())["predictor"].module


def _inputs(predictor, batch, steps, shared_steps, seed=0):
  """Tokens/states shared across the batch; actions shared for the first `shared_steps`."""
  rng = np.random.default_rng(seed)
  hw, d = predictor.tokens_per_frame, predictor.cfg.embed_dim
  tokens = np.repeat(rng.normal(size=(1, steps * hw, d)), batch, 0).astype(np.float32)
  states = np.repeat(rng.normal(size=(1, steps, 7)) * 0.3, batch, 0).astype(np.float32)
  actions = (rng.normal(size=(batch, steps, 7)) * 0.05).astype(np.float32)
  actions[:, :shared_steps] = actions[:1, :shared_steps]
  return tokens, actions, states


def _jit(predictor, fn):
  """`fn(predictor, *arrays)` compiled once (eager dispatch of many tiny ops is far slower)."""
  graphdef, state = nnx.split(predictor)
  compiled = jax.jit(lambda st, *a: fn(nnx.merge(graphdef, st), *a))
  return lambda *a: compiled(state, *a)


@pytest.mark.parametrize("history,horizon", [(0, 3), (1, 2)])
def test_cached_steps_equal_full_predictor(predictor, history, horizon):
  """Teacher-forced steps through the cache reproduce every frame block of the full call, for
  rollout horizons 1..3 from one context frame, and 1..2 after one history frame (whose
  keys/values are computed once at batch 1 and broadcast)."""
  hw = predictor.tokens_per_frame
  steps = history + horizon
  tokens, actions, states = _inputs(predictor, 3, steps, history)
  c = history + 1

  def cached(model, tokens, actions, states):
    ctx = rollout.prepare_context(model, tokens[:1, :c * hw], states[:1, :c],
                                  actions[:1, :c - 1] if history else None)
    out, kv = rollout.context_step(model, ctx, actions[:, c - 1])
    outs = [out]
    past = [list(p) + seg for p, seg in zip(ctx.prefix, kv)]
    for s in range(c, steps):
      out, kv = ac_stepwise.predict_step(model, past, tokens[:, s * hw:(s + 1) * hw], actions[:, s],
                                     states[:, s], s)
      past = [p + [seg] for p, seg in zip(past, kv)]
      outs.append(out)
    return jnp.concatenate(outs, axis=1)

  full = _jit(predictor, lambda m, *a: m(*a))(tokens, actions, states)
  got = _jit(predictor, cached)(tokens, actions, states)
  for h in range(horizon):
    sl = slice((c - 1 + h) * hw, (c + h) * hw)
    np.testing.assert_allclose(got[:, h * hw:(h + 1) * hw], full[:, sl], atol=ATOL, rtol=0,
                               err_msg=f"horizon {h + 1}")


def test_rollout_and_energy_equal_the_official_world_model_loop(predictor):
  """`rollout.rollout` == the official loop (predictor on all frames so far, keep the last
  frame, layer norm, integrate the pose), horizon 2, with and without context sharing; and the
  CEM energy (samples rolled out in chunks of 2) == mean |last prediction - goal|."""
  hw, horizon = predictor.tokens_per_frame, 2
  tokens, actions, states = _inputs(predictor, 4, horizon, 0, seed=1)
  goal = np.asarray(layers.layer_norm_no_affine(jnp.asarray(tokens[0, hw:])))
  cfg = cem.default_config()
  cfg.sample_chunk = 2

  def both(model, tokens, actions, states):
    frames, pose_traj = tokens[:, :hw], states[:, :1]
    for h in range(horizon):
      z = layers.layer_norm_no_affine(model(frames, actions[:, :h + 1], pose_traj)[:, -hw:])
      frames = jnp.concatenate([frames, z], axis=1)
      pose_traj = jnp.concatenate(
          [pose_traj, poses.integrate_pose(pose_traj[:, -1:], actions[:, h:h + 1])], axis=1)
    ctx = rollout.prepare_context(model, tokens[:1, :hw], states[:1, :1])
    ours = [rollout.rollout(model, ctx, actions, states[0, 0], poses.integrate_pose,
                            reuse_context=reuse, context_frame=tokens[:1, :hw])
            for reuse in (True, False)]
    energy = cem.rollout_energy(model, ctx, actions, states[0, 0], goal, cfg)
    return z, ours, energy

  want, ours, energy = _jit(predictor, both)(tokens, actions, states)
  for got in ours:
    # Autoregressive steps compound float32 round-off through the layer norms.
    np.testing.assert_allclose(got, want, atol=2 * ATOL, rtol=0)
  np.testing.assert_allclose(energy, np.abs(np.asarray(want) - goal).mean(axis=(1, 2)),
                             atol=1e-6, rtol=0)
  assert np.ptp(np.asarray(energy)) > 1e-4, "energies do not depend on the action"


def test_context_shape_errors(predictor):
  hw, d = predictor.tokens_per_frame, predictor.cfg.embed_dim
  with pytest.raises(ValueError, match="context tokens"):
    rollout.prepare_context(predictor, jnp.zeros((1, hw + 1, d)), jnp.zeros((1, 1, 7)))
  with pytest.raises(ValueError, match="context actions"):
    rollout.prepare_context(predictor, jnp.zeros((1, 2 * hw, d)), jnp.zeros((1, 2, 7)))
