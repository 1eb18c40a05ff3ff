"""Numeric parity of the Flax encoder and AC predictor with the official PyTorch code.

Goldens were produced by the official code on a tiny random model (tests/fixtures/vjepa2_tiny);
float32 runs are compared at the README's tolerance (5e-5 on O(1) tokens) and a float64 run at
1e-9, which only an exact re-statement of the official graph can reach.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vjepa2_tiny as fx
from vjepa_jax.models import attention
from vjepa_jax.models import encode_frames
from vjepa_jax.models import layers
from vjepa_jax.models import params
from vjepa_jax.models import pretrained
from vjepa_jax.models import rope
from weights_conversion import load_official_checkpoint

ATOL32 = 5e-5


@pytest.fixture(scope="module")
def models():
  return load_official_checkpoint(str(fx.CHECKPOINT), **fx.load_kwargs())


def test_encoder_square_clip(models):
  g = fx.goldens()
  out = models["encoder"](fx.to_bthwc(g["enc_clip"]))
  np.testing.assert_allclose(out, g["enc_out"], atol=ATOL32, rtol=0)


def test_encoder_nonsquare_odd_frames(models):
  """Odd frame count: the last frame is dropped; RoPE rows/cols follow the real grid."""
  g = fx.goldens()
  out = models["encoder"](fx.to_bthwc(g["enc_clip_nonsquare"]))
  np.testing.assert_allclose(out, g["enc_out_nonsquare"], atol=ATOL32, rtol=0)


def test_encoder_masked_forward(models):
  g = fx.goldens()
  out = models["encoder"](fx.to_bthwc(g["enc_clip"]), keep=g["enc_mask_keep"])
  np.testing.assert_allclose(out, g["enc_out_masked"], atol=ATOL32, rtol=0)


def test_per_frame_encoding_for_ac_targets(models):
  g = fx.goldens()
  raw = encode_frames(models["encoder"].module, jnp.asarray(fx.to_bthwc(g["enc_clip"])))
  np.testing.assert_allclose(raw, g["frames_enc_raw"], atol=ATOL32, rtol=0)
  np.testing.assert_allclose(layers.layer_norm_no_affine(raw), g["frames_enc_norm"], atol=ATOL32,
                             rtol=0)


def test_predictor_without_and_with_extrinsics(models):
  g = fx.goldens()
  pred = models["predictor"]
  out = pred(g["pred_tokens"], g["pred_actions"], g["pred_states"])
  np.testing.assert_allclose(out, g["pred_out"], atol=ATOL32, rtol=0)
  out_e = pred(g["pred_tokens"], g["pred_actions"], g["pred_states"], g["pred_extrinsics"])
  np.testing.assert_allclose(out_e, g["pred_out_extr"], atol=ATOL32, rtol=0)
  assert np.abs(np.asarray(out_e) - np.asarray(out)).max() > 1e-3, "extrinsics had no effect"


def test_rope_alone_matches_official_rotation():
  g = fx.goldens()
  x, pos = g["rope_x"], g["rope_pos"]
  theta = pos[:, None] * rope._slice_frequencies(x.shape[-1], "official", jnp.float32)
  np.testing.assert_allclose(rope.rotate(jnp.asarray(x), theta), g["rope_out"], atol=1e-6)
  fixed = pos[:, None] * rope._slice_frequencies(x.shape[-1], "interleaved", jnp.float32)
  assert np.abs(np.asarray(rope.rotate(jnp.asarray(x), fixed)) - g["rope_out"]).max() > 1e-2


def test_block_causal_mask_matches_official():
  g = fx.goldens()
  tpf = fx.meta()["training"]["tokens_per_frame"]
  for key, k in (("pred_attn_mask", 2), ("pred_attn_mask_extr", 3)):
    n = g[key].shape[0]
    mask = attention.block_causal_mask(n // (tpf + k), tpf + k)
    np.testing.assert_array_equal(mask, g[key])


def test_rope_layout_split_and_unrotated_tail():
  """hd=64 -> slices of 20 (4 free dims); hd=80 -> 26 (2 free dims), as the official code."""
  assert rope.slice_width(64) == 20 and rope.slice_width(80) == 26
  theta = rope.angles((np.array([3.0]), np.array([5.0]), np.array([7.0])), 64)
  assert theta.shape == (1, 64)
  np.testing.assert_array_equal(theta[0, 60:], 0.0)
  assert np.all(np.asarray(theta[0, 1:60]) != 0.0)


@pytest.fixture(scope="module")
def models_f64():
  with jax.enable_x64(True):
    ckpt = params.load_torch_file(str(fx.CHECKPOINT))
    conv = params.convert_checkpoint(ckpt, **fx.load_kwargs())
    out = {}
    for kind, (cfg, flat) in conv.items():
      flat64 = {p: np.asarray(v, np.float64) for p, v in flat.items()}
      out[kind] = pretrained.build_model(kind, cfg.replace(dtype="float64"), flat64)
    yield out


def test_float64_parity_is_exact(models_f64):
  """In float64 the port must equal the official graph to round-off (1e-9)."""
  g, g64 = fx.goldens(), fx.goldens_f64()
  with jax.enable_x64(True):
    f64 = lambda k: jnp.asarray(g[k], jnp.float64)  # noqa: E731
    enc, pred = models_f64["encoder"], models_f64["predictor"]
    clip = jnp.asarray(fx.to_bthwc(g["enc_clip"]), jnp.float64)
    checks = {
        "enc_out": enc(clip),
        "enc_out_nonsquare": enc(jnp.asarray(fx.to_bthwc(g["enc_clip_nonsquare"]), jnp.float64)),
        "enc_out_masked": enc(clip, keep=jnp.asarray(g["enc_mask_keep"])),
        "frames_enc_raw": encode_frames(enc, clip),
        "pred_out": pred(f64("pred_tokens"), f64("pred_actions"), f64("pred_states")),
        "pred_out_extr": pred(f64("pred_tokens"), f64("pred_actions"), f64("pred_states"),
                              f64("pred_extrinsics")),
    }
    checks["frames_enc_norm"] = layers.layer_norm_no_affine(checks["frames_enc_raw"])
    theta = f64("rope_pos")[:, None] * rope._slice_frequencies(g["rope_x"].shape[-1], "official",
                                                                jnp.float64)
    checks["rope_out"] = rope.rotate(f64("rope_x"), theta)
    for name, value in checks.items():
      assert value.dtype == jnp.float64, name
      np.testing.assert_allclose(value, g64[name], atol=1e-9, rtol=0, err_msg=name)
