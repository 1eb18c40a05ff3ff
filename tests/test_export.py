"""Export round trip: official checkpoint -> convert -> train 2 steps (full and LoRA) -> export ->
convert again. Proves the exported file has exactly the official key set, tensor shapes and
layout (those of the official fixture checkpoint), and that converting it back reproduces the
trained (LoRA-merged) predictor and the encoder. Also the official from-scratch recipe at tiny
scale: a pre-training checkpoint (`target_encoder` only) converts, trains a new predictor,
resumes and exports."""
import functools

import numpy as np
import pytest
import torch

import train_tiny
import vjepa2_tiny as fx
from vjepa_jax import models
from vjepa_jax.data import synthetic
from vjepa_jax.models import params
from vjepa_jax.models import pretrained
from vjepa_jax.train import trainer
from weights_conversion import convert
from weights_conversion import export


@functools.lru_cache(None)
def _fixture_state_dicts():
  ckpt = torch.load(fx.CHECKPOINT, map_location="cpu", weights_only=True)
  return {k: {n: tuple(t.shape) for n, t in ckpt[k].items()}
          for k in ("encoder", "predictor", "target_encoder")}


def _convert(checkpoint, out) -> str:
  kw = fx.load_kwargs()
  assert convert.main(["--checkpoint", str(checkpoint), "--output", str(out),
                       "--encoder-num-heads", str(kw["encoder_num_heads"]),
                       "--predictor-num-heads", str(kw["predictor_num_heads"]),
                       "--img-size", str(kw["img_size"])]) == 0
  return str(out)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("export")
  converted = _convert(fx.CHECKPOINT, root / "converted")
  data = root / "droid" / "1.0.0"
  synthetic.main(["--out", str(data), "--episodes", "6", "--steps", "30", "40",
                  "--image-size", "48x64", "--seed", "5"])
  return root, converted, str(data)


@pytest.fixture(scope="module")
def pretrain(inputs):
  """A pre-training checkpoint (`target_encoder` only, the fixture's tensors), converted."""
  root = inputs[0]
  full = torch.load(fx.CHECKPOINT, map_location="cpu", weights_only=True)
  path = root / "pretrain.pt"
  torch.save({"target_encoder": full["target_encoder"], "epoch": 1}, path)
  return full["target_encoder"], _convert(path, root / "pretrain_converted")


def _fixture_config(data, steps=2, **overrides):
  """The tiny trainer config with the fixture model's architecture."""
  m = fx.meta()
  e, p = m["encoder"], m["predictor"]
  cfg = train_tiny.tiny_config(data, steps=steps, **overrides)
  cfg.model.encoder.update(embed_dim=e["embed_dim"], depth=e["depth"], num_heads=e["num_heads"],
                           mlp_hidden=e["mlp_hidden"], patch_size=e["patch_size"],
                           tubelet_size=e["tubelet_size"])
  cfg.model.predictor.update(predictor_embed_dim=p["predictor_embed_dim"], depth=p["depth"],
                             num_heads=p["num_heads"], mlp_hidden=p["mlp_hidden"],
                             img_size=fx.load_kwargs()["img_size"])
  cfg.checkpoint.every = 1
  return cfg


@pytest.mark.parametrize("mode", [pytest.param("full", marks=pytest.mark.slow), "lora"])
def test_export_round_trip(inputs, mode):
  root, converted, data = inputs
  workdir = str(root / f"run_{mode}")
  trainer.train(_fixture_config(data, mode=mode, **{"init.converted": converted,
                                                    "init.predictor": "converted"}), workdir)
  out = str(root / f"model_{mode}.pt")
  assert export.main(["--workdir", workdir, "--output", out]) == 0

  ckpt = torch.load(out, map_location="cpu", weights_only=True)
  fixture = _fixture_state_dicts()
  for key in ("encoder", "predictor", "target_encoder"):
    assert {n: tuple(t.shape) for n, t in ckpt[key].items()} == fixture[key], key
    assert all(t.dtype == torch.float32 for t in ckpt[key].values())

  encoder, predictor = models.load(workdir, merge_lora=True)
  kw = fx.load_kwargs()
  back = params.convert_checkpoint(ckpt, kw["encoder_num_heads"], kw["predictor_num_heads"],
                                   kw["img_size"])
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


def test_pretraining_checkpoint_trains_a_new_predictor_resumes_and_exports(inputs, pretrain,
                                                                          capsys):
  """init.predictor="random" on a converted pre-training file (the official recipe)."""
  root, _, data = inputs
  target_encoder, converted = pretrain
  assert set(pretrained.read_architecture(converted)["models"]) == {"encoder"}
  workdir = str(root / "scratch")
  cfg = _fixture_config(data, steps=2, **{"init.converted": converted})
  assert cfg.init.predictor == "random"
  trainer.train(cfg, workdir)
  trainer.train(_fixture_config(data, steps=4, **{"init.converted": converted}), workdir)
  assert "resumed from step 2" in capsys.readouterr().out
  out = str(root / "scratch.pt")
  assert export.main(["--workdir", workdir, "--output", out]) == 0
  assert "LoRA merged" not in capsys.readouterr().out
  ckpt = torch.load(out, map_location="cpu", weights_only=True)
  assert {n: tuple(t.shape) for n, t in ckpt["predictor"].items()} == (
      _fixture_state_dicts()["predictor"])
  # The encoder is the pre-training file's target encoder, untouched.
  for name, t in target_encoder.items():
    assert torch.equal(ckpt["encoder"][name], t), name


def test_converted_predictor_must_exist_and_match(inputs, pretrain):
  root, converted, data = inputs
  cfg = _fixture_config(data, **{"init.converted": pretrain[1], "init.predictor": "converted"})
  with pytest.raises(trainer.RefusedRun, match="holds no AC predictor"):
    trainer.converted_architecture(cfg)
  cfg = _fixture_config(data, **{"init.converted": converted, "init.predictor": "converted"})
  cfg.model.predictor.depth = 5
  with pytest.raises(trainer.RefusedRun, match="model.predictor.depth is 5"):
    trainer.converted_architecture(cfg)


def test_export_of_a_missing_run_fails_clearly(tmp_path, capsys):
  assert export.main(["--workdir", str(tmp_path / "nothing"), "--output",
                      str(tmp_path / "x.pt")]) == 2
  assert "does not exist" in capsys.readouterr().err
  assert not (tmp_path / "x.pt").exists()


def test_unknown_parameter_path_is_rejected():
  with pytest.raises(ValueError, match="no official counterpart"):
    params.to_state_dict("encoder", {("blocks", 0, "attn", "qkv", "lora_a"): np.zeros((2, 2))})
