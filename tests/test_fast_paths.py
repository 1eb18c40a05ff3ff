"""The fast paths of the train step compute exactly the plain math.

Attention (closed-form backward, masked key tails skipped), the parameter-free layer norm
(closed-form backward), the rollout loss (cached keys/values) and the per-frame encoding (tubelet
kernel summed over time) each have a faster formulation than the textbook one (see their
modules). Each is checked against the textbook formulation, differentiated by JAX, in float64, so
a wrong term shows up far above round-off.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vjepa_jax.models import attention
from vjepa_jax.models import layers
from vjepa_jax.models import vit
from vjepa_jax.models.ac_predictor import ACPredictor
from vjepa_jax.models.configs import EncoderConfig
from vjepa_jax.models.configs import PredictorConfig
from vjepa_jax.train import loss as loss_lib


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def _reference_attention(q, k, v, mask):
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = jnp.where(mask[None, None], logits, -jnp.inf)
  return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


@pytest.mark.parametrize("steps,masked", [(3, False), (3, True), (7, True)])
def test_attention_backward_matches_autodiff(steps, masked):
  rng = np.random.default_rng(0)
  n = steps * 4
  q, k, v = (jnp.asarray(rng.normal(size=(2, n, 3, 8))) for _ in range(3))
  mask = attention.block_causal_mask(steps, 4) if masked else None
  weights = jnp.asarray(rng.normal(size=(2, n, 3, 8)))
  fast = jax.grad(lambda *a: jnp.sum(attention.dot_product_attention(*a, mask) * weights),
                  argnums=(0, 1, 2))(q, k, v)
  ref = jax.grad(lambda *a: jnp.sum(_reference_attention(*a, mask) * weights),
                 argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(fast, ref):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_segment_attention_backward_matches_autodiff():
  """Attention over a batch-1 (shared, broadcast) segment and a per-batch segment, as the
  cached rollout runs it, equals dense attention over the materialised concatenation, with its
  gradients (the shared segment's summed over the batch)."""
  rng = np.random.default_rng(5)
  b, h, n, d = 3, 2, 5, 8
  q = jnp.asarray(rng.normal(size=(b, h, n, d)))
  shared = [jnp.asarray(rng.normal(size=(1, h, 7, d))) for _ in range(2)]
  own = [jnp.asarray(rng.normal(size=(b, h, n, d))) for _ in range(2)]
  weights = jnp.asarray(rng.normal(size=(b, h, n, d)))

  def fast(q, ks, vs, ko, vo):
    return jnp.sum(attention.attend(q, [(ks, vs), (ko, vo)]) * weights)

  def ref(q, ks, vs, ko, vo):
    k = jnp.concatenate([jnp.broadcast_to(ks, (b,) + ks.shape[1:]), ko], axis=2)
    v = jnp.concatenate([jnp.broadcast_to(vs, (b,) + vs.shape[1:]), vo], axis=2)
    heads_last = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731
    out = _reference_attention(heads_last(q), heads_last(k), heads_last(v), None)
    return jnp.sum(heads_last(out) * weights)

  args = (q, *shared, *own)
  np.testing.assert_allclose(fast(*args), ref(*args), rtol=1e-12)
  for a, r in zip(jax.grad(fast, argnums=range(5))(*args), jax.grad(ref, argnums=range(5))(*args)):
    assert a.shape == r.shape
    np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-12)


def test_prefix_chunks_cover_every_attended_key():
  mask = attention.block_causal_mask(7, 66)
  chunks = attention.prefix_chunks(mask)
  assert chunks[0][0] == 0 and chunks[-1][1] == mask.shape[0]
  for (_, stop, _), (start, _, _) in zip(chunks, chunks[1:]):
    assert stop == start
  for start, stop, keys in chunks:
    assert not mask[start:stop, keys:].any()
    assert stop - start >= 66
  assert sum((b - a) * k for a, b, k in chunks) < 0.7 * mask.size
  assert attention.prefix_chunks(np.ones((300, 300), bool)) is None
  assert attention.prefix_chunks(~mask) is None


def test_layer_norm_backward_matches_autodiff():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(3.0, 2.0, size=(4, 5, 16)))
  w = jnp.asarray(rng.normal(size=(4, 5, 16)))

  def reference(x):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(jnp.var(x, -1, keepdims=True) + 1e-6)

  fast = jax.grad(lambda x: jnp.sum(layers.layer_norm_no_affine(x, 1e-6) * w))(x)
  ref = jax.grad(lambda x: jnp.sum(reference(x) * w))(x)
  np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(layers.layer_norm_no_affine(x, 1e-6), reference(x), atol=1e-12)


def test_gelu_is_exact_erf_gelu():
  x = jnp.linspace(-8.0, 8.0, 1001, dtype=jnp.float64)
  np.testing.assert_allclose(layers.gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-15)
  np.testing.assert_allclose(jax.grad(lambda x: layers.gelu(x).sum())(x),
                             jax.grad(lambda x: jax.nn.gelu(x, approximate=False).sum())(x),
                             atol=1e-14)


def test_encode_still_equals_the_repeated_frame_clip():
  cfg = EncoderConfig(img_size=32, patch_size=16, embed_dim=24, depth=1, num_heads=2,
                      mlp_hidden=48, dtype="float64")
  encoder = vit.VisionTransformer(cfg, rngs=nnx.Rngs(0))
  frames = jnp.asarray(np.random.default_rng(4).normal(size=(3, 32, 32, 3)))
  clips = jnp.repeat(frames[:, None], cfg.tubelet_size, axis=1)
  np.testing.assert_allclose(encoder.encode_still(frames), encoder(clips), atol=1e-12)


def _tiny_predictor(**kw) -> ACPredictor:
  cfg = PredictorConfig(img_size=32, patch_size=16, embed_dim=24, predictor_embed_dim=24,
                        depth=2, num_heads=2, mlp_hidden=48, dtype="float64")
  return ACPredictor(dataclasses.replace(cfg, **kw), rngs=nnx.Rngs(3))


@pytest.mark.parametrize("auto_steps", [2, 4])
def test_cached_rollout_loss_and_gradients_equal_recomputed(auto_steps):
  model = _tiny_predictor()
  rng = np.random.default_rng(2)
  b, t, hw, d = 2, 5, model.tokens_per_frame, model.cfg.embed_dim
  h = layers.layer_norm_no_affine(jnp.asarray(rng.normal(size=(b, t * hw, d))))
  actions = jnp.asarray(rng.normal(size=(b, t - 1, 7)))
  states = jnp.asarray(rng.normal(size=(b, t, 7)))
  graphdef, params = nnx.split(model)
  params = jax.tree.map(lambda x: x.astype(jnp.float64), params)

  def loss(params, cached):
    m = nnx.merge(graphdef, params)
    # A plain callable takes the official recomputing path.
    predictor = m if cached else (lambda z, a, s: m(z, a, s))
    out = loss_lib.ac_losses(predictor, h, actions, states, hw, auto_steps)
    return out["loss"], out

  # Compiled: dispatching the recomputing rollout's gradient op by op is far slower.
  grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (l_fast, o_fast), g_fast = grad(params, True)
  (l_ref, o_ref), g_ref = grad(params, False)
  np.testing.assert_allclose(l_fast, l_ref, rtol=1e-12)
  np.testing.assert_allclose(o_fast["z_ar"], o_ref["z_ar"], atol=1e-11)
  assert o_fast["z_ar"].shape == (b, auto_steps * hw, d)
  for a, r in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, r, rtol=1e-9, atol=1e-12)
