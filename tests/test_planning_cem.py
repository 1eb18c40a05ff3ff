"""The compiled CEM planner: official update rule, energy, bounds, sharding, and recovery of a
known optimum.

The update rule is checked against a NumPy re-statement of the official `cem` (same draws), and
the planner end to end on world models whose optimum is known by construction. (The energy is
checked against the official world-model loop in test_world_model.py.)
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh

import vjepa2_tiny as fx
from vjepa_jax.models import layers
from vjepa_jax.planning import cem
from vjepa_jax.planning import plan_function
from vjepa_jax.planning import space
from vjepa_jax.planning import default_config
from vjepa_jax.models import world_model
from vjepa_jax.planning import __main__ as cli
from weights_conversion import load_official_checkpoint


@pytest.fixture(scope="module")
def predictor():
  return load_official_checkpoint(str(fx.CHECKPOINT), **fx.load_kwargs())["predictor"].module


def _small(**kw):
  c = default_config()
  c.update(dict(samples=32, iterations=2, topk=4), **kw)
  return c


def _context(predictor, seed=0):
  rng = np.random.default_rng(seed)
  hw, d = predictor.tokens_per_frame, predictor.cfg.embed_dim
  norm = lambda x: np.asarray(layers.layer_norm_no_affine(jnp.asarray(x, jnp.float32)))  # noqa
  context = norm(rng.normal(size=(1, hw, d)))
  goal = norm(rng.normal(size=(hw, d)))
  states = (rng.normal(size=(1, 1, 7)) * 0.3).astype(np.float32)
  return context, states, goal


def _official_update(mean, std, actions, energies, cfg):
  """One official CEM update (mpc_utils.cem) in NumPy: top-k, unbiased std, momenta."""
  sel = actions[np.argsort(energies, kind="stable")[:cfg.topk]]
  m_sel, s_sel = sel.mean(0), sel.std(0, ddof=1)
  mm = np.array([cfg.momentum_mean] * 3 + [cfg.momentum_mean_gripper])
  ms = np.array([cfg.momentum_std] * 3 + [cfg.momentum_std_gripper])
  return m_sel * (1 - mm) + mean * mm, s_sel * (1 - ms) + std * ms


def test_update_rule_matches_official_restatement():
  """Three iterations on a quadratic energy equal the official rule applied to the same draws
  (momenta differ per component so a swapped momentum would show)."""
  cfg = _small(samples=50, iterations=3, topk=7, horizon=2, momentum_mean=0.25, momentum_std=0.95,
               momentum_mean_gripper=0.1, momentum_std_gripper=0.3)
  target = np.array([0.03, -0.02, 0.01, 0, 0, 0, 0.5], np.float32)
  energy_fn = lambda a: jnp.sum((a - target) ** 2, axis=(1, 2))  # noqa: E731
  key = jax.random.key(3)
  result = jax.jit(lambda k: cem.cem_search(energy_fn, k, cfg))(key)
  mean = np.zeros((2, 4), np.float32)
  std = np.tile(np.array([cfg.maxnorm] * 3 + [1.0], np.float32), (2, 1))
  for i in range(cfg.iterations):
    values = mean + std * np.asarray(cem.sample_noise(key, i, cfg))
    values[..., :3] = np.clip(values[..., :3], -cfg.maxnorm, cfg.maxnorm)
    values[..., 3:] = np.clip(values[..., 3:], -0.75, 0.75)
    actions = np.concatenate([values[..., :3], np.zeros(values.shape[:-1] + (3,)),
                              values[..., 3:]], -1)
    energies = ((actions - target) ** 2).sum((1, 2))
    acts4 = np.concatenate([actions[..., :3], actions[..., 6:]], -1)
    mean, std = _official_update(mean, std, acts4, energies, cfg)
  np.testing.assert_allclose(result.mean, mean, atol=1e-6)
  np.testing.assert_allclose(result.std, std, atol=1e-6)
  want = np.concatenate([mean[:, :3], np.zeros((2, 3)), np.where(np.abs(mean[:, 3:]) < 0.25, 0,
                                                                  mean[:, 3:])], -1)
  np.testing.assert_allclose(result.actions, want, atol=1e-6)


def test_final_action_rounds_small_gripper_and_zeroes_rotation():
  """|gripper| < 0.25 -> 0 (official rounding); unsearched rotations are 0 unless fixed."""
  cfg = default_config()
  mean = jnp.array([[0.01, 0.02, 0.03, 0.2], [0.01, 0.02, 0.03, -0.3]])
  out = np.asarray(space.final_action(mean, cfg))
  np.testing.assert_array_equal(out[:, 3:6], 0.0)
  np.testing.assert_allclose(out[:, :3], mean[:, :3])
  assert out[0, 6] == 0.0 and out[1, 6] == pytest.approx(-0.3)
  cfg.fixed_axes = ((4, 0.02),)
  np.testing.assert_allclose(np.asarray(space.final_action(mean, cfg))[:, 4], 0.02)


def test_to_actions_bounds_fixed_axes_and_close_gripper():
  cfg = default_config()
  cfg.update(horizon=3, fixed_axes=((2, 0.01),), close_gripper=1, search_rotation=True)
  values = jnp.full((5, 3, 7), 9.0)
  a = np.asarray(space.to_actions(values, cfg))
  np.testing.assert_allclose(a[..., :2], cfg.maxnorm)
  np.testing.assert_allclose(a[..., 2], 0.01)
  np.testing.assert_allclose(a[..., 3:6], cfg.rotation_maxnorm)
  np.testing.assert_allclose(a[:, 0, 6], cfg.gripper_max)
  np.testing.assert_allclose(a[:, 1:, 6], 1.0)


def test_config_errors():
  with pytest.raises(ValueError, match="topk"):
    cem.validate(_small(topk=1))
  with pytest.raises(ValueError, match="sample_chunk"):
    cem.validate(_small(sample_chunk=5))
  with pytest.raises(ValueError, match="unknown CEM preset"):
    default_config("fast")


def test_plan_shapes_bounds_and_sharding(predictor):
  """The compiled plan returns [H, 7] inside the bounds with zero rotations, and sharding the
  samples over 8 devices (rolled out in chunks) gives the same plan."""
  context, states, goal = _context(predictor)
  cfg = _small(horizon=1, sample_chunk=0)
  key = jax.random.key(0)
  result = plan_function.PlanFunction(predictor, cfg)(context, states, None, goal, key)
  actions = np.asarray(result.actions)
  assert actions.shape == (1, 7)
  assert np.all(np.abs(actions[:, :3]) <= cfg.maxnorm + 1e-7)
  assert np.all(np.abs(actions[:, 6]) <= cfg.gripper_max)
  np.testing.assert_array_equal(actions[:, 3:6], 0.0)
  assert np.all(np.isfinite(np.asarray(result.energies)))
  devices = np.array(jax.devices()[:8])
  if devices.size < 8:
    pytest.skip("needs 8 (simulated) devices")
  mesh = Mesh(devices, ("samples",))
  chunked = cfg.copy_and_resolve_references()
  chunked.sample_chunk = 16  # two samples per device in each chunk
  sharded = plan_function.PlanFunction(predictor, chunked, mesh=mesh)(context, states, None, goal, key)
  np.testing.assert_allclose(sharded.energies, result.energies, atol=1e-5)
  np.testing.assert_allclose(sharded.actions, result.actions, atol=1e-5)


def test_cem_recovers_the_action_that_produced_the_goal():
  """Goal = the model's own prediction under a known action, so the energy is exactly 0 there.

  CEM (paper settings with 200 samples and 6 iterations) must find that action's xyz direction
  with cosine > 0.9 (a random direction in 3-D exceeds 0.9 with probability 5 %), and the top-k
  energy must fall.
  """
  model = cli.random_tiny_models(seed=1, img_size=32)[1]
  rng = np.random.default_rng(0)
  context = np.asarray(layers.layer_norm_no_affine(jnp.asarray(
      rng.normal(size=(1, model.tokens_per_frame, model.cfg.embed_dim)), jnp.float32)))
  states = np.zeros((1, 1, 7), np.float32)
  true = np.array([0.05, -0.03, 0.04, 0, 0, 0, 0], np.float32)
  graphdef, params = nnx.split(model)

  @jax.jit
  def predict(params):
    m = nnx.merge(graphdef, params)
    ctx = world_model.prepare_context(m, context, states)
    return world_model.rollout(m, ctx, true[None, None], lambda p, a: p)[0]

  goal = predict(params)
  cfg = _small(samples=200, iterations=6, topk=10)
  plan = plan_function.PlanFunction(model, cfg)(context, states, None, goal, jax.random.key(0))
  got = np.asarray(plan.actions[0, :3])
  cos = got @ true[:3] / (np.linalg.norm(got) * np.linalg.norm(true[:3]))
  assert cos > 0.9, (got, true[:3], cos)
  assert float(plan.energies[-1]) < 0.5 * float(plan.energies[0])
