"""Export round trip: official checkpoint -> convert -> train 2 steps (full and LoRA) -> export ->
convert again. Proves the exported file has exactly the official key set, tensor shapes and
layout (those of the official fixture checkpoint), and that converting it back reproduces the
trained (LoRA-merged) predictor and the encoder."""
import functools

import numpy as np
import pytest
import torch

import train_tiny
import vjepa2_tiny as fx
from vjepa_jax.data import synthetic
from vjepa_jax.models import pretrained
from vjepa_jax.train import checkpoint as ckpt_lib
from vjepa_jax.train import trainer
from weights_conversion import convert
from weights_conversion import export
from weights_conversion import official


@functools.lru_cache(None)
def _fixture_state_dicts():
  ckpt = torch.load(fx.CHECKPOINT, map_location="cpu", weights_only=True)
  return {k: {n: tuple(t.shape) for n, t in ckpt[k].items()}
          for k in ("encoder", "predictor", "target_encoder")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("export")
  kw = fx.load_kwargs()
  converted = str(root / "converted")
  assert convert.main(["--checkpoint", str(fx.CHECKPOINT), "--output", converted,
                       "--encoder-num-heads", str(kw["encoder_num_heads"]),
                       "--predictor-num-heads", str(kw["predictor_num_heads"]),
                       "--img-size", str(kw["img_size"])]) == 0
  data = root / "droid" / "1.0.0"
  synthetic.main(["--out", str(data), "--episodes", "6", "--steps", "30", "40",
                  "--image-size", "48x64", "--seed", "5"])
  return root, converted, str(data), kw["img_size"]


def _train(root, converted, data, img, mode):
  cfg = train_tiny.tiny_config(
      data, mode=mode, num_steps=2, **{"checkpoint.every": 1, "init.converted": converted,
                                       "data.image_size": img, "model.predictor.img_size": img,
                                       "mesh.data": -1})
  workdir = str(root / f"run_{mode}")
  trainer.train(cfg, workdir)
  return workdir


@pytest.mark.parametrize("mode", [pytest.param("full", marks=pytest.mark.slow), "lora"])
def test_export_round_trip(inputs, mode):
  root, converted, data, img = inputs
  workdir = _train(root, converted, data, img, mode)
  out = str(root / f"model_{mode}.pt")
  assert export.main(["--workdir", workdir, "--output", out]) == 0

  ckpt = torch.load(out, map_location="cpu", weights_only=True)
  fixture = _fixture_state_dicts()
  for key in ("encoder", "predictor", "target_encoder"):
    assert {n: tuple(t.shape) for n, t in ckpt[key].items()} == fixture[key], key
    assert all(t.dtype == torch.float32 for t in ckpt[key].values())

  encoder, predictor = ckpt_lib.load_models(workdir, merge=True)
  kw = fx.load_kwargs()
  back = official.convert_checkpoint(ckpt, kw["encoder_num_heads"], kw["predictor_num_heads"],
                                     img)
  base = pretrained.load_converted(converted)
  for kind, module in (("encoder", encoder), ("predictor", predictor)):
    trained = pretrained.flat_params(module)
    assert set(back[kind][1]) == set(trained)
    for path, value in trained.items():
      np.testing.assert_allclose(back[kind][1][path], np.asarray(value), rtol=0, atol=1e-6,
                                 err_msg=f"{kind} {path}")
  # The predictor trained (otherwise the comparison above would prove nothing about merging).
  moved = max(float(np.max(np.abs(np.asarray(v) - np.asarray(
      pretrained.flat_params(base["predictor"])[p])))) for p, v in
      pretrained.flat_params(predictor).items())
  assert moved > 1e-6
  # The encoder is frozen: exported unchanged, and both copies are identical.
  for name, t in ckpt["encoder"].items():
    assert torch.equal(t, ckpt["target_encoder"][name])


def test_export_of_a_missing_run_fails_clearly(tmp_path, capsys):
  assert export.main(["--workdir", str(tmp_path / "nothing"), "--output",
                      str(tmp_path / "x.pt")]) == 2
  assert "run.json" in capsys.readouterr().err
  assert not (tmp_path / "x.pt").exists()


def test_unknown_parameter_path_is_rejected():
  with pytest.raises(ValueError, match="no official counterpart"):
    export.to_state_dict({("blocks", 0, "attn", "qkv", "lora_a"): np.zeros((2, 2))})
